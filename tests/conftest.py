"""Shared fixtures. Building a ViT-B and compiling graphs costs seconds: share them."""

from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from network_expansion import VisionTransformer, ViTConfig

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

TINY = dict(image_size=32, patch_size=8, width=32, depth=2, num_heads=4, mlp_width=64, num_classes=10)


def tiny_config(**overrides) -> ViTConfig:
    return ViTConfig(**{**TINY, **overrides})


def parameters_of(network) -> dict:
    return {p.name: p.asnumpy().copy() for p in network.get_parameters()}


def reference_names() -> list:
    """(name, shape) of the released checkpoint, as the model zoo's code produces them."""
    rows = []
    for line in (DATA / "released-checkpoint-names.txt").read_text().splitlines():
        name, shape = line.split(" ", 1)
        rows.append((name, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


@pytest.fixture(scope="session")
def vit_b():
    """The full ViT-B/16 with the card's 1001 classes (random weights), built once."""
    ms.set_seed(0)
    network = VisionTransformer()
    network.set_train(False)
    return network


@pytest.fixture()
def tiny():
    ms.set_seed(0)
    network = VisionTransformer(tiny_config())
    network.set_train(False)
    return network


@pytest.fixture()
def tiny_images():
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


def random_state(shapes, seed=0, scale=0.02) -> dict:
    """`{name: float32 array}` of the given shapes, small random values."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape in shapes}


def write_ckpt(path, state) -> Path:
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v)} for n, v in state.items()], str(path))
    return Path(path)


@pytest.fixture(scope="session")
def released_like_checkpoint(tmp_path_factory):
    """A file with the released checkpoint's exact names and shapes (1001 classes, random
    values, 346 MB), under the released file name, written once."""
    from network_expansion import model_card

    path = tmp_path_factory.mktemp("released") / model_card().checkpoint.file_name
    return write_ckpt(path, random_state(reference_names(), seed=7))


def tiny_shapes(depth=2, num_classes=10):
    """Checkpoint (name, shape) pairs of `tiny_config`, by building it."""
    return list(VisionTransformer(tiny_config(depth=depth, num_classes=num_classes)).parameter_shapes().items())
