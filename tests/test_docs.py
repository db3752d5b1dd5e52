"""README, card, setup.cfg, .ci/run and code say the same things."""

import configparser
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

from network_expansion import model_card


def _readme():
    return (REPO / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command_exactly():
    commands = re.findall(r"```bash\n(.*?)\n```", _readme(), flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (REPO / ".ci" / "run").read_text().splitlines()


def test_readme_names_the_cards_uid_alias_and_path():
    card, readme = model_card(), _readme()
    assert card.uid in readme and card.short_alias in readme
    assert f"assets/{card.uid}.md" in readme


def test_setup_cfg_declares_the_mindspore_range_and_numpy_the_readme_promises():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requires = config["options"]["install_requires"]
    assert "mindspore>=2.7.0,<2.11" in requires and "numpy>=1.26,<2" in requires
    assert "MindSpore 2.7.0 to 2.10.0" in _readme() and "NumPy is held below 2" in _readme()
    assert "bash .ci/oldest-mindspore" in _readme() and (REPO / ".ci" / "oldest-mindspore").is_file()
    assert "network-expansion = network_expansion.cli:run" in config["options.entry_points"]["console_scripts"]


# -- every README block runs as written --------------------------------------------------

SKIP_MARKERS = ("*not standalone:*", "*not run by the tests:*")


# the pages whose blocks run, in this order, in one folder: the README, then the guide
PAGES = ("README.md", "docs/guide.md")


def readme_blocks() -> list:
    """(language, code, marked) of every fenced block of the README and then the guide, in
    order; `marked`: the paragraph right before it says plainly that the block is not
    standalone (or not run by the tests)."""
    blocks = []
    for page in PAGES:
        text = (REPO / page).read_text(encoding="utf-8")
        for match in re.finditer(r"```(\w+)\n(.*?)\n```", text, flags=re.S):
            before = text[:match.start()].rstrip().rsplit("\n\n", 1)[-1].lower()
            blocks.append((match.group(1), match.group(2), any(m in before for m in SKIP_MARKERS)))
    return blocks


def test_the_readme_is_a_short_path_and_the_docs_pages_answer_on_their_first_screen():
    """The README stays a user's path (about 250 lines); the current pages say what holds now
    before any history (their first 40 lines hold the answer), and the record is kept."""
    assert len(_readme().splitlines()) <= 260
    first = {name: "\n".join((REPO / "docs" / name).read_text().splitlines()[:40])
             for name in ("performance.md", "expansion.md", "choosing-a-schedule.md")}
    assert "against timm" in first["performance.md"] and "0.86x to 0.93x" in first["performance.md"]
    assert "What a growth costs" in (REPO / "docs" / "expansion.md").read_text() and "1.21x" in first["expansion.md"]
    assert "`4,8,12`" in first["choosing-a-schedule.md"]
    assert (REPO / "docs" / "log" / "performance.md").is_file() and (REPO / "docs" / "log" / "expansion.md").is_file()


def test_the_readme_marks_only_a_few_blocks_as_not_run():
    blocks = readme_blocks()
    assert {language for language, _, _ in blocks} <= {"bash", "python", "bibtex"}
    marked = [code.splitlines()[0] for language, code, marked in blocks if marked]
    assert len(marked) == 6, marked   # the two setup commands, ImageNet on 8 GPUs, msrun-only Python, the hub client, timm
    assert sum(not marked for language, _, marked in blocks if language != "bibtex") >= 14


def _picture_folders(root, classes, per_class, size=40, seed=0):
    """ImageFolder tree: class c's pictures are dominated by colour channel c."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 80, (size, size, 3))
            image[..., c % 3] = rng.integers(150, 256, (size, size))
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory, released_like_checkpoint, released_in_cache):
    """A folder like a user's: this clone's .venv and assets, real photos (scikit-image),
    an ImageFolder tree, ImageNet's flat val layout, and the released checkpoint's names and
    shapes in the cache where the download would put it."""
    from PIL import Image
    from skimage import data

    import network_expansion as ne
    from conftest import tiny_config

    folder = tmp_path_factory.mktemp("readme")
    (folder / ".venv").symlink_to(sys.prefix)
    assert (folder / ".venv" / "bin" / "network-expansion").is_file(), "the tests run in the README's venv"
    (folder / "assets").symlink_to(REPO / "assets")
    Image.fromarray(data.chelsea()).save(folder / "cat.jpg")
    Image.fromarray(data.coffee()).save(folder / "a.jpg")
    Image.fromarray(data.astronaut()).save(folder / "b.png")
    (folder / "photos").mkdir()
    Image.fromarray(data.rocket()).save(folder / "photos" / "rocket.jpg")
    Image.fromarray(data.chelsea()[::2, ::2]).save(folder / "photos" / "small_cat.png")
    for name in ("vit.ckpt", "other.ckpt"):
        (folder / name).symlink_to(released_like_checkpoint)
    ne.save_weights(ne.VisionTransformer(tiny_config(num_heads=4)), folder / "deit_base_patch16_224.safetensors",
                    names="timm")
    _picture_folders(folder / "train", ("fire", "grass", "sky"), 16)
    _picture_folders(folder / "val", ("fire", "grass", "sky"), 4, seed=1)
    flat = folder / "imagenet" / "val_flat"
    flat.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for i, (wnid, picture) in enumerate([("n02123045", data.chelsea()), ("n02123045", data.chelsea()[:, ::-1]),
                                         ("n07920052", data.coffee()), ("n07920052", data.coffee()[::-1])]):
        Image.fromarray(np.ascontiguousarray(picture)).save(flat / f"ILSVRC2012_val_{i:08d}.JPEG", format="JPEG")
        rows.append(f"ILSVRC2012_val_{i:08d},{wnid} 10 10 100 100")
    (folder / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    return folder, released_in_cache


@pytest.mark.slow
def test_every_readme_block_runs_as_written(readme_folder):
    folder, cache = readme_folder
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETWORK_EXPANSION_")}
    env["NETWORK_EXPANSION_CACHE"] = str(cache)
    outputs = []
    for number, (language, code, marked) in enumerate(readme_blocks(), 1):
        if marked or language == "bibtex":
            continue
        command = ["bash", "-e", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (f"README block {number} ({language}) failed:\n{code}\n--- stdout\n"
                                        f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
        outputs.append(result.stdout)
    text = "\n".join(outputs)
    assert "parameters      86,568,425" in text                            # info
    assert (folder / "imagenet" / "val" / "n02123045").is_dir()              # the val folder was sorted
    assert "top-1" in text and (folder / "per_class.csv").is_file()          # evaluate
    assert "grew 2 -> 4 blocks" in text and "epoch 8/8" in text              # train, then resume to 8 epochs
    assert any(label in text for label in ("fire (0)", "grass (1)", "sky (2)"))  # class names survived
    assert (folder / "runs" / "ddp" / "model.ckpt").is_file()                # msrun, two workers
    assert "VisionTransformer 1001" in text and "4 ['b0', 'e0', 'b1', 'e1']" in text  # mindcv, Model callback
    for name in ("model.mindir", "model.json", "model_raw.mindir", "model.onnx", "deit_base_again.safetensors",
                 "runs/mine/model_ema.ckpt", "vit-timm/config.json", "runs/from-config/config.yaml",
                 "runs/from-config/plot.png", "runs/both.png"):
        assert (folder / name).is_file(), name
