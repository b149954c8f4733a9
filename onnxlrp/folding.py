"""Fold a BatchNormalization into the linear layer that produces its input (exactly, on the graph).

y = a * (z - mean) + shift with a = scale / sqrt(var + eps): scaling the layer's output channels
by a and shifting its bias gives the same function with one linear layer fewer, which LRP then
explains as one layer (as the reference implementations do after their canonizers).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def _attr(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for attribute in list(node.attribute):
        if attribute.name == name:
            node.attribute.remove(attribute)
    node.attribute.append(helper.make_attribute(name, value))


def _topology(graph: onnx.GraphProto):
    """(producer of each tensor, a test for "read by exactly one node and not a graph output")."""
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    producers = {out: node for node in graph.node for out in node.output}
    return producers, lambda name: consumers.get(name, 0) == 1 and name not in outputs


def absorb_bias_adds(model: onnx.ModelProto) -> int:
    """Conv + Add(per-channel constant) -> Conv with that bias (tf2onnx writes BiasAdd this way), so a
    BatchNormalization after the Add can fold into the Conv. Returns how many were absorbed."""
    graph = model.graph
    inits = _initializers(model)
    producers, private = _topology(graph)
    absorbed = []
    for add in graph.node:
        if add.op_type != "Add":
            continue
        for own, other in ((0, 1), (1, 0)):
            conv = producers.get(add.input[own])
            if (
                conv is None
                or conv.op_type != "Conv"
                or add.input[other] not in inits
                or not private(add.input[own])
                or conv.input[1] not in inits
            ):
                continue
            if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
                continue
            w = numpy_helper.to_array(inits[conv.input[1]])
            c = numpy_helper.to_array(inits[add.input[other]])
            rank = w.ndim
            per_channel = c.ndim <= rank and all(d == 1 for i, d in enumerate(c.shape[::-1]) if i != rank - 2)
            if not per_channel or c.size not in (1, w.shape[0]):
                continue
            bias = (
                numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 and conv.input[2] else 0.0
            )
            new_b = _new_init(
                model, conv.name or "bias", np.broadcast_to(bias + c.reshape(-1), (w.shape[0],)), w.dtype
            )
            del conv.input[2:]
            conv.input.append(new_b)
            conv.output[0] = add.output[0]
            absorbed.append(add)
            break
    for add in absorbed:
        graph.node.remove(add)
    return len(absorbed)


def fold_batchnorms(model: onnx.ModelProto) -> int:
    """Fold every foldable BatchNormalization in place; returns how many were folded."""
    graph = model.graph
    inits = _initializers(model)
    producers, private = _topology(graph)
    folded = []
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or (len(bn.output) > 1 and any(bn.output[1:])):
            continue
        layer = producers.get(bn.input[0])
        if layer is None or not private(bn.input[0]):
            continue
        if any(name not in inits for name in bn.input[1:5]):
            continue
        scale, shift, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in bn.input[1:5])
        a = scale / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        if _fold_into(model, layer, a, shift - mean * a, inits):
            layer.output[0] = bn.output[0]
            folded.append(bn)
    for bn in folded:
        graph.node.remove(bn)
    return len(folded)


def _new_init(model: onnx.ModelProto, base: str, array: np.ndarray, dtype) -> str:
    names = {init.name for init in model.graph.initializer}
    name, k = f"{base}_bnfolded", 0
    while name in names:
        k += 1
        name = f"{base}_bnfolded{k}"
    model.graph.initializer.append(numpy_helper.from_array(array.astype(dtype), name))
    return name


def _fold_into(model, layer: onnx.NodeProto, a: np.ndarray, c: np.ndarray, inits) -> bool:
    """Scale the layer's output channels by a and add c to its bias. False if not foldable."""
    op = layer.op_type
    if op in ("Conv", "ConvTranspose"):
        if layer.input[1] not in inits or (
            len(layer.input) > 2 and layer.input[2] and layer.input[2] not in inits
        ):
            return False
        w = numpy_helper.to_array(inits[layer.input[1]])
        group = _attr(layer, "group", 1)
        if op == "ConvTranspose" and group != 1:
            return False
        axis = 0 if op == "Conv" else 1
        shape = [1] * w.ndim
        shape[axis] = -1
        bias = (
            numpy_helper.to_array(inits[layer.input[2]]) if len(layer.input) > 2 and layer.input[2] else 0.0
        )
        if len(a) != w.shape[axis]:
            return False
        new_w = _new_init(model, layer.input[1], w * a.reshape(shape), w.dtype)
        new_b = _new_init(model, layer.name or "bias", bias * a + c, w.dtype)
        del layer.input[1:]
        layer.input.extend([new_w, new_b])
        return True
    if op == "Gemm":
        if _attr(layer, "transA", 0) or layer.input[1] not in inits:
            return False
        if len(layer.input) > 2 and layer.input[2] and layer.input[2] not in inits:
            return False
        w = numpy_helper.to_array(inits[layer.input[1]])
        trans_b = _attr(layer, "transB", 0)
        if len(a) != (w.shape[0] if trans_b else w.shape[1]):
            return False
        beta = _attr(layer, "beta", 1.0)  # alpha stays: a * (alpha A B + beta C) + c
        scaled = w * (a[:, None] if trans_b else a[None, :])
        bias = (
            beta * numpy_helper.to_array(inits[layer.input[2]])
            if len(layer.input) > 2 and layer.input[2]
            else 0.0
        )
        new_w = _new_init(model, layer.input[1], scaled, w.dtype)
        new_b = _new_init(model, layer.name or "bias", np.broadcast_to(bias * a + c, (len(a),)), w.dtype)
        del layer.input[1:]
        layer.input.extend([new_w, new_b])
        _set_attr(layer, "beta", 1.0)
        return True
    return False
