"""The conventions of mindcv and timm: mindcv's registry and checkpoints, timm's
pretrained_cfg and model folders, the head count in a ModelCheckpoint file."""

import json
import os

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from conftest import tiny_config, write_ckpt
from mindspore import nn

from network_expansion import VisionTransformer, ViTConfig, create_network, save_weights
from network_expansion.weights import mindspore_to_timm, network_state, read_weights


@pytest.fixture()
def network(tiny):
    return tiny  # conftest's tiny ViT (seed 0, eval mode)


def _images(n=2, size=32):
    return ms.Tensor(np.random.default_rng(3).standard_normal((n, 3, size, size)).astype(np.float32))


def test_a_mindcv_named_checkpoint_loads_with_mindcvs_gelu_and_epsilon(network, tmp_path):
    """mindcv's ViT names are timm's but for the LayerNorms' gamma/beta; its nn.GELU() is the
    tanh form and nn.LayerNorm's epsilon 1e-7: recorded, not assumed from timm (exact GELU, 1e-6)."""
    timm_names = mindspore_to_timm(network_state(network))
    mindcv_names = {name.replace(".weight", ".gamma").replace(".bias", ".beta")
                    if ("norm" in name and not name.startswith("patch")) else name: value
                    for name, value in timm_names.items()}
    assert "blocks.0.norm1.gamma" in mindcv_names and "norm.beta" in mindcv_names
    path = write_ckpt(tmp_path / "mindcv.ckpt", mindcv_names)
    weights = read_weights(path)
    assert weights.scheme == "mindcv"
    assert weights.architecture == {"gelu_approximate": True, "layer_norm_eps": 1e-7}
    back = create_network("NetworkExpansion", pretrained=path, num_heads=4)
    back.set_train(False)
    np.testing.assert_array_equal(back(_images()).asnumpy(), network(_images()).asnumpy())


def test_a_checkpoint_of_mindcvs_own_vit_gives_its_outputs(tmp_path):
    mindcv_vit = pytest.importorskip("mindcv.models.vit")
    ms.set_seed(0)
    theirs = mindcv_vit.VisionTransformer(image_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                                          mlp_ratio=2.0, num_classes=10)
    theirs.set_train(False)
    rng = np.random.default_rng(0)
    for p in theirs.get_parameters():  # away from their initialisation: every tensor matters
        p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32) * 0.1
                             + (1.0 if p.name.endswith("gamma") else 0.0)))
    ms.save_checkpoint(theirs, str(tmp_path / "vit.ckpt"))
    ours = create_network("NetworkExpansion", pretrained=tmp_path / "vit.ckpt", num_heads=4)
    ours.set_train(False)
    np.testing.assert_allclose(ours(_images()).asnumpy(), theirs(_images()).asnumpy(), atol=2e-6)


def test_mindcv_create_model_builds_the_packages_network():
    mindcv = pytest.importorskip("mindcv")
    import network_expansion.mindcv_models  # noqa: F401  (registers the model)

    assert "networkexpansion_vit_b_16_224" in mindcv.list_models()
    net = mindcv.create_model("networkexpansion_vit_b_16_224", num_classes=10, **{
        k: v for k, v in tiny_config().__dict__.items() if k in ("image_size", "patch_size", "width", "depth",
                                                                 "num_heads", "mlp_width")})
    assert isinstance(net, VisionTransformer) and net.config.num_classes == 10 and net.depth == 2


def test_the_model_carries_timms_pretrained_cfg():
    cfg = VisionTransformer(ViTConfig(depth=1)).pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == 0.875 and cfg["crop_mode"] == "center"


