"""Element-wise ops. Activations pass relevance through unchanged (the LRP convention for ReLU,
and the documented choice for Sigmoid, Tanh, Elu, HardSwish, ...); additions of several
activations split it in proportion to each input's contribution."""

from __future__ import annotations

import numpy as np
import onnx

from onnxlrp.errors import UnsupportedModelError
from onnxlrp.ops import EmitContext, carried_inputs, register, spec_for


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
)
def emit_passthrough(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    return {0: relevance[0]}


@register("Mul", "Div", "Add", "Sub", "Sum", kind="merge", data_inputs=None)
def emit_arithmetic(ctx: EmitContext, node: onnx.NodeProto, relevance: list) -> dict:
    """With one input from the data path (x op constant): relevance passes to it unchanged; a bias
    Add fused into the linear layer before it is such a case. With several (residual Add, Sum, Sub):
    R_k = x_k * R / stab(sum of x_k, eps), eps from the node's epsilon-type rule (see composites),
    each reduced back to its input's broadcast shape."""
    dynamic = carried_inputs(spec_for(node.op_type), node, ctx.info)
    if node.op_type == "Div" and dynamic == [1]:
        raise UnsupportedModelError(
            f"node '{node.name}' (Div): a constant divided by an activation has no LRP rule"
        )
    if len(dynamic) == 1:
        return {dynamic[0]: relevance[0]}
    if node.op_type not in ("Add", "Sum", "Sub"):
        raise UnsupportedModelError(
            f"node '{node.name}' ({node.op_type}): a product or quotient of two activations has no LRP rule"
        )
    b = ctx.b
    terms = [node.input[i] for i in dynamic]
    if node.op_type == "Sub":
        terms[1] = b.op("Neg", [terms[1]])
    s = b.div(relevance[0], b.stabilize(node.output[0], ctx.rule.epsilon, like=relevance[0]))
    out_shape = ctx.info.shape(node.output[0])
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
