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
