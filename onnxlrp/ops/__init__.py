"""The op registry: one registered emitter per ONNX op type, with the facts the compiler knows
about the op.

An emitter receives the forward node and the relevance arriving at its outputs, writes the nodes that
propagate it, and returns the relevance of its data inputs. Adding an operator = one decorated
function in a module of this package (and its test). `kind` tells the composites how to pick a rule,
through the kind's rule protocol (`RULE_PROTOCOLS`): "conv", "dense", "avgpool", "affine" and "norm"
are linear layers (`rules.Rule`); "sum" (Add/Sub/Sum of several activations) and "offset" (x + a
constant that is no layer's bias) take a rule for sums (`rules.SumRule`); "product" (a product of two
activations) a `rules.ProductRule`; "softmax" a `rules.SoftmaxRule`; the other kinds take none. An op
whose nodes differ in kind (MatMul: dense or product) decides per node with `kind_of`. `zeros` says
whether the relevance an op sends to an input is zero wherever that input is zero (see `ZEROS`); the
compiler uses it to stabilise a ReLU's input more cheaply (analysis.rectified_inputs). `facts` are
named properties of the op (see `FACTS`), queried with `has_fact` and `ops_with`; op types without an
emitter may carry facts too (`declare`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxlrp.builder import GraphBuilder
from onnxlrp.graph import GraphInfo
from onnxlrp.rules import (
    LinearLayer,
    Product,
    ProductRule,
    Rule,
    SoftmaxLayer,
    SoftmaxRule,
    SumOfActivations,
    SumRule,
    WeightMap,
)

LINEAR_KINDS = ("conv", "dense", "avgpool", "affine", "norm")
SUM_KIND = "sum"
OFFSET_KIND = "offset"  # x + c, c carrying no relevance and not a layer's bias: a sum whose c is a sink
PRODUCT_KIND = "product"  # a product of two activations (Q K^T, A V, gated units)
SOFTMAX_KIND = "softmax"
AnyRule = Rule | SumRule | ProductRule | SoftmaxRule
AnyRuleType = type[Rule] | type[SumRule] | type[ProductRule] | type[SoftmaxRule]
# the rule protocol each rule-taking kind of node takes
RULE_PROTOCOLS: dict[str, AnyRuleType] = {
    **dict.fromkeys(LINEAR_KINDS, Rule),
    SUM_KIND: SumRule,
    OFFSET_KIND: SumRule,
    PRODUCT_KIND: ProductRule,
    SOFTMAX_KIND: SoftmaxRule,
}

# Facts an op may carry:
FACTS = {
    "linear_map": "a product with a constant weight (Conv, Gemm, ...): a bias Add after it is fused in",
    "nonnegative": "its output is >= 0 whatever its input",
    "order_preserving": "its output is >= 0 wherever all its inputs are (pools, reshapes, joins, sums)",
    "zero_at_zero": "an element-wise f with f(0) = 0",
    "gate": "a sigmoid-like gate: x * gate(...) gives x all the relevance",
    "shape_only": "moves or relabels values without changing them (Reshape, Squeeze, ...)",
    "pool": "a pooling layer over spatial windows or whole spatial axes",
    "piecewise_linear": "LRP-0 relevance through it equals gradient x input (evaluation's sanity check)",
}


@dataclass
class EmitContext:
    """What an emitter may use: the builder, the forward graph's facts, and the node's rule."""

    b: GraphBuilder
    info: GraphInfo
    rule: AnyRule | None
    nonnegative: set[str]
    bias_adds: dict[str, tuple[np.ndarray, str]]  # linear node output -> (bias array, the Add's output)
    rectified: dict[str, str]  # z -> Relu(z), where the relevance reaching z is zero wherever z < 0
    runtime: str = "portable"  # "onnxruntime": ops only onnxruntime implements are allowed (faster there)

    def attr(self, node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        return self.info.attr(node, name, default)

    def linear_layer(
        self,
        x: str,
        weight: np.ndarray,
        bias: np.ndarray | str | None,
        forward_map: WeightMap,
        transpose_map: WeightMap,
        output: str,
    ) -> LinearLayer:
        """The LinearLayer z = forward(x, weight) + bias with what the analysis knows about x and z."""
        return LinearLayer(
            x,
            weight,
            bias,
            forward_map,
            transpose_map,
            output,
            x_nonnegative=x in self.nonnegative,
            rectified=self.rectified.get(output),
        )

    def propagate(self, layer: LinearLayer, relevance: str) -> str:
        """The node's linear-layer rule applied to `layer` (what a linear layer's emitter returns)."""
        if not isinstance(self.rule, Rule):
            raise TypeError(f"a linear layer needs a linear-layer rule, got {self.rule!r}")
        return self.rule.propagate(self.b, layer, relevance)

    def propagate_sum(self, total: SumOfActivations, relevance: str) -> list[str]:
        """The node's sum rule applied to `total`: the relevance of each term."""
        if not isinstance(self.rule, SumRule):
            raise TypeError(f"a sum of activations needs a rule for sums, got {self.rule!r}")
        return self.rule.propagate(self.b, total, relevance)

    def propagate_product(self, product: Product, relevance: str) -> list[str | None]:
        """The node's product rule applied to ``product``: each factor's relevance (None: none)."""
        if not isinstance(self.rule, ProductRule):
            raise TypeError(f"a product of two activations needs a product rule, got {self.rule!r}")
        return self.rule.propagate(self.b, product, relevance)

    def propagate_softmax(self, layer: SoftmaxLayer, relevance: str) -> str:
        """The node's softmax rule applied to ``layer``: the relevance of the softmax input."""
        if not isinstance(self.rule, SoftmaxRule):
            raise TypeError(f"a softmax needs a softmax rule, got {self.rule!r}")
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


