"""Loading the released checkpoint exactly, refusing what does not fit, timm import/export."""

import json
import shutil
import struct

import mindspore as ms
import numpy as np
import pytest
from conftest import parameters_of, random_state, reference_names, tiny_config, tiny_shapes, write_ckpt
from http_server import FileServer

import numpy_vit
from network_expansion import VisionTransformer, create_network, model_card
from network_expansion.cli import main
from network_expansion.errors import CheckpointError
from network_expansion.weights import (load_pretrained, mindspore_to_timm, read_weights, save_weights,
                                       timm_to_mindspore)

TIMM_TINY = dict(num_heads=4)


# -- the released checkpoint ----------------------------------------------------------

def test_the_released_checkpoint_fills_every_parameter_of_the_full_network(released_like_checkpoint):
    network = create_network("NetworkExpansion", pretrained=str(released_like_checkpoint))
    expected = random_state(reference_names(), seed=7)
    got = parameters_of(network)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_pretrained_true_uses_a_file_placed_in_the_cache_by_hand(released_like_checkpoint, tmp_path, monkeypatch):
    # The offline route the download error advises: put the file where it says, in the cache folder.
    from network_expansion.download import cache_path

    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(tmp_path))
    placed = cache_path(model_card().checkpoint.link)
    placed.parent.mkdir(parents=True)
    shutil.copy(released_like_checkpoint, placed)
    network = create_network("networkexpansion", pretrained=True)
    assert network.config.num_classes == 1001
    np.testing.assert_array_equal(network.cls.asnumpy(), random_state(reference_names()[:1], seed=7)["cls"])


def test_pretrained_url_is_downloaded_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NETWORK_EXPANSION_CACHE", str(tmp_path / "cache"))
    state = random_state(tiny_shapes(), seed=3)
    write_ckpt(tmp_path / "tiny.ckpt", state)
    with FileServer() as server:
        server.files["/tiny.ckpt"] = (tmp_path / "tiny.ckpt").read_bytes()
        network = create_network("NetworkExpansion", pretrained=server.url("/tiny.ckpt"), **TIMM_TINY)
    assert [p.name for p in (tmp_path / "cache").rglob("*.ckpt")] == ["tiny.ckpt"]
    np.testing.assert_array_equal(network.pos_embedding.asnumpy(), state["pos_embedding"])
    assert (network.config.width, network.config.depth, network.config.image_size) == (32, 2, 32)


# -- checks ---------------------------------------------------------------------------

def test_optimizer_entries_in_a_training_checkpoint_are_ignored(tmp_path):
    state = random_state(tiny_shapes(), seed=1)
    extras = {"moments.cls": np.zeros((1, 1, 32), np.float32), "learning_rate": np.array(0.1, np.float32),
              "global_step": np.array([5], np.int32), "beta1_power": np.array(0.9, np.float32)}
    path = write_ckpt(tmp_path / "train.ckpt", {**state, **extras})
    network = VisionTransformer(tiny_config())
    report = load_pretrained(network, path)
    assert report.loaded == len(state) and sorted(report.ignored) == sorted(extras)


def test_every_problem_is_reported_by_name_and_the_network_is_left_unchanged(tmp_path):
    state = random_state(tiny_shapes(), seed=1)
    del state["body.layers.1.0.cell.1.to_k.bias"]                      # missing
    state["body.layers.1.0.cell.1.to_k.scale"] = np.ones(32, np.float32)  # unexpected
    state["norm.gamma"] = np.ones(31, np.float32)                       # misshaped
    state["body.layers.0.1.cell.1.ff1.dense.weight"][3, 4] = np.nan     # not finite
    path = write_ckpt(tmp_path / "bad.ckpt", state)
    network = VisionTransformer(tiny_config())
    before = parameters_of(network)
    with pytest.raises(CheckpointError) as caught:
        load_pretrained(network, path)
    assert sorted(caught.value.problems) == sorted([
        "missing: body.layers.1.0.cell.1.to_k.bias (32,)",
        "unexpected: body.layers.1.0.cell.1.to_k.scale (32,)",
        "wrong shape: norm.gamma is (31,) in the checkpoint, (32,) in the network",
        "not finite: body.layers.0.1.cell.1.ff1.dense.weight holds 1 NaN or infinite values",
    ])
    after = parameters_of(network)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_the_class_count_is_read_from_the_checkpoints_head(tmp_path):
    path = write_ckpt(tmp_path / "c1000.ckpt", random_state(tiny_shapes(num_classes=1000)))
    assert create_network("NetworkExpansion", pretrained=str(path), **TIMM_TINY).config.num_classes == 1000
    with pytest.raises(CheckpointError, match="1000 classes and the network 10.*head='keep'"):
        load_pretrained(VisionTransformer(tiny_config(num_classes=10)), path)


