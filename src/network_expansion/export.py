"""Export for serving: MindIR or ONNX, with or without the preprocessing in the graph,
for a fixed or a dynamic batch, described for the server that runs it.

    network-expansion export --format onnx --with-preprocess --batch dynamic model.onnx

Without preprocessing the graph takes normalised float32 NCHW crops (`pixels`); with it,
uint8 NHWC pictures of one fixed size (`images`; `input_size`, default the recipe's resize
size), and it resizes, crops and normalises itself. `batch=None` exports a dynamic batch
dimension. The output is `logits`; `classes_only` keeps only the outputs that are classes
(1000 of the released head's 1001). What a server needs besides the graph (the labels, the
preprocessing, the input) is `serving_info`: in the ONNX file's `metadata_props`, and in a
JSON file beside a MindIR (`model.json` for `model.mindir`). Files are written to a
temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write, check_writable_folder
from .errors import ConfigError, ExportError, OutputError

FORMATS = {"mindir": ("MINDIR", ".mindir"), "onnx": ("ONNX", ".onnx")}


def example_input(network, *, batch: int | None = 1, with_preprocess: bool = False, input_size=None):
    """The input the exported graph takes (a shape-only Tensor when the batch is dynamic)."""
    import mindspore as ms

    from .preprocess import data_config

    if with_preprocess:
        size = input_size or (data_config(network).resize_size,) * 2
        shape, dtype = [batch, size[0], size[1], 3], ms.uint8
    else:
        size = network.config.image_size
        shape, dtype = [batch, network.config.in_channels, size, size], ms.float32
    if batch is None:
        return ms.Tensor(shape=shape, dtype=dtype)
    return ms.Tensor(np.zeros(shape, np.uint8 if with_preprocess else np.float32))


def export(network, path, *, file_format: str = "mindir", batch: int | None = 1, with_preprocess: bool = False,
           input_size=None, overwrite: bool = True, classes_only: bool = False) -> Path:
    """Write `network` (eval mode) to `path`; returns the path written.

    `overwrite=False` refuses to replace an existing file (the command line's default)."""
    import mindspore as ms

    from . import cpu_forms, onnx_graph
    from .preprocess import Preprocess, WithPreprocess, data_config
    from .tuning import fusion_paused

    if file_format not in FORMATS:
        raise ExportError(f"format {file_format!r}: expected one of {', '.join(FORMATS)}")
    _check_sizes(batch, input_size)
    if file_format == "onnx":
        onnx_graph.onnx_module()  # before any work: the package is needed to finish the file
    if batch:
        from .memory import check_fits, inference_bytes

        check_fits("tracing the network for export", lambda b: inference_bytes(network.config, b), batch,
                   "lower --batch (batch=), or export a dynamic batch (batch=None)")
    ms_format, suffix = FORMATS[file_format]
    path = destination(path, file_format, overwrite)
    network.set_train(False)
    inputs = example_input(network, batch=batch, with_preprocess=with_preprocess, input_size=input_size)
    info = serving_info(network, file_format=file_format, shape=inputs.shape, with_preprocess=with_preprocess,
                        classes_only=classes_only)
    # a new cell each time: MindSpore 2.10 reuses the graph it compiled for an earlier export of
    # the same cell and shapes, and its ONNX converter then fails ("i: 2 out of range")
    cell = _Outputs(network, len(info["labels"]) if classes_only else None)
    traced_batch = batch
    if file_format == "onnx":  # MindSpore traces ONNX for one batch, without the resize: onnx_graph finishes it
        traced_batch = batch or onnx_graph.TRACE_BATCH
        traced = example_input(network, batch=traced_batch)
    else:
        if with_preprocess:
            cell = WithPreprocess(cell, data_config(network), picture_size=inputs.shape[1:3])
        traced = inputs
    cell.set_train(False)
    check_writable_folder(path.parent)
    folder = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        try:
            with fusion_paused():  # first: the forms chosen depend on it (a fused LayerNorm's rsqrt)
                with cpu_forms.applied(network, _export_forms()):
                    ms.export(cell, traced, file_name=str(folder / "model"), file_format=ms_format)
        except Exception as error:  # MindSpore raises RuntimeError/TypeError/ValueError by converter
            raise ExportError(f"MindSpore {ms.__version__} cannot export this network as {ms_format}"
                              f"{' with a dynamic batch' if batch is None else ''}: "
                              f"{str(error).strip().splitlines()[0]}") from error
        written = list(folder.glob(f"model*{suffix}"))
        if len(written) != 1:
            raise ExportError(f"MindSpore wrote {[p.name for p in folder.iterdir()]}, expected one {suffix} file")
        if file_format == "onnx":
            picture = inputs.shape[1:3] if with_preprocess else None
            onnx_graph.finish(written[0], dynamic=batch is None, traced_batch=traced_batch, info=info,
                              preprocess=(*picture, Preprocess(data_config(network))) if picture else None)
        else:
            described = folder / "model.json"
            described.write_text(json.dumps(info, indent=1) + "\n")
            with atomic_write(description_path(path)) as temporary:
                os.replace(described, temporary)
        with atomic_write(path) as temporary:
            os.replace(written[0], temporary)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def serving_info(network, *, file_format: str, shape, with_preprocess: bool, classes_only: bool) -> dict:
    """What a server needs to run an exported graph of `network`: its input (name, type,
    layout, shape; `"batch"` for a dynamic batch), its output (the number of logits, which
    are classes), the class labels, the preprocessing (in the graph or the server's to do:
    timm's `pretrained_cfg` keys), and the model."""
    from . import __version__, onnx_graph
    import dataclasses

    from .predict import class_names_of
    from .preprocess import pretrained_cfg

    labels = list(class_names_of(network))
    outputs = len(labels) if classes_only else network.config.num_classes
    dims = ["batch" if d is None or d < 0 else int(d) for d in shape]
    return {
        "input": {"name": onnx_graph.IMAGES if with_preprocess else onnx_graph.PIXELS,
                  "dtype": "uint8" if with_preprocess else "float32",
                  "layout": "NHWC" if with_preprocess else "NCHW", "shape": dims},
        "output": {"name": onnx_graph.LOGITS, "shape": [dims[0], outputs],
                   "classes": len(labels), "unused_outputs": list(range(len(labels), outputs))},
        "labels": labels,
        "preprocessing": {"in_graph": with_preprocess, **pretrained_cfg(network)},
        "model": {"name": "NetworkExpansion", "package": f"network_expansion {__version__}",
                  "format": file_format, "config": dataclasses.asdict(network.config)},
    }


def description_path(path) -> Path:
    """The JSON file beside an exported MindIR that holds its `serving_info`."""
    return Path(path).with_suffix(".json")


class _Outputs:
    """Made lazily into an nn.Cell (MindSpore is imported only when exporting)."""

    def __new__(cls, network, classes: int | None):
        from mindspore import nn

        class Outputs(nn.Cell):
            """`network`, or its first `classes` outputs (the released head's unused output 1000
            left out)."""

            def __init__(self):
                super().__init__(auto_prefix=False)  # the network's parameter names stay its own
                self.network = network

            def construct(self, x):
                logits = self.network(x)
                return logits if classes is None else logits[:, :classes]

        return Outputs()


def _export_forms():
    """The forms an exported graph computes in: what `cpu_forms.choose()` gives here, with
    every block inlined (MindSpore's ONNX converter fails on a block compiled once: "The
    pointer[prim] is null"). The same function in every form: a file exported here runs
    anywhere."""
    import dataclasses

    from . import cpu_forms

    forms = cpu_forms.choose()
    return dataclasses.replace(forms, compiled_once=False) if forms is not None else None


def destination(path, file_format: str = "mindir", overwrite: bool = True) -> Path:
    """The file `export` writes for `path` (the format's suffix added if missing); an existing
    one raises `OutputError` unless `overwrite`."""
    suffix = FORMATS[file_format][1]
    path = Path(path)
    if path.suffix.lower() != suffix:
        path = path.with_name(path.name + suffix)
    for taken in [path] + ([description_path(path)] if file_format == "mindir" else []):
        if taken.exists() and not overwrite:
            raise OutputError(f"{taken} exists; pass --overwrite (overwrite=True) to replace it, or give another name")
    return path


def _check_sizes(batch, input_size) -> None:
    problems = []
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        problems.append(f"batch must be a whole number >= 1 or None (dynamic), got {batch!r}")
    if input_size is not None and (len(tuple(input_size)) != 2 or
                                   any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_size)):
        problems.append(f"input_size must be two whole numbers >= 1 (height, width), got {input_size!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def load_mindir(path):
    """The exported graph as a callable `nn.GraphCell`."""
    import mindspore as ms

    return ms.nn.GraphCell(ms.load(str(path)))
