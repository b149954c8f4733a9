"""Element-wise ops. Activations pass relevance through unchanged (the LRP convention for ReLU,
and the documented choice for Sigmoid, Tanh, Elu, HardSwish, ...); additions of several
activations split it in proportion to each input's contribution."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo
from onnxlrp.ops import EmitContext, carried_inputs, register, spec_for

ZERO_AT_ZERO = {"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Tanh", "HardSwish", "Gelu", "Mish"}


def _activation_zeros(node: onnx.NodeProto, info: GraphInfo) -> str:
    """Relevance passes through: zeros are kept where f(0) = 0 (Clip: when its range holds 0)."""
    if node.op_type in ZERO_AT_ZERO or node.op_type in ("Dropout", "Identity"):
        return "passed"
    if node.op_type == "Clip":
        names = list(node.input[1:3]) + [""] * (3 - len(node.input))
        if any(name and info.const(name) is None for name in names):
            return "never"  # a bound computed from the input
        low, high = (info.const(name) if name else None for name in names)
        if (low is None or low <= 0) and (high is None or high >= 0):
            return "passed"
    return "never"


@register(
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "HardSwish",
    "Softplus",
    "Clip",
    "Dropout",
    "Identity",
    "Gelu",
    "Mish",
    zeros=_activation_zeros,
)
def emit_passthrough(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    return {0: relevance[0]}


GATES = {"Sigmoid", "HardSigmoid"}
SHAPE_ONLY = {"Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"}


def _is_gate(name: str, info: GraphInfo) -> bool:
    """The output of a Sigmoid/HardSigmoid, possibly reshaped (a squeeze-and-excitation gate)."""
    node = info.producer.get(name)
    while node is not None and node.op_type in SHAPE_ONLY:
        node = info.producer.get(node.input[0])
    return node is not None and node.op_type in GATES


def _gated_inputs(node: onnx.NodeProto, info: GraphInfo) -> tuple[int, ...] | None:
    """x * gate(...) of two activations: only the signal x receives relevance ("signal-take-all",
    the LRP convention for multiplicative gates, Arras et al. 2017); otherwise every activation."""
    if node.op_type == "Mul" and all(name in info.dynamic for name in node.input[:2]):
        gates = [_is_gate(name, info) for name in node.input[:2]]
        if gates.count(True) == 1:
            return (gates.index(False),)
    return None


def _arithmetic_zeros(node: onnx.NodeProto, info: GraphInfo) -> str:
    """A sum of activations splits x_k * s ("kept"); x * c and x / c keep zeros, x + c does not."""
    dynamic = carried_inputs(spec_for(node.op_type), node, info)
    if len(dynamic) > 1:
        return "kept"
    return "passed" if node.op_type in ("Mul", "Div") else "never"


@register("Mul", "Div", "Add", "Sub", "Sum", kind="merge", data_inputs=_gated_inputs, zeros=_arithmetic_zeros)
def emit_arithmetic(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """With one input from the data path (x op constant, or x * a sigmoid gate, whose branch gets no
    relevance): relevance passes to it unchanged; a bias Add fused into the linear layer before it is
    such a case. With several (residual Add, Sum, Sub):
    R_k = x_k * R / stab(sum of x_k, eps), eps from the node's epsilon-type rule (see composites),
    each reduced back to its input's broadcast shape."""
    dynamic = carried_inputs(spec_for(node.op_type), node, ctx.info)
    if node.op_type == "Div" and dynamic == [1]:
        raise UnsupportedModelError(
            f"node '{node.name}' (Div): a constant divided by an activation has no LRP rule"
        )
    out_shape = ctx.info.shape(node.output[0])
    if len(dynamic) == 1:  # broadcast copies of the input give their relevance back to it
        return {dynamic[0]: _reduce_to(ctx, relevance[0], ctx.info.shape(node.input[dynamic[0]]), out_shape)}
    if node.op_type not in ("Add", "Sum", "Sub"):
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): a product or quotient of two activations has no LRP rule "
            f"(only x * gate, the gate a Sigmoid/HardSigmoid output, is supported: x takes all relevance)"
        )
    b = ctx.b
    terms = [node.input[i] for i in dynamic]
    if node.op_type == "Sub":
        terms[1] = b.op("Neg", [terms[1]])
    total = node.output[0]
    stabilized = b.stabilize(total, ctx.rule.epsilon, like=relevance[0], rectified=ctx.rectified.get(total))
    s = b.div(relevance[0], stabilized)
    result = {}
    for index, term in zip(dynamic, terms, strict=True):
        share = b.mul(term, s)
        result[index] = _reduce_to(ctx, share, ctx.info.shape(node.input[index]), out_shape)
    return result


def _reduce_to(ctx: EmitContext, tensor: str, shape: tuple, out_shape: tuple) -> str:
    """Sum a broadcast result back to an input's shape."""
    b = ctx.b
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    axes = [i for i, (a, o) in enumerate(zip(padded, out_shape, strict=True)) if a == 1 and o != 1 and i > 0]
    if axes:
        tensor = b.op("ReduceSum", [tensor, b.const(np.array(axes, np.int64))], keepdims=1)
    if len(shape) != len(out_shape):
        tensor = b.op("Reshape", [tensor, b.const(np.array((0, *shape[1:]) if len(shape) else (), np.int64))])
    return tensor