# The kind of one node, where an op's nodes differ (a MatMul of two activations is a product)
KindOf = Callable[[onnx.NodeProto, GraphInfo], str]


@dataclass(frozen=True)
class OpSpec:
    op_type: str
    emit: Emitter
    kind: str
    data_inputs: DataInputs  # None: every input that carries relevance
    zeros: Zeros = "never"
    kind_of: KindOf | None = None

    @property
    def rule_protocol(self) -> AnyRuleType | None:
        """The rule class the op's nodes take (None: it takes no rule)."""
        return RULE_PROTOCOLS.get(self.kind)

    def node_kind(self, node: onnx.NodeProto, info: GraphInfo) -> str:
        """The kind of one node of this op (``kind`` unless the op's nodes differ)."""
        return self.kind if self.kind_of is None else self.kind_of(node, info)


REGISTRY: dict[str, OpSpec] = {}
OP_FACTS: dict[str, frozenset[str]] = {}


def declare(*op_types: str, facts: Iterable[str]) -> None:
    """Record facts (names from FACTS) about op types, registered or not."""
    facts = frozenset(facts)
    if facts - set(FACTS):
        raise ValueError(f"unknown op facts {sorted(facts - set(FACTS))}; known: {', '.join(FACTS)}")
    for op_type in op_types:
        OP_FACTS[op_type] = OP_FACTS.get(op_type, frozenset()) | facts


def register(
    *op_types: str,
    kind: str = "passthrough",
    data_inputs: DataInputs = (0,),
    zeros: Zeros | None = None,
    facts: Iterable[str] = (),
    kind_of: KindOf | None = None,
) -> Callable[[Emitter], Emitter]:
    """Register `emit(ctx, node, relevances) -> {input index: relevance name}` for op types, with
    their facts. `zeros` defaults to "rule" for linear layers and "never" otherwise (see ZEROS)."""
    if zeros is None:
        zeros = "rule" if kind in LINEAR_KINDS else "never"
    if isinstance(zeros, str) and zeros not in ZEROS:
        raise ValueError(f"zeros must be one of {ZEROS} or a callable, got {zeros!r}")
    declare(*op_types, facts=facts)

    def decorate(emit: Emitter) -> Emitter:
        for op_type in op_types:
            REGISTRY[op_type] = OpSpec(op_type, emit, kind, data_inputs, zeros, kind_of)
        return emit

    return decorate


def spec_for(op_type: str) -> OpSpec | None:
    return REGISTRY.get(op_type)


def has_fact(op_type: str, fact: str) -> bool:
    """Whether the op type carries the fact (a name from FACTS)."""
    if fact not in FACTS:
        raise ValueError(f"unknown op fact '{fact}'; known: {', '.join(FACTS)}")
    return fact in OP_FACTS.get(op_type, frozenset())


def ops_with(fact: str) -> frozenset[str]:
    """Every op type that carries the fact."""
    return frozenset(op_type for op_type in OP_FACTS if has_fact(op_type, fact))


def rule_taking_ops() -> dict[str, str]:
    """Op type -> kind, for every registered op whose nodes take a rule."""
    return {op: spec.kind for op, spec in sorted(REGISTRY.items()) if spec.rule_protocol is not None}


def carried_inputs(spec: OpSpec | None, node: onnx.NodeProto, info: GraphInfo) -> list[int]:
    """Indices of the node's inputs that receive relevance."""
    data_inputs = spec.data_inputs if spec is not None else None
    if callable(data_inputs):
        data_inputs = data_inputs(node, info)
    if data_inputs is not None:
        candidates = [i for i in data_inputs if i < len(node.input)]
    else:
        candidates = list(range(len(node.input)))
    return [i for i in candidates if node.input[i] and node.input[i] in info.relevant]


# op types without an emitter that still carry facts (evaluation reads the whole forward graph)
declare("LogSoftmax", "Constant", "Shape", facts=("piecewise_linear",))

# importing the emitter modules fills REGISTRY
from onnxlrp.ops import (  # noqa: E402, F401
    attention,
    elementwise,
    linear,
    maxpool,
    normalization,
    pooling,
    quantization,
    reductions,
    structure,
)
