"""The op registry: one registered emitter per ONNX op type.

An emitter receives the forward node and the relevance arriving at its outputs, writes the nodes that
propagate it, and returns the relevance of its data inputs. Adding an operator = one decorated
function in a module of this package (and its test). `kind` tells the composites how to pick a rule:
"conv", "dense", "avgpool" and "affine" are linear layers that take a rule; the rest do not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from onnxlrp.builder import GraphBuilder
from onnxlrp.graph import GraphInfo
from onnxlrp.rules import Rule

LINEAR_KINDS = ("conv", "dense", "avgpool", "affine")


@dataclass
class EmitContext:
    """What an emitter may use: the builder, the forward graph's facts, and the node's rule."""

    b: GraphBuilder
    info: GraphInfo
    rule: Rule | None
    nonnegative: set[str]
    bias_adds: dict[str, tuple]  # linear node output -> (bias array, the Add's output)

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        return self.info.attr(node, name, default)


Emitter = Callable[[EmitContext, onnx.NodeProto, list], dict]


@dataclass(frozen=True)
class OpSpec:
    op_type: str
    emit: Emitter
    kind: str
    data_inputs: tuple[int, ...] | None  # None: every input that is not a constant


REGISTRY: dict[str, OpSpec] = {}


def register(*op_types: str, kind: str = "passthrough", data_inputs: tuple[int, ...] | None = (0,)):
    """Register `emit(ctx, node, relevances) -> {input index: relevance name}` for op types."""

    def decorate(emit: Emitter) -> Emitter:
        for op_type in op_types:
            REGISTRY[op_type] = OpSpec(op_type, emit, kind, data_inputs)
        return emit

    return decorate


def spec_for(op_type: str) -> OpSpec | None:
    return REGISTRY.get(op_type)


def carried_inputs(spec: OpSpec | None, node: onnx.NodeProto, info: GraphInfo) -> list[int]:
    """Indices of the node's inputs that receive relevance."""
    if spec is not None and spec.data_inputs is not None:
        candidates = [i for i in spec.data_inputs if i < len(node.input)]
    else:
        candidates = list(range(len(node.input)))
    return [i for i in candidates if node.input[i] and node.input[i] in info.dynamic]


# importing the emitter modules fills REGISTRY
from onnxlrp.ops import elementwise, linear, pooling, structure  # noqa: E402, F401
