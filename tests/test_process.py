"""What the package does to the process of the Python user who imports it: no floods of
warnings from the package's own calls. Each case runs in a fresh interpreter, as a script or
a notebook would."""

import subprocess
import sys

import pytest

from conftest import tiny_shapes, random_state, write_ckpt

pytestmark = pytest.mark.slow  # fresh interpreters or whole jobs: the README's test command runs them

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


# A library user's session with a network large enough that the command line would fuse and
# bind: a ViT-B-sized Classifier predicting, a Trainer stepping; then what changed.
UNTOUCHED = """
import json, os
from pathlib import Path
Path("dsa_transfrom.log").write_text("the user's own file")
def threads():
    return {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
before, cores = dict(os.environ), sorted(os.sched_getaffinity(0))
import numpy as np
import network_expansion as ne
import mindspore as ms
from mindspore import ops

network = ne.create_network(depth=1, width=384, num_heads=6, mlp_width=768, num_classes=3)
print(ne.Classifier(network, batch_size=2).predict(np.zeros((60, 80, 3), np.uint8), topk=1))
x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
trainer = ne.Trainer(network, ne.ArrayData(x, np.array([0, 1, 2, 0]), 4), config=ne.TrainConfig(epochs=1,
                     warmup_epochs=0), progress=False)
trainer.fit()
pipeline_async = ops.add(ms.Tensor(1.0), ms.Tensor(2.0))  # the user's own PyNative code afterwards
print(json.dumps({"changed": sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k)),
                  "rebound": {t: c for t, c in threads().items() if c != cores},
                  "forms": [b.form for b in network.blocks],
                  "log": Path("dsa_transfrom.log").read_text()}))
"""


def test_nothing_process_wide_changes_unless_asked(tmp_path):
    """Importing the package, a Classifier of a ViT-B-sized network predicting and a Trainer
    stepping set or delete no environment variable, pin no thread to a core, delete no file
    of the user's and leave the caller's network in its plain forms: tuning the process is
    `tune_cpu()`'s, and only when called."""
    import json

    result = subprocess.run([sys.executable, "-c", UNTOUCHED], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={k: v for k, v in __import__("os").environ.items()
                                              if k != "OMP_WAIT_POLICY"})
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.splitlines()[-1])
    assert state == {"changed": [], "rebound": {}, "forms": [None], "log": "the user's own file"}, state
