"""The doors: hub_conf.create_network, mindspore_hub_conf.py as the hub client uses it,
and network_expansion.load."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from conftest import REPO, TINY, reference_names

import network_expansion
from network_expansion import ConfigError, UnknownModelError, create_network, model_card

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", ["NetworkExpansion", "networkexpansion", "NETWORKEXPANSION",
                                  "noahsark/NetworkExpansion", "noahsark/networkexpansion",
                                  "noahsark/gpu/1.8/networkexpansion_v1.0_imagenet2012"])
def test_create_network_accepts_the_card_name_in_any_case_and_the_aliases(name):
    network = create_network(name, **TINY)
    assert network.config.depth == 2


def test_keyword_arguments_override_config_fields():
    network = create_network("networkexpansion", **{**TINY, "num_classes": 7, "image_size": 48,
                                                    "drop_path_rate": 0.1, "depth": 3})
    c = network.config
    assert (c.num_classes, c.image_size, c.drop_path_rate, c.depth) == (7, 48, 0.1, 3)
    assert network.parameter_shapes()["pos_embedding"] == (1, 37, 32)  # (48/8)^2 + 1
    assert network(ms.Tensor(np.zeros((1, 3, 48, 48), np.float32))).shape == (1, 7)


def test_unknown_name_is_rejected_with_the_accepted_names():
    with pytest.raises(UnknownModelError, match="unknown model name 'resnet50'.*'NetworkExpansion'.*"
                                                "'noahsark/NetworkExpansion'"):
        create_network("resnet50")


def test_unknown_keyword_is_rejected_with_the_config_fields():
    with pytest.raises(ConfigError, match=r"unknown keyword\(s\) classes.*num_classes.*drop_path_rate"):
        create_network("NetworkExpansion", classes=10)


def test_positional_arguments_are_rejected_with_advice():
    with pytest.raises(ConfigError, match="pass configuration as keywords"):
        create_network("NetworkExpansion", 10)


def test_load_gives_the_released_weights_by_default_as_the_hub_client_does(released_like_checkpoint, released_in_cache,
                                                                          monkeypatch):
    """`mindspore_hub.load` defaults to the trained weights; so does the package's `load`
    (here the released file's names and shapes, placed in the cache as a download would be),
    which also accepts the short alias. `pretrained=False` is random weights."""
    from network_expansion.formats import read_ckpt

    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(released_in_cache))
    network = network_expansion.load("noahsark/NetworkExpansion")
    released, _ = read_ckpt(released_like_checkpoint, only={"cls", "head.0.bias"})
    assert np.array_equal(network.cls.asnumpy(), released["cls"])
    assert np.array_equal(network.head[0].bias.asnumpy(), released["head.0.bias"])
    random = network_expansion.load("noahsark/NetworkExpansion", pretrained=False, **TINY)
    assert isinstance(random, network_expansion.VisionTransformer) and random.config.width == TINY["width"]


def test_hub_conf_and_its_alias_export_the_same_create_network():
    for file_name in ("hub_conf.py", "mindspore_hub_conf.py"):
        source = (REPO / file_name).read_text()
        assert "create_network" in source
    out = subprocess.run([sys.executable, "-c",
                          "import hub_conf, mindspore_hub_conf; "
                          "print(hub_conf.create_network is mindspore_hub_conf.create_network)"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def _downloaded_package(tmp_path) -> Path:
    """The folder as the hub client gets it: named after repo-link's last part, not installed."""
    folder = tmp_path / model_card().package_folder
    folder.mkdir()
    for name in ("hub_conf.py", "mindspore_hub_conf.py"):
        shutil.copy(REPO / name, folder / name)
    for name in ("src", "assets"):
        shutil.copytree(REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return folder


def _run_hub_client(folder, *extra):
    card = folder / "assets" / f"{model_card().uid}.md"
    out = subprocess.run([sys.executable, str(HERE / "hub_client.py"), str(card), str(folder), *extra],
                         capture_output=True, text=True, timeout=600, cwd=folder)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_hub_client_imports_the_downloaded_folder_and_runs_the_full_network(tmp_path):
    folder = _downloaded_package(tmp_path)
    result = _run_hub_client(folder)
    assert result["class"] == "VisionTransformer"
    assert result["output_shape"] == [1, 1001]
    # The code that ran is the downloaded copy, not an installed package.
    assert result["network_file"].startswith(str(folder))


@pytest.mark.slow
def test_hub_client_non_strict_load_fills_every_parameter_of_a_reference_named_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    checkpoint = tmp_path / "released.ckpt"
    ms.save_checkpoint([{"name": name, "data": ms.Tensor(rng.standard_normal(shape).astype(np.float32))}
                        for name, shape in reference_names()], str(checkpoint))
    result = _run_hub_client(_downloaded_package(tmp_path), str(checkpoint))
    assert result["not_loaded"] == []
