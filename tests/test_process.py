"""What the package does to the process of the Python user who imports it: no floods of
warnings from the package's own calls. Each case runs in a fresh interpreter, as a script or
a notebook would."""

import subprocess
import sys

import pytest

from conftest import tiny_shapes, random_state, write_ckpt

# A notebook's first cells: weights loaded three ways, predictions at two batch sizes, a
# training run with a growth (which compiles its graphs again), and the evaluation.
USER_SESSION = """
import numpy as np
import network_expansion as ne

net = ne.create_network("NetworkExpansion", pretrained="tiny.ckpt", num_heads=4)
net = ne.create_network("NetworkExpansion", pretrained="tiny.ckpt", num_heads=4, num_classes=3)
print(ne.load_pretrained(net, "tiny.ckpt", head="keep"))
for batch_size in (2, 3):
    print(ne.Classifier(net, batch_size=batch_size).predict(np.zeros((40, 50, 3), np.uint8), topk=1))
rng = np.random.default_rng(0)
x, y = rng.standard_normal((32, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, 32)
model = ne.create_network("NetworkExpansion", depth=1, width=32, num_heads=4, mlp_width=64, image_size=32,
                          patch_size=8, num_classes=10)
trainer = ne.Trainer(model, ne.ArrayData(x, y, 16), ne.ArrayData(x, y, 32, shuffle=False),
                     ne.TrainConfig(epochs=2, schedule="1,2", warmup_epochs=1, ema_decay=0.9), progress=False)
print(trainer.fit().final)
"""


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    write_ckpt(folder / "tiny.ckpt", random_state(tiny_shapes()))
    return folder


def test_a_users_session_prints_no_warnings(user_folder):
    """Loading weights once called MindSpore's deprecated `dtype_to_nptype` for every
    parameter (796 warning lines for one README block), every new graph warned that a
    function 'has been compiled again', and a deprecated module was imported."""
    result = subprocess.run([sys.executable, "-c", USER_SESSION], cwd=user_folder, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded" in result.stdout and "val_top1" in result.stdout  # it ran
    noise = [line for line in result.stderr.splitlines() if "WARN" in line.upper() or "deprecat" in line.lower()]
    assert not noise, "\n".join(noise[:20])
