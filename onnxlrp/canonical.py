"""Canonicalise: bring a loaded model into the one form the later stages read.

IR version >= 4 (initializers are not graph inputs), float32 throughout (see precision), opset >= 17,
bias Adds absorbed and BatchNormalizations folded into their linear layers, a dynamic
batch dimension, unique node names; after analysis, ceil_mode dropped from pools where it adds no
window.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import version_converter

from onnxlrp.errors import ModelLoadError
from onnxlrp.folding import absorb_bias_adds, fold_batchnorms
from onnxlrp.graph import GraphInfo, data_input
from onnxlrp.precision import to_float32

MIN_OPSET = 17


def opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset version (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def canonicalize(
    model: onnx.ModelProto, in_place: bool = False, input_name: str | None = None
) -> onnx.ModelProto:
    """The model at IR >= 4 and opset >= 17, in float32, BatchNormalizations folded into their linear
    layers, the batch dimension of the explained input (``input_name``, default the first float
    input) dynamic, nodes uniquely named: a copy, or ``model`` itself changed when ``in_place``."""
    copy = model
    if not in_place:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
    initializers_as_inputs(copy)
    to_float32(copy)
    if opset(copy) < MIN_OPSET:
        try:
            copy = version_converter.convert_version(copy, MIN_OPSET)
        except Exception as error:
            raise ModelLoadError(
                f"cannot convert the model from opset {opset(model)} to {MIN_OPSET}: {error}"
            ) from None
    absorb_bias_adds(copy)
    fold_batchnorms(copy)
    free_batch_dimension(copy, input_name)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}" if node.name in seen or not node.name else node.name
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)
    return copy


def float32_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` at IR >= 4 in float32: the forward model that the relevance graph computes,
    for running it beside the relevance graph on the same float32 inputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers_as_inputs(copy)
    return to_float32(copy)


def initializers_as_inputs(model: onnx.ModelProto) -> None:
    """IR versions before 4 list every initializer as a graph input too (opset 7/9 exporters): the
    input is dropped (an initializer is a constant since IR 4) and the IR version raised to 4."""
    if model.ir_version >= 4:
        return
    initializers = {init.name for init in model.graph.initializer}
    kept = [inp for inp in model.graph.input if inp.name not in initializers]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.ir_version = 4


def free_batch_dimension(model: onnx.ModelProto, input_name: str | None = None) -> None:
    """Models exported with a fixed batch size get a dynamic one: the explained input's first
    dimension becomes "N" (also on the outputs), and Reshape targets that hard-code that batch size
    as their first entry copy it from their input instead (0) - only where that input's first axis is
    the batch (followed from the input through the graph, see `_batch_led`). Other fixed sizes are
    left alone."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    explained = data_input(model, input_name)  # default: the first float input
    if not explained.type.tensor_type.shape.dim:
        return
    first = explained.type.tensor_type.shape.dim[0]
    if not first.HasField("dim_value"):
        return
    batch = first.dim_value
    for value in (explained, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].dim_param = "N"
    del graph.value_info[:]  # stale static shapes; analysis recomputes them
    constants = {name: onnx.numpy_helper.to_array(init) for name, init in initializers.items()}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    rewritten: set[str] = set()
    for node in _batch_led_reshapes(graph, explained.name, constants, batch):
        target = constants[node.input[1]]
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


def _axes(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int]:
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(a) for a in constants[node.input[1]].reshape(-1)]
    return []


STRUCTURAL = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Gather", "Split", "Concat", "Slice"}


def _batch_led_reshapes(
    graph: onnx.GraphProto, input_name: str, constants: dict[str, np.ndarray], batch: int
) -> list[onnx.NodeProto]:
    """The Reshapes with a constant target starting with the export batch size whose input's first
    axis is the batch. Which tensors lead with the batch axis is followed from the input: an op keeps
    it unless it moves or removes axis 0 (Transpose, Flatten(axis=0), Squeeze/Unsqueeze/Gather/Split/
    Concat over axis 0) or is a Reshape whose target does not keep it; shapes computed by Shape are not
    batch-led tensors."""
    led = {input_name}
    found = []
    for node in graph.node:
        op = node.op_type
        if op in ("Shape", "Size") or not any(name in led for name in node.input):
            continue
        keeps = True
        if op in STRUCTURAL and node.input[0] not in led:
            continue  # only the data input carries the batch axis through a structural op
        if op == "Reshape":
            target = constants.get(node.input[1]) if len(node.input) > 1 else None
            if target is not None and target.ndim == 1 and len(target) >= 2 and target[0] == batch:
                found.append(node)
            elif target is not None:
                keeps = target.ndim == 1 and len(target) >= 1 and target[0] in (0, -1)
        elif op == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            keeps = perm is not None and perm[0] == 0
        elif op == "Flatten":
            keeps = next((a.i for a in node.attribute if a.name == "axis"), 1) != 0
        elif op in ("Squeeze", "Unsqueeze"):
            keeps = 0 not in _axes(node, constants)
        elif op in ("Gather", "Split", "Concat", "Slice"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            if op == "Slice":
                axes = constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
                keeps = axes is not None and 0 not in axes.tolist()
            else:
                keeps = axis != 0
        if keeps:
            led.update(node.output)
    return found


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
