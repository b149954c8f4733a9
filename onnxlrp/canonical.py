"""Canonicalise: bring a loaded model into the one form the later stages read.

Opset >= 17, bias Adds absorbed and BatchNormalizations folded into their linear layers, a dynamic
batch dimension, unique node names; after analysis, ceil_mode dropped from pools where it adds no
window.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import version_converter

from onnxlrp.errors import ModelLoadError
from onnxlrp.folding import absorb_bias_adds, fold_batchnorms
from onnxlrp.graph import GraphInfo

MIN_OPSET = 17


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def canonicalize(model: onnx.ModelProto, in_place: bool = False) -> onnx.ModelProto:
    """The model at opset >= 17, BatchNormalizations folded into their linear layers, nodes uniquely
    named: a copy, or ``model`` itself changed when ``in_place``."""
    copy = model
    if not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    if opset(copy) < MIN_OPSET:
        try:
            copy = version_converter.convert_version(copy, MIN_OPSET)
        except Exception as error:
            raise ModelLoadError(
                f"cannot convert the model from opset {opset(model)} to {MIN_OPSET}: {error}"
            ) from None
    absorb_bias_adds(copy)
    fold_batchnorms(copy)
    free_batch_dimension(copy)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}" if node.name in seen or not node.name else node.name
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)
    return copy


def free_batch_dimension(model: onnx.ModelProto) -> None:
    """Models exported with a fixed batch size get a dynamic one: the explained input's first
    dimension becomes "N" (also on the outputs), and Reshape targets that hard-code that batch size
    as their first entry copy it from their input instead (0). Other fixed sizes are left alone."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    float_inputs = [i for i in inputs if i.type.tensor_type.elem_type in (1, 10, 11)]
    if not float_inputs or not float_inputs[0].type.tensor_type.shape.dim:
        return
    first = float_inputs[0].type.tensor_type.shape.dim[0]
    if not first.HasField("dim_value"):
        return
    batch = first.dim_value
    for value in (float_inputs[0], *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = "N"
    del graph.value_info[:]  # stale static shapes; analysis recomputes them
    constants = {name: onnx.numpy_helper.to_array(init) for name, init in initializers.items()}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    rewritten: set[str] = set()
    for node in graph.node:
        target = constants.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if target is None or target.ndim != 1 or len(target) < 2 or target[0] != batch:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            if np.any(target == 0):
                continue  # a literal zero-sized dimension: 0 cannot mean "copy" here
            # without zeros in the target allowzero changes nothing (torch's dynamo exporter sets it)
            for attribute in list(node.attribute):
                if attribute.name == "allowzero":
                    node.attribute.remove(attribute)
        name = f"{node.input[1]}_dynamic_batch"
        if name not in rewritten:  # Reshapes may share one target
            target = target.copy()
            target[0] = 0
            graph.initializer.append(onnx.numpy_helper.from_array(target, name))
            rewritten.add(name)
        node.input[1] = name


def drop_ceil_mode(info: GraphInfo) -> None:
    """Drop ceil_mode from pools where it adds no window in onnxruntime (the probe's output size is the
    floor-mode size). onnx's shape inference still counts such a window (one that would start in the
    end padding), so without this the relevance graph would not check. Where ceil_mode does add a
    window, onnx and onnxruntime agree, and the node is left alone (the emitters read the real sizes)."""
    for node in info.nodes:
        if node.op_type not in ("MaxPool", "AveragePool") or not info.attr(node, "ceil_mode", 0):
            continue
        auto_pad = info.attr(node, "auto_pad", b"NOTSET")
        if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", ""):
            continue
        kernel = list(info.attr(node, "kernel_shape"))
        rank = len(kernel)
        strides = list(info.attr(node, "strides", [1] * rank))
        dilations = list(info.attr(node, "dilations", [1] * rank))
        pads = list(info.attr(node, "pads", [0] * 2 * rank))
        in_spatial, out_spatial = info.shape(node.input[0])[2:], info.shape(node.output[0])[2:]
        floor_sizes = [
            (in_spatial[i] + pads[i] + pads[rank + i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
            for i in range(rank)
        ]
        if list(out_spatial) == floor_sizes:  # same windows, same divisors: ceil_mode changes nothing
            for attribute in list(node.attribute):
                if attribute.name == "ceil_mode":
                    node.attribute.remove(attribute)
