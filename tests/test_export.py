"""Export: MindIR reloads with the same outputs; ONNX runs in onnxruntime; preprocessing in the graph."""

import mindspore as ms
import numpy as np
import pytest
from conftest import tiny_config

from network_expansion import VisionTransformer, save_weights
from network_expansion.cli import main
from network_expansion.export import ExportError, export, load_mindir
from network_expansion.preprocess import WithPreprocess


@pytest.fixture(scope="module")
def network():
    ms.set_seed(0)
    net = VisionTransformer(tiny_config())
    net.set_train(False)
    return net


def _images(batch):
    return np.random.default_rng(1).standard_normal((batch, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("batch,run_with", [(2, 2), (None, 3)])
def test_mindir_reloads_and_matches_the_python_model(network, tmp_path, batch, run_with):
    path = export(network, tmp_path / "model", batch=batch)
    assert path.name == "model.mindir" and sorted(p.name for p in tmp_path.iterdir()) == ["model.mindir"]
    graph = load_mindir(path)
    x = ms.Tensor(_images(run_with))
    np.testing.assert_allclose(graph(x).asnumpy(), network(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_mindir_with_preprocess_takes_uint8_pictures(network, tmp_path):
    path = export(network, tmp_path / "raw.mindir", batch=1, with_preprocess=True, input_size=(48, 60))
    pictures = np.random.default_rng(2).integers(0, 255, (1, 48, 60, 3), dtype=np.uint8)
    expected = WithPreprocess(network)(ms.Tensor(pictures)).asnumpy()
    np.testing.assert_allclose(load_mindir(path)(ms.Tensor(pictures)).asnumpy(), expected, rtol=1e-5, atol=1e-5)


def test_onnx_runs_in_onnxruntime_with_the_same_outputs(network, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = export(network, tmp_path / "model.onnx", file_format="onnx", batch=2)
    session = onnxruntime.InferenceSession(str(path))
    x = _images(2)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, network(ms.Tensor(x)).asnumpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,reason", [
    (dict(batch=None), "dynamic"),
    (dict(batch=1, with_preprocess=True), "ResizeBilinearV2"),
])
def test_onnx_exports_mindspore_cannot_do_say_why_and_leave_nothing(network, tmp_path, kwargs, reason):
    with pytest.raises(ExportError, match=f"cannot export this network as ONNX.*{reason}"):
        export(network, tmp_path / "model.onnx", file_format="onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_export_command(network, tmp_path, capsys):
    weights = save_weights(network, tmp_path / "tiny.ckpt")
    assert main(["export", str(tmp_path / "out"), "--weights", str(weights), "--batch", "dynamic"]) == 0
    assert "out.mindir" in capsys.readouterr().out and (tmp_path / "out.mindir").is_file()
