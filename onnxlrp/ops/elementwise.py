"""Element-wise ops. Activations pass relevance through unchanged (the LRP convention for ReLU,
and the documented choice for Sigmoid, Tanh, Elu, HardSwish, ...); additions of several
activations split it in proportion to each input's contribution."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.graph import GraphInfo
from onnxlrp.ops import (
    OFFSET_KIND,
    PRODUCT_KIND,
    SUM_KIND,
    EmitContext,
    carried_inputs,
    has_fact,
    register,
    spec_for,
)
from onnxlrp.rules import SumOfActivations, SumRule

# ops through which a tensor stays a function of its inputs alone, position by position or along
# whole axes: what a non-linearity (GELU, SiLU) or a normaliser (x / sigma(x)) is written with
_FUNCTION_OPS = {
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Erf", "Tanh", "Sigmoid", "HardSigmoid",
    "Exp", "Log", "Neg", "Abs", "Relu", "Softplus", "Cast", "Identity",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2",
}  # fmt: skip
_SCALINGS = {"Mul", "Div", "Neg", "Identity"}


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


def _scaled_sources(name: str, info: GraphInfo) -> set[str]:
    """The tensor and those it is a constant multiple of (x in 0.5 * x)."""
    sources = {name}
    node = info.producer.get(name)
    while node is not None and node.op_type in _SCALINGS:
        carried = [i for i in node.input if i in info.relevant]
        if len(carried) != 1 or (node.op_type == "Div" and node.input[0] != carried[0]):
            break
        sources.add(carried[0])
        node = info.producer.get(carried[0])
    return sources


def _computed_from(name: str, info: GraphInfo, limit: int = 64) -> set[str]:
    """Tensors ``name`` is computed from through element-wise ops and reductions only."""
    seen: set[str] = set()
    frontier = [name]
    while frontier and len(seen) < limit:
        tensor = frontier.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        node = info.producer.get(tensor)
        if node is not None and node.op_type in _FUNCTION_OPS:
            frontier.extend(i for i in node.input if i in info.relevant)
    return seen


def _signal_index(node: onnx.NodeProto, info: GraphInfo) -> int | None:
    """For x * g or x / g of two activations where g is a gate or a function of x alone, x's index.

    x * g(x) (GELU, SiLU) is an element-wise non-linearity and x / sigma(x) a normaliser: x takes all
    the relevance (identity on the whole function; AttnLRP's rule for GELU and RMSNorm, LayerNorm's
    sigma held constant). x * sigmoid(...) is a gate: "signal-take-all" (Arras et al. 2017)."""
    a, c = node.input[0], node.input[1]
    candidates = ((0, a, c), (1, c, a)) if node.op_type == "Mul" else ((0, a, c),)
    gates = [_is_gate(name, info) for name in (a, c)]
    if node.op_type == "Mul" and gates.count(True) == 1:
        return gates.index(False)
    for index, signal, other in candidates:
        if _scaled_sources(signal, info) & _computed_from(other, info):
            return index
    return None


def _carried(node: onnx.NodeProto, info: GraphInfo) -> tuple[int, ...] | None:
    """The inputs of a Mul/Div that receive relevance: only the signal of a gate or function of it;
    otherwise every input that carries relevance."""
    if node.op_type in ("Mul", "Div") and all(name in info.relevant for name in node.input[:2]):
        signal = _signal_index(node, info)
        if signal is not None:
            return (signal,)
    return None


def _arithmetic_kind(node: onnx.NodeProto, info: GraphInfo) -> str:
    """sum (several activations), offset (x + c, c no layer's bias), product, or merge (x op c)."""
    from onnxlrp.analysis import fused_bias

    carried = carried_inputs(spec_for(node.op_type), node, info)
    if node.op_type in ("Mul", "Div"):
        return PRODUCT_KIND if node.op_type == "Mul" and len(carried) > 1 else "merge"
    if len(carried) > 1:
        return SUM_KIND
    if len(node.input) > 1 and fused_bias(info, node) is None:
        return OFFSET_KIND
    return "merge"


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
    kind_of=_arithmetic_kind,
)
@register(
    "Sub",
    kind=SUM_KIND,
    data_inputs=None,
    zeros=_arithmetic_zeros,
    facts=("piecewise_linear",),
    kind_of=_arithmetic_kind,
)
@register(
    "Sum",
    kind=SUM_KIND,
    data_inputs=None,
    zeros=_arithmetic_zeros,
    facts=("order_preserving",),
    kind_of=_arithmetic_kind,
)
@register(
    "Mul",
    "Div",
    kind="merge",
    data_inputs=_carried,
    zeros=_arithmetic_zeros,
    facts=("piecewise_linear",),
    kind_of=_arithmetic_kind,
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
    offset = isinstance(ctx.rule, SumRule) and len(dynamic) == 1
    if len(dynamic) == 1 and not offset:  # broadcast copies of the input give their relevance back to it
        return {dynamic[0]: reduce_to(ctx, relevance[0], ctx.info.shape(node.input[dynamic[0]]), out_shape)}
    if node.op_type == "Mul":
        from onnxlrp.ops.attention import emit_product  # attention builds on this module

        return emit_product(ctx, node, relevance)
    if node.op_type == "Div":
        raise UnsupportedModelError(
            f"node '{node.name}' (Div): a quotient of two activations has no LRP rule (only x / f(x), a "
            "normaliser computed from x alone, is supported: x takes all relevance)"
        )
    # a sum of activations; or x + c under a rule for offsets: c's share is relevance it absorbs
    # (kept as the relevance of c, which `expose` can report), as a bias does in a linear layer
    indices = list(range(len(node.input))) if offset else dynamic
    terms = [node.input[i] for i in indices]
    if node.op_type == "Sub":
        terms[1] = ctx.b.op("Neg", [terms[1]])
    total = SumOfActivations(terms, node.output[0], ctx.rectified.get(node.output[0]))
    shares = ctx.propagate_sum(total, relevance[0])
    return {
        index: reduce_to(ctx, share, ctx.info.shape(node.input[index]), out_shape)
        for index, share in zip(indices, shares, strict=True)
    }


def reduce_to(ctx: EmitContext, tensor: str, shape: tuple, out_shape: tuple) -> str:
    """Sum a broadcast result back to an input's shape."""
    b = ctx.b
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    axes = [i for i, (a, o) in enumerate(zip(padded, out_shape, strict=True)) if a == 1 and o != 1 and i > 0]
    if axes:
        tensor = b.op("ReduceSum", [tensor, b.const(np.array(axes, np.int64))], keepdims=1)
    if len(shape) != len(out_shape):
        tensor = b.op("Reshape", [tensor, b.const(np.array((0, *shape[1:]) if len(shape) else (), np.int64))])
    return tensor