def test_timm_named_weights_as_model_safetensors_make_a_folder_timm_loads(network, tmp_path, capsys):
    """`model.safetensors` with timm names gets timm's config.json beside it: the architecture
    (model_args, the GELU form) and the pretrained_cfg timm resolves its transform from. The
    command converts the same way. timm itself runs where it is installed (not in the test
    extras: it needs torch; the test below)."""
    from network_expansion.cli import main

    path = save_weights(network, tmp_path / "vit" / "model.safetensors", names="timm")
    config = json.loads((path.parent / "config.json").read_text())
    assert config["architecture"] == "vit_base_patch16_224" and config["num_classes"] == 10
    assert config["model_args"] == {"img_size": 32, "patch_size": 8, "in_chans": 3, "embed_dim": 32, "depth": 2,
                                    "num_heads": 4, "mlp_ratio": 2.0, "qkv_bias": True, "num_classes": 10,
                                    "act_layer": "gelu_tanh"}
    assert config["pretrained_cfg"]["interpolation"] == "bilinear" and config["pretrained_cfg"]["crop_pct"] == 0.8
    assert config["network_expansion"] == {"layer_norm_eps": 1e-7}
    save_weights(network, tmp_path / "other.safetensors", names="timm")
    assert not (tmp_path / "config.json").exists()  # only the folder convention's file name writes one
    ckpt = save_weights(network, tmp_path / "tiny.ckpt")
    assert main(["convert", str(ckpt), str(tmp_path / "converted" / "model.safetensors")]) == 0
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["model_args"]["num_heads"] == 4


def test_timm_loads_the_folder_and_resolves_the_models_transform(network, tmp_path):
    timm = pytest.importorskip("timm")  # where it is installed (it needs torch)
    path = save_weights(network, tmp_path / "vit" / "model.safetensors", names="timm")
    model = timm.create_model(f"local-dir:{path.parent}", pretrained=True)
    cfg = timm.data.resolve_data_config(model=model)
    assert (cfg["interpolation"], cfg["crop_pct"], cfg["mean"]) == ("bilinear", 0.8, (0.485, 0.456, 0.406))


def test_a_model_checkpoint_made_with_checkpoint_config_rebuilds_its_heads(tmp_path):
    """A ModelCheckpoint file holds tensors only: 4 heads of width 48 would load silently into 12
    (48 is a multiple of 12). `checkpoint_config` records what `save_weights` records."""
    from mindspore.train import Model, ModelCheckpoint

    from network_expansion.callbacks import checkpoint_config

    ms.set_seed(0)
    net = VisionTransformer(ViTConfig(image_size=16, patch_size=4, width=48, depth=1, num_heads=4, mlp_width=32,
                                      num_classes=3))
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    data = ds.NumpySlicesDataset((x, np.arange(8).astype(np.int32) % 3), ["x", "y"], shuffle=False).batch(4)
    model = Model(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"), nn.Adam(net.trainable_params()))
    model.train(1, data, callbacks=[ModelCheckpoint("vit", str(tmp_path), checkpoint_config(net,
                                                                                          save_checkpoint_steps=2))])
    (last,) = sorted(p for p in os.listdir(tmp_path) if p.endswith(".ckpt"))[-1:]
    back = create_network("NetworkExpansion", pretrained=tmp_path / last)
    net.set_train(False)
    back.set_train(False)
    assert back.config.num_heads == 4
    np.testing.assert_array_equal(back(ms.Tensor(x)).asnumpy(), net(ms.Tensor(x)).asnumpy())


def test_mindcvs_default_1000_classes_keep_the_released_heads_trained_outputs(released_in_cache, monkeypatch):
    """mindcv passes num_classes=1000 by default: with the released weights that must not be a
    new random head, but the released head's 1000 ImageNet outputs (its output 1000 is unused)."""
    mindcv = pytest.importorskip("mindcv")
    import network_expansion.mindcv_models  # noqa: F401

    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(released_in_cache))
    full = create_network("NetworkExpansion", pretrained=True)
    trimmed = mindcv.create_model("networkexpansion_vit_b_16_224", pretrained=True)
    assert full.config.num_classes == 1001 and trimmed.config.num_classes == 1000
    x = _images(1, 224)
    full.set_train(False)
    trimmed.set_train(False)
    np.testing.assert_allclose(trimmed(x).asnumpy(), full(x).asnumpy()[:, :1000], rtol=1e-5, atol=1e-6)
