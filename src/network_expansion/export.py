"""Export for serving: MindIR (always), ONNX (where MindSpore can), with or without
the device-side preprocessing in the graph.

    network-expansion export --format mindir --with-preprocess --batch 8 model.mindir

Without preprocessing the graph takes normalised float32 NCHW crops; with it, uint8 NHWC
pictures of one fixed size (`input_size`, default the recipe's resize size), and it
resizes, crops and normalises itself. `batch=None` exports a dynamic batch dimension.
Files are written to a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

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
           input_size=None, overwrite: bool = True) -> Path:
    """Write `network` (eval mode) to `path`; returns the path written.

    `overwrite=False` refuses to replace an existing file (the command line's default)."""
    import mindspore as ms

    from . import cpu_forms
    from .preprocess import WithPreprocess

    if file_format not in FORMATS:
        raise ExportError(f"format {file_format!r}: expected one of {', '.join(FORMATS)}")
    _check_sizes(batch, input_size)
    if batch:
        from .memory import check_fits, inference_bytes

        check_fits("tracing the network for export", lambda b: inference_bytes(network.config, b), batch,
                   "lower --batch (batch=), or export a dynamic batch (batch=None)")
    ms_format, suffix = FORMATS[file_format]
    path = destination(path, file_format, overwrite)
    network.set_train(False)
    cell = WithPreprocess(network) if with_preprocess else network
    cell.set_train(False)
    inputs = example_input(network, batch=batch, with_preprocess=with_preprocess, input_size=input_size)
    check_writable_folder(path.parent)
    folder = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        try:
            with cpu_forms.applied(network, _export_forms()):
                ms.export(cell, inputs, file_name=str(folder / "model"), file_format=ms_format)
        except Exception as error:  # MindSpore raises RuntimeError/TypeError/ValueError by converter
            raise ExportError(f"MindSpore {ms.__version__} cannot export this network as {ms_format}"
                              f"{' with a dynamic batch' if batch is None else ''}: "
                              f"{str(error).strip().splitlines()[0]}") from error
        written = list(folder.glob(f"model*{suffix}"))
        if len(written) != 1:
            raise ExportError(f"MindSpore wrote {[p.name for p in folder.iterdir()]}, expected one {suffix} file")
        with atomic_write(path) as temporary:
            os.replace(written[0], temporary)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


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
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite (overwrite=True) to replace it, or give another name")
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
