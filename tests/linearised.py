"""Gradient x input of an ONNX model's *linearised* forward pass, by torch autograd in float64.

The reference for LRP-0 on whole exported networks. The ONNX graph is re-run in torch, float64, with
every decision the float32 forward took pinned from onnxruntime's own run of the same file:

- ReLU gates, clipping and every other element-wise activation f: y = x * c with c = f(x) / x taken
  from onnxruntime's float32 tensors (0 where x = 0), a constant. For ReLU nets this is the ordinary
  gradient with the float32 gates; for smooth activations it is the identity rule (LXT's f(x)/x).
- max pooling: the winners are onnxruntime's float32 argmax (first maximum in row-major order);
- a Sigmoid/HardSigmoid read only by products is a gate: its float32 value, a constant;
- an activation's QuantizeLinear -> DequantizeLinear round trip: like an activation, y = x * c;
- Instance/GroupNormalization: the float32 run's per-sample statistics, held constant.

For such a piecewise-linear network LRP-0 (relevance through activations unchanged, gates as
weights, winner-take-all max pooling, residual sums proportional) equals gradient x input of the
target logit exactly, so float64 autograd on the pinned graph is an independent check of the
compiled relevance graph. Only what the zoo architectures need is implemented.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

ACTIVATIONS = {"Relu", "Clip", "LeakyRelu", "HardSwish", "Elu", "Tanh", "Softplus", "Gelu", "Selu", "Mish"}
GATES = {"Sigmoid", "HardSigmoid"}
SHAPE_ONLY = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
PASS_THROUGH = {"Identity", "Dropout", "Cast"}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def ort_tensors(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the model's float32 onnxruntime run (inputs, initializers and node outputs)."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    known = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in known:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feed), strict=True))
    values[session.get_inputs()[0].name] = x
    for init in model.graph.initializer:
        values[init.name] = numpy_helper.to_array(init)
    return values


def _pool_args(attrs: dict, rank: int) -> tuple[list, list, list, list]:
    kernel = list(attrs["kernel_shape"])
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * 2 * rank))
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise NotImplementedError("auto_pad SAME")
    return kernel, strides, dilations, pads


def _pad_spatial(x: torch.Tensor, pads: list, value: float = 0.0) -> torch.Tensor:
    rank = len(pads) // 2
    flat = []
    for i in reversed(range(rank)):
        flat += [pads[i], pads[rank + i]]
    return F.pad(x, flat, value=value) if any(flat) else x


def _conv(x, w, b, attrs):
    rank = w.ndim - 2
    _, strides, dilations, pads = _pool_args({"kernel_shape": w.shape[2:], **attrs}, rank)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return conv(_pad_spatial(x, pads), w, b, strides, 0, dilations, attrs.get("group", 1))


def _max_pool(x: torch.Tensor, x32: np.ndarray, attrs: dict) -> torch.Tensor:
    """Winners from the float32 input, applied to the float64 one."""
    kernel, strides, dilations, pads = _pool_args(attrs, x.ndim - 2)
    if pads[: len(kernel)] != pads[len(kernel) :]:
        raise NotImplementedError("asymmetric max-pool padding")
    _, index = F.max_pool2d(
        torch.from_numpy(x32).double(),
        kernel,
        strides,
        pads[: len(kernel)],
        dilations,
        ceil_mode=bool(attrs.get("ceil_mode", 0)),
        return_indices=True,
    )
    return x.flatten(2).gather(2, index.flatten(2)).reshape(index.shape)


def _reduce_axes(node, attrs, values, ndim) -> list[int]:
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = values[node.input[1]].tolist()
    return [a % ndim for a in (axes if axes is not None else range(ndim))]


def _slice(x: torch.Tensor, node, values) -> torch.Tensor:
    starts, ends = values[node.input[1]], values[node.input[2]]
    axes = values[node.input[3]] if len(node.input) > 3 and node.input[3] else range(len(starts))
    steps = values[node.input[4]] if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step <= 0:
            raise NotImplementedError("negative Slice steps")
        index[int(axis)] = slice(int(start), int(end), int(step))  # ONNX clamps as Python does
    return x[tuple(index)]


def linearised_forward(model: onnx.ModelProto, x32: np.ndarray, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The float64 forward pass with the float32 run's decisions pinned; returns every tensor."""
    ort_values = ort_tensors(model, x32)
    graph = model.graph
    input_name = next(i.name for i in graph.input if i.name not in {t.name for t in graph.initializer})
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    values: dict[str, torch.Tensor | np.ndarray] = {input_name: x}
    dynamic = {input_name}

    def value(name: str):
        if name in values:
            return values[name]
        constant = ort_values[name]
        return torch.from_numpy(constant.astype(np.float64)) if constant.dtype.kind == "f" else constant

    quantized_from: dict[str, str] = {}  # QuantizeLinear output -> its float input
    for node in graph.node:
        attrs = _attrs(node)
        outputs32 = [ort_values[o] for o in node.output if o]
        op = node.op_type
        if op == "QuantizeLinear" and node.input[0] in dynamic:
            values[node.output[0]] = values[node.input[0]]  # the round trip is resolved at the DQ
            quantized_from[node.output[0]] = node.input[0]
            dynamic.add(node.output[0])
            continue
        if (
            not any(name in dynamic for name in node.input)
            or not isinstance(outputs32[0], np.ndarray)
            or outputs32[0].dtype.kind != "f"
        ):
            continue  # constants, shape arithmetic, labels and maps: onnxruntime's values
        ins = [value(name) if name else None for name in node.input]
        if op in ACTIVATIONS or op == "DequantizeLinear":
            # a Q -> DQ round trip of an activation is one more element-wise function of it
            x_in = ort_values[quantized_from.get(node.input[0], node.input[0])]
            y32 = outputs32[0]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(x_in != 0, y32.astype(np.float64) / x_in, 0.0)
            out = [ins[0] * torch.from_numpy(ratio)]
        elif op in GATES:
            if not all(c.op_type == "Mul" for c in consumers.get(node.output[0], [])):
                raise NotImplementedError(f"{op} {node.name} is not a gate")
            continue  # a constant
        elif op in PASS_THROUGH:
            out = [ins[0]]
        elif op == "Conv":
            out = [_conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, attrs)]
        elif op == "Gemm":
            a = ins[0].T if attrs.get("transA", 0) else ins[0]
            b = ins[1].T if attrs.get("transB", 0) else ins[1]
            y = attrs.get("alpha", 1.0) * (a @ b)
            out = [y + attrs.get("beta", 1.0) * ins[2] if len(ins) > 2 and ins[2] is not None else y]
        elif op == "MatMul":
            out = [ins[0] @ ins[1]]
        elif op in ("Add", "Sub", "Mul", "Div"):
            out = [
                {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](ins[0], ins[1])
            ]
        elif op == "Sum":
            out = [sum(ins[1:], ins[0])]
        elif op == "BatchNormalization":
            shape = (1, -1) + (1,) * (ins[0].ndim - 2)
            scale = ins[1] / torch.sqrt(ins[4] + attrs.get("epsilon", 1e-5))
            out = [(ins[0] - ins[3].reshape(shape)) * scale.reshape(shape) + ins[2].reshape(shape)]
        elif op in ("InstanceNormalization", "GroupNormalization"):
            # the per-sample statistics of the float32 input, held constant
            x32 = ort_values[node.input[0]].astype(np.float64)
            groups = x32.shape[1] if op == "InstanceNormalization" else attrs["num_groups"]
            grouped = x32.reshape(x32.shape[0], groups, -1)
            mean, var = grouped.mean(-1, keepdims=True), grouped.var(-1, keepdims=True)
            inverse = 1 / np.sqrt(var + attrs.get("epsilon", 1e-5))
            repeat = x32.shape[1] // groups
            shape = (x32.shape[0], x32.shape[1]) + (1,) * (x32.ndim - 2)
            mean_c = torch.from_numpy(np.repeat(mean, repeat, axis=1).reshape(shape))
            inverse_c = torch.from_numpy(np.repeat(inverse, repeat, axis=1).reshape(shape))
            channel = (1, -1) + (1,) * (x32.ndim - 2)
            out = [(ins[0] - mean_c) * inverse_c * ins[1].reshape(channel) + ins[2].reshape(channel)]
        elif op == "MaxPool":
            out = [_max_pool(ins[0], ort_values[node.input[0]], attrs)]
        elif op == "AveragePool":
            kernel, strides, _, pads = _pool_args(attrs, ins[0].ndim - 2)
            if pads[: len(kernel)] != pads[len(kernel) :]:
                raise NotImplementedError("asymmetric average-pool padding")
            out = [
                F.avg_pool2d(
                    ins[0],
                    kernel,
                    strides,
                    pads[: len(kernel)],
                    ceil_mode=bool(attrs.get("ceil_mode", 0)),
                    count_include_pad=bool(attrs.get("count_include_pad", 0)),
                )
            ]
        elif op == "GlobalAveragePool":
            out = [ins[0].mean(dim=tuple(range(2, ins[0].ndim)), keepdim=True)]
        elif op in ("ReduceMean", "ReduceSum"):
            axes = _reduce_axes(node, attrs, ort_values, ins[0].ndim)
            reduce = torch.mean if op == "ReduceMean" else torch.sum
            out = [reduce(ins[0], dim=tuple(axes), keepdim=bool(attrs.get("keepdims", 1)))]
        elif op in ("GlobalMaxPool", "ReduceMax"):
            axes = list(range(2, ins[0].ndim)) if op == "GlobalMaxPool" else None
            axes = axes or _reduce_axes(node, attrs, ort_values, ins[0].ndim)
            keep = [a for a in range(ins[0].ndim) if a not in axes]
            order = keep + axes
            flat = ins[0].permute(order).reshape(*[ins[0].shape[a] for a in keep], -1)
            flat32 = torch.from_numpy(ort_values[node.input[0]].transpose(order).reshape(flat.shape))
            index = flat32.argmax(-1, keepdim=True)  # the first maximum
            out = [flat.gather(-1, index).reshape(outputs32[0].shape)]
        elif op in SHAPE_ONLY:
            out = [ins[0].reshape(outputs32[0].shape)]
        elif op == "Transpose":
            out = [ins[0].permute(attrs.get("perm", list(reversed(range(ins[0].ndim)))))]
        elif op == "Concat":
            out = [torch.cat([t if torch.is_tensor(t) else torch.from_numpy(t) for t in ins], attrs["axis"])]
        elif op == "Split":
            sizes = [o.shape[attrs.get("axis", 0)] for o in outputs32]
            out = list(torch.split(ins[0], sizes, attrs.get("axis", 0)))
        elif op == "Slice":
            out = [_slice(ins[0], node, ort_values)]
        elif op == "Pad":
            if attrs.get("mode", b"constant") not in (b"constant", "constant"):
                raise NotImplementedError("non-constant Pad")
            pads = ort_values[node.input[1]].tolist()
            constant = float(ort_values[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0.0
            if pads[:2] + pads[ins[0].ndim : ins[0].ndim + 2] != [0, 0, 0, 0]:
                raise NotImplementedError("Pad over batch or channels")
            rank = ins[0].ndim - 2
            spatial = pads[2 : 2 + rank] + pads[ins[0].ndim + 2 :]
            out = [_pad_spatial(ins[0], spatial, constant)]
        elif op in ("Softmax", "LogSoftmax"):
            continue  # the explained tensor is its input
        else:
            raise NotImplementedError(f"{op} ({node.name})")
        for name, tensor in zip(node.output, out, strict=False):
            values[name] = tensor
            dynamic.add(name)
    return values


def explained_name(model: onnx.ModelProto) -> str:
    """The first output, or the input of the Softmax/Identity chain producing it."""
    producer = {o: n for n in model.graph.node for o in n.output}
    name = model.graph.output[0].name
    while name in producer and producer[name].op_type in ("Softmax", "LogSoftmax", "Identity"):
        name = producer[name].input[0]
    return name


def gradient_x_input(model: onnx.ModelProto, x32: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(relevance, logits) of one sample (batch 1): x * d logit[target] / dx on the linearised
    float64 graph, i.e. LRP-0 seeded with the target logit."""
    x = torch.from_numpy(x32.astype(np.float64)).requires_grad_(True)
    logits = linearised_forward(model, x32, x)[explained_name(model)]
    logits.reshape(-1)[target].backward()
    return (x * x.grad).detach().numpy(), logits.detach().numpy()
