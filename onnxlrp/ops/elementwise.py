"""Element-wise ops. Activations pass relevance through unchanged (the LRP convention for ReLU,
and the documented choice for Sigmoid, Tanh, Elu, HardSwish, ...); additions of several
activations split it in proportion to each input's contribution."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo
from onnxlrp.ops import SUM_KIND, EmitContext, carried_inputs, has_fact, register, spec_for
from onnxlrp.rules import SumOfActivations


def _activation_zeros(node: onnx.NodeProto, info: GraphInfo) -> str:
    """Relevance passes through: zeros are kept where f(0) = 0 (Clip: when its range holds 0)."""
    if has_fact(node.op_type, "zero_at_zero"):
        return "passed"
    if node.op_type == "Clip":
        names = list(node.input[1:3]) + [""] * (3 - len(node.input))
        if any(name and info.const(name) is None for name in names):
            return "never"  # a bound computed from the input
        low, high = (info.const(name) if name else None for name in names)
        if (low is None or low <= 0) and (high is None or high >= 0):
            return "passed"
    return "never"


@register("Relu", zeros=_activation_zeros, facts=("nonnegative", "zero_at_zero", "piecewise_linear"))
@register("LeakyRelu", "PRelu", zeros=_activation_zeros, facts=("zero_at_zero", "piecewise_linear"))
@register(
    "Elu",
    "Selu",
    "Celu",
    "Tanh",
    "HardSwish",
    "Gelu",
    "Mish",
    zeros=_activation_zeros,
    facts=("zero_at_zero",),
)
@register("Sigmoid", "HardSigmoid", zeros=_activation_zeros, facts=("nonnegative", "gate"))
@register("Softplus", zeros=_activation_zeros, facts=("nonnegative",))
@register("Clip", zeros=_activation_zeros)
@register("Dropout", zeros=_activation_zeros, facts=("zero_at_zero", "order_preserving", "piecewise_linear"))
@register(
    "Identity",
    zeros=_activation_zeros,
    facts=("zero_at_zero", "order_preserving", "shape_only", "piecewise_linear"),
)
def emit_passthrough(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    return {0: relevance[0]}


def _is_gate(name: str, info: GraphInfo) -> bool:
    """The output of a Sigmoid/HardSigmoid, possibly reshaped (a squeeze-and-excitation gate)."""
    node = info.producer.get(name)
    while node is not None and has_fact(node.op_type, "shape_only"):
        node = info.producer.get(node.input[0])
    return node is not None and has_fact(node.op_type, "gate")


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


@register(
    "Add",
    kind=SUM_KIND,
    data_inputs=None,
    zeros=_arithmetic_zeros,
    facts=("piecewise_linear", "order_preserving"),
)
@register("Sub", kind=SUM_KIND, data_inputs=None, zeros=_arithmetic_zeros, facts=("piecewise_linear",))
@register("Sum", kind=SUM_KIND, data_inputs=None, zeros=_arithmetic_zeros, facts=("order_preserving",))
@register(
    "Mul",
    "Div",
    kind="merge",
    data_inputs=_gated_inputs,
    zeros=_arithmetic_zeros,
    facts=("piecewise_linear",),
)
def emit_arithmetic(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """With one input from the data path (x op constant, or x * a sigmoid gate, whose branch gets no
    relevance): relevance passes to it unchanged; a bias Add fused into the linear layer before it is
    such a case. With several (residual Add, Sum, Sub):
    the node's rule for sums (rules.SumRule) splits it among the terms, each share reduced back to
    its input's broadcast shape."""
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
    terms = [node.input[i] for i in dynamic]
    if node.op_type == "Sub":
        terms[1] = ctx.b.op("Neg", [terms[1]])
    total = SumOfActivations(terms, node.output[0], ctx.rectified.get(node.output[0]))
    shares = ctx.propagate_sum(total, relevance[0])
    return {
        index: _reduce_to(ctx, share, ctx.info.shape(node.input[index]), out_shape)
        for index, share in zip(dynamic, shares, strict=True)
    }


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
