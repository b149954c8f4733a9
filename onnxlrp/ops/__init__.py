"""The op registry: one registered emitter per ONNX op type.

An emitter receives the forward node and the relevance arriving at its outputs, writes the nodes that
propagate it, and returns the relevance of its data inputs. Adding an operator = one decorated
function in a module of this package (and its test). `kind` tells the composites how to pick a rule:
"conv", "dense", "avgpool" and "affine" are linear layers that take a rule; the rest do not.
`zeros` says whether the relevance an op sends to an input is zero wherever that input is zero (see
`ZEROS`); the compiler uses it to stabilise a ReLU's input more cheaply (compiler.rectified_inputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from onnxlrp.builder import GraphBuilder
from onnxlrp.graph import GraphInfo
from onnxlrp.rules import LinearLayer, Rule

LINEAR_KINDS = ("conv", "dense", "avgpool", "affine")


@dataclass
class EmitContext:
    """What an emitter may use: the builder, the forward graph's facts, and the node's rule."""

    b: GraphBuilder
    info: GraphInfo
    rule: Rule | None
    nonnegative: set[str]
    bias_adds: dict[str, tuple]  # linear node output -> (bias array, the Add's output)
    rectified: dict[str, str]  # z -> Relu(z), where the relevance reaching z is zero wherever z < 0

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        return self.info.attr(node, name, default)

    def propagate(self, layer: LinearLayer, relevance: str) -> str:
        """The node's rule applied to `layer` (what a linear layer's emitter returns)."""
        layer.rectified = self.rectified.get(layer.output)
        return self.rule.propagate(self.b, layer, relevance)


Emitter = Callable[[EmitContext, onnx.NodeProto, list], dict]


# How an op's input relevance relates to the input's zeros:
#   "kept":   zero wherever the input is zero (R_x = x * something), whatever arrives at the outputs;
#   "passed": the same, provided the relevance at each output is zero wherever that output is zero
#             (element-wise f with f(0) = 0, max pooling, moving values around);
#   "rule":   a linear layer: "kept" if its rule multiplies by x (Rule.keeps_zeros);
#   "never":  no such guarantee (the safe default).
# A callable(node, info) returns one of these for a given node.
ZEROS = ("kept", "passed", "rule", "never")
Zeros = str | Callable[[onnx.NodeProto, GraphInfo], str]
# The inputs that receive relevance: indices, None for every non-constant input, or a callable(node,
# info) returning indices or None for a given node.
DataInputs = tuple[int, ...] | None | Callable[[onnx.NodeProto, GraphInfo], tuple[int, ...] | None]


@dataclass(frozen=True)
class OpSpec:
    op_type: str
    emit: Emitter
    kind: str
    data_inputs: DataInputs  # None: every input that is not a constant
    zeros: Zeros = "never"


REGISTRY: dict[str, OpSpec] = {}


def register(
    *op_types: str,
    kind: str = "passthrough",
    data_inputs: DataInputs = (0,),
    zeros: Zeros | None = None,
):
    """Register `emit(ctx, node, relevances) -> {input index: relevance name}` for op types.
    `zeros` defaults to "rule" for linear layers and "never" otherwise (see ZEROS)."""
    if zeros is None:
        zeros = "rule" if kind in LINEAR_KINDS else "never"
    if isinstance(zeros, str) and zeros not in ZEROS:
        raise ValueError(f"zeros must be one of {ZEROS} or a callable, got {zeros!r}")

    def decorate(emit: Emitter) -> Emitter:
        for op_type in op_types:
            REGISTRY[op_type] = OpSpec(op_type, emit, kind, data_inputs, zeros)
        return emit

    return decorate


def spec_for(op_type: str) -> OpSpec | None:
    return REGISTRY.get(op_type)


def carried_inputs(spec: OpSpec | None, node: onnx.NodeProto, info: GraphInfo) -> list[int]:
    """Indices of the node's inputs that receive relevance."""
    data_inputs = spec.data_inputs if spec is not None else None
    if callable(data_inputs):
        data_inputs = data_inputs(node, info)
    if data_inputs is not None:
        candidates = [i for i in data_inputs if i < len(node.input)]
    else:
        candidates = list(range(len(node.input)))
    return [i for i in candidates if node.input[i] and node.input[i] in info.dynamic]


# importing the emitter modules fills REGISTRY
from onnxlrp.ops import elementwise, linear, pooling, reductions, structure  # noqa: E402, F401