def test_head_keep_loads_the_backbone_and_keeps_the_networks_new_head(tmp_path):
    state = random_state(tiny_shapes(num_classes=1000))
    path = write_ckpt(tmp_path / "c1000.ckpt", state)
    network = create_network("NetworkExpansion", pretrained=str(path), num_classes=5, **TIMM_TINY)
    assert network.parameter_shapes()["head.0.weight"] == (5, 32)
    np.testing.assert_array_equal(network.norm.gamma.asnumpy(), state["norm.gamma"])


def test_a_larger_image_size_resamples_the_position_embedding(tmp_path):
    path = write_ckpt(tmp_path / "t.ckpt", random_state(tiny_shapes()))
    network = create_network("NetworkExpansion", pretrained=str(path), image_size=48, **TIMM_TINY)
    assert network.pos_embedding.shape == (1, 37, 32)
    assert network(ms.Tensor(np.zeros((1, 3, 48, 48), np.float32))).shape == (1, 10)


@pytest.mark.parametrize("content,problem", [
    (b"", "the file is empty"),
    (b"not a checkpoint" * 100, "not a well-formed MindSpore checkpoint"),
])
def test_a_damaged_checkpoint_file_raises_checkpoint_error(tmp_path, content, problem):
    (tmp_path / "x.ckpt").write_bytes(content)
    with pytest.raises(CheckpointError, match=problem):
        read_weights(tmp_path / "x.ckpt")


def test_a_wrong_path_or_format_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file.*\n.*Pass the path of a .ckpt"):
        read_weights(tmp_path / "missing.ckpt")
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown format '.pth'.*\n.*Expected one of .ckpt, .safetensors, .npz"):
        read_weights(tmp_path / "weights.pth")


# -- the PyTorch world ------------------------------------------------------------------

