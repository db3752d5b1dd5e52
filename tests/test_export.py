"""Export: MindIR reloads with the same outputs; ONNX runs in onnxruntime; preprocessing in the graph."""

import json

import mindspore as ms
import numpy as np
import pytest
from conftest import tiny_config

from network_expansion import VisionTransformer, save_weights
from network_expansion.cli import main
from network_expansion.errors import OutputError
from network_expansion.export import ExportError, export, load_mindir
from network_expansion.predict import imagenet_class_names
from network_expansion.preprocess import WithPreprocess, data_config


@pytest.fixture()
def network(tiny):
    return tiny  # conftest's tiny ViT (seed 0, eval mode)


def _images(batch):
    return np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("batch,run_with", [(2, 2), (None, 3)])
def test_mindir_reloads_and_matches_the_python_model(network, tmp_path, batch, run_with):
    path = export(network, tmp_path / "model", batch=batch)
    assert path.name == "model.mindir" and sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.mindir"]
    graph = load_mindir(path)
    x = ms.Tensor(_images(run_with))
    np.testing.assert_allclose(graph(x).asnumpy(), network(x).asnumpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch,runs", [(1, (1,)), (None, (1, 3))])
def test_mindir_with_preprocess_takes_uint8_pictures_for_a_fixed_or_dynamic_batch(network, tmp_path, batch, runs):
    path = export(network, tmp_path / "raw.mindir", batch=batch, with_preprocess=True, input_size=(48, 60))
    graph = load_mindir(path)
    for n in runs:
        pictures = np.random.default_rng(n).integers(0, 255, (n, 48, 60, 3), dtype=np.uint8)
        expected = WithPreprocess(network)(ms.Tensor(pictures)).asnumpy()
        np.testing.assert_allclose(graph(ms.Tensor(pictures)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_json_beside_the_mindir_tells_a_server_the_input_labels_and_preprocessing(network, tmp_path):
    path = export(network, tmp_path / "model.mindir", batch=None, with_preprocess=True, input_size=(48, 60))
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["input"] == {"name": "images", "dtype": "uint8", "layout": "NHWC", "shape": ["batch", 48, 60, 3]}
    assert info["output"] == {"name": "logits", "shape": ["batch", 10], "classes": 10, "unused_outputs": []}
    assert info["labels"] == [str(i) for i in range(10)]
    assert info["preprocessing"]["in_graph"] and info["preprocessing"]["interpolation"] == "bilinear"
    assert info["preprocessing"]["mean"] == list(data_config(network).mean)
    assert info["model"]["config"]["num_heads"] == 4
    with pytest.raises(OutputError, match="model.json exists"):  # the pair is one export
        path.unlink()
        export(network, tmp_path / "model.mindir", overwrite=False)


def _onnx_session(path):
    onnxruntime = pytest.importorskip("onnxruntime")
    return onnxruntime.InferenceSession(str(path))


@pytest.mark.parametrize("with_preprocess", [False, True])
def test_onnx_with_a_dynamic_batch_named_io_current_opset_and_metadata_matches_the_package(
        network, tmp_path, with_preprocess):
    """The ONNX file a server can use: batch 1 and 5 through one file, `pixels`/`images` in and
    `logits` out, opset 18, the labels and preprocessing in `metadata_props`, and with the
    preprocessing the pictures' resize, crop and normalisation as ONNX operators."""
    onnx = pytest.importorskip("onnx")
    path = export(network, tmp_path / "model.onnx", file_format="onnx", batch=None,
                  with_preprocess=with_preprocess, input_size=(48, 60) if with_preprocess else None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [18]
    session = _onnx_session(path)
    (given,), (out,) = session.get_inputs(), session.get_outputs()
    assert (given.name, out.name, out.shape) == ("images" if with_preprocess else "pixels", "logits", ["batch", 10])
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["labels"] == [str(i) for i in range(10)] and meta["input"]["name"] == given.name
    assert meta["preprocessing"]["in_graph"] is with_preprocess and meta["preprocessing"]["crop_pct"] == 32 / 40  # 40: the resize
    for n in (1, 5):
        if with_preprocess:
            x = np.random.default_rng(n).integers(0, 255, (n, 48, 60, 3), dtype=np.uint8)
            expected = WithPreprocess(network)(ms.Tensor(x)).asnumpy()
        else:
            x = _images(n)
            expected = network(ms.Tensor(x)).asnumpy()
        got = session.run(["logits"], {given.name: x})[0]
        # with the preprocessing: onnxruntime's and MindSpore's resize may round a gray level
        # that falls on .5 apart (measured: 3.3e-5 on one logit), else to float32's rounding
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 if with_preprocess else 1e-5)
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_onnx_for_a_fixed_batch_and_exported_twice(network, tmp_path):
    """A fixed batch stays fixed; a second export of the same network and batch (MindSpore 2.10
    reuses its compiled graph and its ONNX converter then failed) computes the same."""
    first = export(network, tmp_path / "a.onnx", file_format="onnx", batch=2)
    export(network, tmp_path / "b.onnx", file_format="onnx", batch=3)
    second = export(network, tmp_path / "c.onnx", file_format="onnx", batch=2)
    sessions = [_onnx_session(path) for path in (first, second)]
    assert [s.get_inputs()[0].shape for s in sessions] == [[2, 3, 32, 32]] * 2
    x = _images(2)
    np.testing.assert_array_equal(*(s.run(None, {"pixels": x})[0] for s in sessions))


def test_classes_only_leaves_out_the_released_heads_unused_output(tmp_path):
    """The released head has 1001 outputs, of which 1000 are ImageNet's classes: `classes_only`
    exports those 1000, labelled."""
    ms.set_seed(0)
    net = VisionTransformer(tiny_config(num_classes=1001, width=16, num_heads=2, mlp_width=32))
    net.set_train(False)
    full = export(net, tmp_path / "full.mindir")
    trimmed = export(net, tmp_path / "trimmed.mindir", classes_only=True)
    x = ms.Tensor(_images(1))
    logits = load_mindir(full)(x).asnumpy()
    assert logits.shape == (1, 1001) and load_mindir(trimmed)(x).asnumpy().shape == (1, 1000)
    np.testing.assert_allclose(load_mindir(trimmed)(x).asnumpy(), logits[:, :1000], rtol=1e-6)
    full_info, info = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("full", "trimmed"))
    assert full_info["output"]["unused_outputs"] == [1000] and info["output"]["unused_outputs"] == []
    assert len(info["labels"]) == 1000 and info["labels"][0] == imagenet_class_names()[0]


def test_a_batch_written_anywhere_but_where_it_can_follow_the_input_is_refused():
    """A traced graph in which the batch shows up where it cannot be made dynamic (here, a
    Reshape to batch x tokens) is refused, not guessed."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from network_expansion import onnx_graph

    batch = onnx_graph.TRACE_BATCH
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["target"], value=helper.make_tensor("t", TensorProto.INT64, [2], [batch * 4, 8])),
         helper.make_node("Reshape", ["pixels", "target"], ["logits"])], "g",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 4, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch * 4, 8])])
    with pytest.raises(ExportError, match=r"cannot make the ONNX batch dynamic.*\[212, 8\].*Reshape"):
        onnx_graph._follow_the_input_batch(helper.make_model(graph).graph, batch)
    del onnx


def test_export_command(network, tmp_path, capsys):
    weights = save_weights(network, tmp_path / "tiny.ckpt")
    assert main(["export", str(tmp_path / "out"), "--weights", str(weights), "--batch", "dynamic"]) == 0
    assert "out.mindir" in capsys.readouterr().out and (tmp_path / "out.mindir").is_file()
    assert main(["export", str(tmp_path / "served"), "--weights", str(weights), "--format", "onnx", "--batch",
                 "dynamic", "--with-preprocess", "--classes-only"]) == 0
    assert "served.onnx (" in capsys.readouterr().out
    assert _onnx_session(tmp_path / "served.onnx").get_inputs()[0].shape == ["batch", 40, 40, 3]


@pytest.mark.slow
def test_a_process_tuned_for_kernel_fusion_exports_plain_graphs(tmp_path):
    """`tune_cpu()` (the CLI asks for it at ViT-B's sizes) makes MindSpore fuse kernels and the
    package choose the forms fusion runs fastest (a LayerNorm with rsqrt): an export must not
    carry them (MindSpore's ONNX converter has no Rsqrt: "Can not find key Rsqrt"), and the
    process is tuned as before afterwards. In a fresh interpreter: tuning is process-wide."""
    import subprocess
    import sys

    script = f"""
import os
from network_expansion import tune_cpu
tuning = tune_cpu(kernel_fusion=True)
from network_expansion import VisionTransformer, ViTConfig
from network_expansion.export import export
from network_expansion.tuning import FUSION_FLAGS, kernel_fusion_on
net = VisionTransformer(ViTConfig(depth=1, num_classes=10))
net.set_train(False)
export(net, {str(tmp_path / 'tuned.onnx')!r}, file_format="onnx", batch=None)
export(net, {str(tmp_path / 'tuned.mindir')!r}, batch=1)
print("fused", tuning.kernel_fusion, "after", kernel_fusion_on())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fused = "fused True" in result.stdout
    assert ("after True" in result.stdout) == fused  # the tuning is back as it was
    session = _onnx_session(tmp_path / "tuned.onnx")
    assert session.get_outputs()[0].shape == ["batch", 10]
