"""docs/finetune.ipynb runs end to end (on a tiny model, as papermill would parameterise it)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

from network_expansion import VisionTransformer, ViTConfig, save_weights

pytestmark = pytest.mark.slow  # fresh interpreters or whole jobs: the README's test command runs them


def test_the_finetune_notebook_runs_end_to_end(tmp_path):
    weights = save_weights(VisionTransformer(ViTConfig(image_size=32, patch_size=8, width=32, depth=2, num_heads=4,
                                                       mlp_width=64, num_classes=1000)), tmp_path / "tiny.ckpt")
    notebook = json.loads((REPO / "docs" / "finetune.ipynb").read_text())
    cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"]["tags"]
    overrides = (f"WEIGHTS = {str(weights)!r}\nMODEL_OVERRIDES = {{'num_heads': 4}}\nTRAIN_IMAGES = 32\n"
                 f"EPOCHS = 1\nBATCH_SIZE = 8\nOUTPUT = {str(tmp_path / 'run')!r}\n")
    sources = ["".join(cells[0]["source"]), overrides] + ["".join(c["source"]) for c in cells[1:]]
    script = tmp_path / "notebook.py"
    script.write_text("\n\n".join(sources))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "epoch 1: loss" in out.stdout and "predicted:" in out.stdout and "reloaded 10 classes" in out.stdout
    assert "plot:" in out.stdout and (tmp_path / "run" / "plot.png").is_file()
