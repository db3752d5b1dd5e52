"""The ONNX file MindSpore writes, made into one a server can use (needs the `onnx` package).

MindSpore 2.10 writes ONNX at opset 11, for one fixed batch, with an input named after the
network's argument and an output named by a node number, and cannot convert the bilinear
resize of the preprocessing. `finish` gives the file:

- named input and output: `pixels` (normalised float32 NCHW crops) or, with the
  preprocessing, `images` (uint8 NHWC pictures of the exported size); `logits`;
- a dynamic batch (`batch`), where asked: the graph is traced at a batch no dimension of the
  network has, and each place that batch was written into the graph (the first entry of a
  Reshape's target, the class token's Expand) is made to follow the input instead; a trace
  in which the batch appears anywhere else is refused rather than guessed;
- opset `OPSET`, by ONNX's own version converter;
- the preprocessing as ONNX operators, where asked (Cast, Transpose, Resize with half-pixel
  linear sampling as MindSpore's ResizeBilinearV2, Round, Clip, Slice, Sub, Div);
- the serving description (`export.serving_info`: labels, preprocessing, input) in
  `metadata_props`, one JSON value per key.
"""

from __future__ import annotations

import json

import numpy as np

from .errors import ExportError

OPSET = 18                 # Resize takes `axes` from 18: sizes for H and W only, any batch
TRACE_BATCH = 53           # a batch no ViT dimension is: where it shows in the trace, it is the batch
PIXELS, IMAGES, LOGITS = "pixels", "images", "logits"


def onnx_module():
    """`onnx`, or an ExportError that says how to get it."""
    try:
        import onnx
    except ImportError as error:
        raise ExportError("ONNX export needs the onnx package: pip install onnx "
                          "(or pip install 'network-expansion[onnx]')") from error
    return onnx


def finish(path, *, dynamic: bool, traced_batch: int, info: dict, preprocess=None) -> None:
    """Rewrite the ONNX file at `path` in place (see the module's docstring). `preprocess`:
    (picture height, width, the network's `Preprocess` cell) to put in front, or None."""
    onnx = onnx_module()
    from onnx import version_converter

    model = onnx.load(str(path))
    graph = model.graph
    _rename(graph, graph.input[0].name, PIXELS)
    _rename(graph, graph.output[0].name, LOGITS)
    if dynamic:
        _follow_the_input_batch(graph, traced_batch)
    model = version_converter.convert_version(model, OPSET)
    graph = model.graph
    if preprocess is not None:
        _prepend_preprocess(graph, *preprocess, dynamic=dynamic, batch=traced_batch)
    del graph.value_info[:]  # the converter's shapes are for the traced batch
    for key, value in info.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=json.dumps(value)))
    model.producer_name = "network_expansion"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def _constants(graph) -> dict:
    """name -> (numpy value, setter) for every initializer and Constant node."""
    from onnx import numpy_helper

    found = {}
    for tensor in graph.initializer:
        found[tensor.name] = (numpy_helper.to_array(tensor),
                              lambda value, tensor=tensor: tensor.CopyFrom(numpy_helper.from_array(value, tensor.name)))
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            attribute = node.attribute[0]
            found[node.output[0]] = (numpy_helper.to_array(attribute.t),
                                     lambda value, attribute=attribute: attribute.t.CopyFrom(
                                         numpy_helper.from_array(value)))
    return found


def _follow_the_input_batch(graph, batch: int) -> None:
    from onnx import TensorProto, helper

    def _holds_batch(values) -> bool:  # the batch, or a product of it (batch x tokens, flattened)
        return any(v != 0 and v % batch == 0 for v in np.asarray(values).tolist())

    constants = _constants(graph)
    consumers = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))
    made, unused = [], []
    for name, (value, set_value) in constants.items():
        shape = value.reshape(-1)
        if value.dtype.kind not in "iu" or not _holds_batch(shape):
            continue
        uses = consumers.get(name, [])
        only_batch_first = shape[0] == batch and not _holds_batch(shape[1:])
        if uses and all(node.op_type == "Reshape" and position == 1 for node, position in uses) \
                and only_batch_first and -1 not in shape.tolist():
            set_value(np.concatenate([[-1], shape[1:]]).astype(value.dtype))
        elif uses and all(node.op_type == "Expand" and position == 1 for node, position in uses) and only_batch_first:
            # the class token broadcast to the batch: the target's first entry from the input
            rest = f"{name}_rest"
            made += [helper.make_node("Shape", [PIXELS], [f"{name}_shape"], start=0, end=1),
                     helper.make_node("Constant", [], [rest], value=helper.make_tensor(
                         rest, TensorProto.INT64, [len(shape) - 1], shape[1:].astype(np.int64).tolist())),
                     helper.make_node("Concat", [f"{name}_shape", rest], [f"{name}_dynamic"], axis=0)]
            for node, position in uses:
                node.input[position] = f"{name}_dynamic"
            unused.append(name)
        else:
            raise ExportError(f"cannot make the ONNX batch dynamic: the traced batch ({batch}) is in "
                              f"{name} ({value.tolist()}), used by {[n.op_type for n, _ in uses]}; export a "
                              f"fixed batch instead")
    for tensor in [t for t in graph.initializer if t.name in unused]:
        graph.initializer.remove(tensor)
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] in unused]:
        graph.node.remove(node)
    for node in reversed(made):
        graph.node.insert(0, node)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def _prepend_preprocess(graph, height: int, width: int, preprocess, *, dynamic: bool, batch: int) -> None:
    """images (uint8 NHWC, height x width) -> the `pixels` the graph takes, as `Preprocess`."""
    from onnx import TensorProto, helper

    (size, top, left), crop = preprocess.plan_for(height, width), preprocess.input_size
    mean = np.asarray(preprocess.mean.asnumpy(), np.float32)
    std = np.asarray(preprocess.std.asnumpy(), np.float32)

    def constant(name, values, kind=TensorProto.INT64, dims=None):
        values = np.asarray(values)
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(
            name, kind, list(values.shape if dims is None else dims), values.reshape(-1).tolist()))

    nodes = [
        helper.make_node("Cast", [IMAGES], ["pre_float"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pre_float"], ["pre_nchw"], perm=[0, 3, 1, 2]),
        constant("pre_sizes", list(size)),
        helper.make_node("Resize", ["pre_nchw", "", "", "pre_sizes"], ["pre_resized"], mode="linear", axes=[2, 3],
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Round", ["pre_resized"], ["pre_rounded"]),
        constant("pre_low", 0.0, TensorProto.FLOAT), constant("pre_high", 255.0, TensorProto.FLOAT),
        helper.make_node("Clip", ["pre_rounded", "pre_low", "pre_high"], ["pre_clipped"]),
        constant("pre_starts", [top, left]), constant("pre_ends", [top + crop, left + crop]),
        constant("pre_axes", [2, 3]),
        helper.make_node("Slice", ["pre_clipped", "pre_starts", "pre_ends", "pre_axes"], ["pre_crop"]),
        constant("pre_mean", mean, TensorProto.FLOAT), constant("pre_std", std, TensorProto.FLOAT),
        helper.make_node("Sub", ["pre_crop", "pre_mean"], ["pre_centred"]),
        helper.make_node("Div", ["pre_centred", "pre_std"], [PIXELS]),
    ]
    for node in reversed(nodes):
        graph.node.insert(0, node)
    old = graph.input[0]
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(IMAGES, TensorProto.UINT8,
                                                        ["batch" if dynamic else batch, height, width, 3]))