def timm_state(depth=2, width=32, heads=4, mlp=64, patch=8, image=32, classes=10, seed=5):
    """A timm/DeiT ViT state dict of random arrays, as timm's VisionTransformer names it."""
    rng = np.random.default_rng(seed)
    shapes = {"cls_token": (1, 1, width), "pos_embed": (1, (image // patch) ** 2 + 1, width),
              "patch_embed.proj.weight": (width, 3, patch, patch), "patch_embed.proj.bias": (width,),
              "norm.weight": (width,), "norm.bias": (width,), "head.weight": (classes, width), "head.bias": (classes,)}
    for i in range(depth):
        shapes.update({f"blocks.{i}.norm1.weight": (width,), f"blocks.{i}.norm1.bias": (width,),
                       f"blocks.{i}.attn.qkv.weight": (3 * width, width), f"blocks.{i}.attn.qkv.bias": (3 * width,),
                       f"blocks.{i}.attn.proj.weight": (width, width), f"blocks.{i}.attn.proj.bias": (width,),
                       f"blocks.{i}.norm2.weight": (width,), f"blocks.{i}.norm2.bias": (width,),
                       f"blocks.{i}.mlp.fc1.weight": (mlp, width), f"blocks.{i}.mlp.fc1.bias": (mlp,),
                       f"blocks.{i}.mlp.fc2.weight": (width, mlp), f"blocks.{i}.mlp.fc2.bias": (width,)})
    return {n: (rng.standard_normal(s) / np.sqrt(s[-1] if n.endswith("weight") else 4)).astype(np.float32)
            for n, s in shapes.items()}


def _save_safetensors(path, state):
    from safetensors.numpy import save_file

    save_file(state, str(path))
    return path


def _images():
    return np.random.default_rng(9).standard_normal((2, 3, 32, 32)).astype(np.float32)


def test_timm_safetensors_load_and_match_a_numpy_forward_of_the_timm_weights(tmp_path):
    state = timm_state()
    path = _save_safetensors(tmp_path / "deit_tiny.safetensors", state)
    network = create_network("NetworkExpansion", pretrained=str(path), **TIMM_TINY)
    assert (network.config.gelu_approximate, network.config.layer_norm_eps) == (False, 1e-6)
    network.set_train(False)
    expected = numpy_vit.forward(state, _images(), num_heads=4, gelu_approximate=False,
                                 layer_norm_eps=1e-6, names="timm")
    np.testing.assert_allclose(network(ms.Tensor(_images())).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_timm_npz_loads_too(tmp_path):
    state = timm_state()
    np.savez(tmp_path / "vit.npz", **state)
    network = create_network("NetworkExpansion", pretrained=str(tmp_path / "vit.npz"), **TIMM_TINY)
    np.testing.assert_array_equal(network.cls.asnumpy(), state["cls_token"])


def test_timm_weights_into_a_network_built_for_the_zoo_say_which_fields_to_set(tmp_path):
    path = _save_safetensors(tmp_path / "t.safetensors", timm_state())
    with pytest.raises(CheckpointError, match=r"gelu_approximate=False, the network has True(.|\n)*"
                                              r"layer_norm_eps=1e-06, the network has 1e-07"):
        load_pretrained(VisionTransformer(tiny_config()), path)


def test_convert_command_writes_a_ckpt_that_records_the_architecture(tmp_path):
    state = timm_state()
    source = _save_safetensors(tmp_path / "deit.safetensors", state)
    assert main(["convert", str(source), str(tmp_path / "deit.ckpt")]) == 0
    network = create_network("NetworkExpansion", pretrained=str(tmp_path / "deit.ckpt"), **TIMM_TINY)
    assert (network.config.gelu_approximate, network.config.layer_norm_eps) == (False, 1e-6)
    network.set_train(False)
    expected = numpy_vit.forward(state, _images(), num_heads=4, gelu_approximate=False,
                                 layer_norm_eps=1e-6, names="timm")
    np.testing.assert_allclose(network(ms.Tensor(_images())).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deit.ckpt", "deit.safetensors"]  # no temp left


def test_round_trip_ours_to_timm_to_ours_is_exact(tmp_path):
    network = VisionTransformer(tiny_config())
    path = save_weights(network, tmp_path / "exported.safetensors", names="timm")
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        assert "blocks.1.attn.qkv.weight" in f.keys() and f.metadata()["format"] == "pt"
        assert f.get_tensor("patch_embed.proj.weight").shape == (32, 3, 8, 8)
    back = read_weights(path)
    assert back.scheme == "timm"
    ours = parameters_of(network)
    assert sorted(back.state) == sorted(ours)
    for name in ours:
        np.testing.assert_array_equal(back.state[name], ours[name], err_msg=name)
    # and the architecture recorded in the file wins over timm's usual one
    assert back.architecture == {"gelu_approximate": True, "layer_norm_eps": 1e-7, "num_heads": 4}


def test_the_name_maps_are_inverse_on_the_full_vit_b_names():
    state = {name: np.zeros(shape, np.float32) for name, shape in reference_names()}
    timm = mindspore_to_timm(state)
    assert len(timm) == 200 - 12 * 4  # q, k, v weights and biases fused into qkv
    back, unmapped = timm_to_mindspore(timm)
    assert unmapped == {} and {n: v.shape for n, v in back.items()} == {n: v.shape for n, v in state.items()}


def test_bfloat16_safetensors_are_widened_to_float32(tmp_path):
    values = np.array([[1.0, -2.5], [3.25, 0.5]], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"cls_token": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}).encode()
    (tmp_path / "bf16.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + raw)
    weights = read_weights(tmp_path / "bf16.safetensors")
    np.testing.assert_array_equal(weights.state["cls"], values)


@pytest.mark.parametrize("file_name", ["w.ckpt", "w.safetensors", "w.npz"])
def test_our_names_round_trip_through_every_format_with_the_architecture(tmp_path, file_name):
    network = VisionTransformer(tiny_config(gelu_approximate=False))
    path = save_weights(network, tmp_path / file_name, names="mindspore")
    back = read_weights(path)
    assert back.scheme == "mindspore" and back.architecture["gelu_approximate"] is False
    ours = parameters_of(network)
    assert sorted(back.state) == sorted(ours)
    for name in ours:
        np.testing.assert_array_equal(back.state[name], ours[name], err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [file_name]


# -- what a new user's trial broke (issue 10) -------------------------------------------

def test_zoo_named_weights_without_metadata_rebuild_the_zoo_architecture_through_timm_and_back(tmp_path):
    """A plain mindspore.save_checkpoint file (no metadata, like the released one) is the zoo's
    network: tanh GELU and LayerNorm epsilon 1e-7. Converted to timm names, the file says so,
    and reading it back builds the same network, with the same logits."""
    zoo = VisionTransformer(tiny_config(layer_norm_eps=1e-7, gelu_approximate=True))
    plain = write_ckpt(tmp_path / "plain.ckpt", parameters_of(zoo))
    assert main(["convert", str(plain), str(tmp_path / "plain.safetensors")]) == 0
    assert main(["convert", str(tmp_path / "plain.safetensors"), str(tmp_path / "back.ckpt")]) == 0
    images = ms.Tensor(_images())
    zoo.set_train(False)
    for path in (plain, tmp_path / "plain.safetensors", tmp_path / "back.ckpt"):
        network = create_network("NetworkExpansion", pretrained=str(path), num_heads=4)
        assert (network.config.gelu_approximate, network.config.layer_norm_eps) == (True, 1e-7), path
        network.set_train(False)
        np.testing.assert_array_equal(network(images).asnumpy(), zoo(images).asnumpy())


def test_zoo_weights_without_metadata_still_load_into_a_network_built_otherwise(tmp_path):
    """The zoo architecture is assumed, not recorded: a user's own network with exact GELU loads
    a plain checkpoint of itself without being told to rebuild."""
    network = VisionTransformer(tiny_config(gelu_approximate=False, layer_norm_eps=1e-6))
    plain = write_ckpt(tmp_path / "mine.ckpt", parameters_of(network))
    load_pretrained(VisionTransformer(tiny_config(gelu_approximate=False, layer_norm_eps=1e-6)), plain)


@pytest.mark.parametrize("mode", ["pynative", "own_jit", "package_forward"])
def test_weights_loaded_after_a_graph_has_run_are_seen_by_that_graph(tmp_path, mode):
    from network_expansion.graphs import compiled_forward

    ms.set_seed(0)
    network = VisionTransformer(tiny_config())
    network.set_train(False)
    trained = VisionTransformer(tiny_config())  # other random weights
    trained.set_train(False)
    path = save_weights(trained, tmp_path / "trained.ckpt")
    images = ms.Tensor(_images())

    def own(x):
        return network(x) * 1.0

    forward = {"pynative": network, "own_jit": ms.jit(own), "package_forward": compiled_forward(network)}[mode]
    before = forward(images).asnumpy()
    load_pretrained(network, path)
    after = forward(images).asnumpy()
    expected = trained(images).asnumpy()
    assert not np.allclose(before, expected)
    np.testing.assert_allclose(after, expected, rtol=1e-6, atol=1e-6)


def test_class_names_travel_with_the_weights_through_every_format(tmp_path):
    network = VisionTransformer(tiny_config(num_classes=3))
    network.class_names = ("cat", "dog", "fox")
    for name in ("w.ckpt", "w.safetensors", "w.npz"):
        path = save_weights(network, tmp_path / name)
        assert read_weights(path).class_names == ("cat", "dog", "fox")
        assert create_network("NetworkExpansion", pretrained=str(path)).class_names == ("cat", "dog", "fox")
    assert create_network("NetworkExpansion", pretrained=str(tmp_path / "w.ckpt"), num_classes=5).class_names is None


def test_class_names_that_do_not_fit_the_head_are_refused(tmp_path):
    network = VisionTransformer(tiny_config(num_classes=3))
    network.class_names = ("cat", "dog")
    path = save_weights(network, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="names 2 classes, its head has 3 outputs"):
        read_weights(path)


def test_a_checkpoint_larger_than_the_memory_mindspore_counts_as_free_loads(tmp_path, monkeypatch):
    """MindSpore 2.10's `load_checkpoint` refuses a file larger than `SC_AVPHYS_PAGES` (free
    memory without the page cache: a good 346 MB file was refused on a machine with gigabytes
    available). The package reads checkpoints itself, so the same file loads, from a path and
    through a download, where MindSpore's check fails."""
    import os

    path = write_ckpt(tmp_path / "t.ckpt", random_state(tiny_shapes()))
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_AVPHYS_PAGES" else real_sysconf(name))
    with pytest.raises(ValueError, match="exceeds current available memory"):
        ms.load_checkpoint(str(path))  # MindSpore's own reader: refused
    network = create_network("NetworkExpansion", pretrained=str(path), **TIMM_TINY)
    assert np.array_equal(network.cls.asnumpy(), random_state(tiny_shapes())["cls"])
    with FileServer() as server:
        server.files["/w/t.ckpt"] = path.read_bytes()
        fetched = create_network("NetworkExpansion", pretrained=server.url("/w/t.ckpt"), **TIMM_TINY)
    assert np.array_equal(fetched.cls.asnumpy(), network.cls.asnumpy())


def test_a_download_that_cannot_be_checked_here_is_kept_not_deleted(tmp_path, monkeypatch):
    """A download is deleted only for what its content is: a check that fails for a reason of
    this machine's (no memory, an I/O error) keeps the complete file, unused, and says so."""
    from network_expansion import formats
    from network_expansion.errors import DownloadError

    body = write_ckpt(tmp_path / "t.ckpt", random_state(tiny_shapes())).read_bytes()
    cache = tmp_path / "cache"

    def out_of_memory(path):
        raise MemoryError()

    monkeypatch.setitem(formats.FORMATS, ".ckpt", formats.WeightFormat(read=out_of_memory, write=None))
    with FileServer() as server:
        server.files["/w/t.ckpt"] = body
        with pytest.raises(DownloadError, match=r"cannot be checked here, so it was kept there unused") as caught:
            read_weights(server.url("/w/t.ckpt"), cache_dir=cache, progress=False)
    kept = [p for p in cache.rglob("*") if p.name.endswith(".part")]
    assert len(kept) == 1 and kept[0].read_bytes() == body and str(kept[0]) in str(caught.value)
    assert "MemoryError" in str(caught.value)
