"""Composites: which rule each rule-taking node gets.

Layer kinds come from the op registry: "conv" (Conv, ConvTranspose), "dense" (Gemm, MatMul),
"avgpool" (AveragePool, GlobalAveragePool, ReduceMean, ReduceSum), "affine" (a BatchNormalization
that was not folded) take a linear-layer rule; "sum" (Add/Sum/Sub of several activations, e.g.
residual connections) takes a rule for sums (see rules.SumRule; an epsilon-type rule stands for Norm
with its epsilon).
Precedence: rules_by_name > rules_by_type > first_rule (first layers) > rule or composite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from onnxlrp.ops import (
    LINEAR_KINDS,
    OFFSET_KIND,
    PRODUCT_KIND,
    RULE_PROTOCOLS,
    SOFTMAX_KIND,
    SUM_KIND,
    AnyRule,
    rule_taking_ops,
    spec_for,
)
from onnxlrp.options import CompileOptions
from onnxlrp.rules import (
    DEFAULT_STABILIZER,
    LRP0,
    AlphaBeta,
    ConstantAttention,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    ProductRule,
    Rule,
    RuleError,
    SoftmaxGradient,
    SoftmaxRule,
    SumRule,
    Uniform,
    ZBox,
    ZPlus,
    make_rule,
    sum_rule,
)

COMPOSITES = (
    "epsilon",
    "epsilon-plus",
    "epsilon-alpha2-beta1",
    "epsilon-plus-flat",
    "epsilon-gamma-box",
    "attnlrp",
    "cp-lrp",
)
TRANSFORMER_COMPOSITES = ("attnlrp", "cp-lrp")


def transformer_rules(
    name: str, *, epsilon: float | None = None, gamma: float | None = None
) -> dict[str, AnyRule]:
    """AttnLRP (LXT's efficient mode): LRP-0 on linear layers (gamma when given), LayerNorm with sigma
    constant, sums and offsets in proportion, softmax by gradient x input, products split evenly;
    CP-LRP: the same with attention weights held constant."""
    lrp0 = LRP0() if epsilon is None else Epsilon(epsilon)
    linear: Rule = lrp0 if gamma is None else Gamma(gamma)
    share = Norm(lrp0.epsilon)
    product = ConstantAttention(lrp0.epsilon) if name == "cp-lrp" else Uniform(lrp0.epsilon)
    return {
        **dict.fromkeys(LINEAR_KINDS, linear),
        "norm": lrp0,
        SUM_KIND: share,
        OFFSET_KIND: share,
        PRODUCT_KIND: product,
        SOFTMAX_KIND: SoftmaxGradient(),
    }


def composite_rules(
    name: str,
    *,
    epsilon: float | None = None,
    gamma: float | None = None,
    low: Any = None,
    high: Any = None,
    stabilizer: float | None = None,
) -> tuple[dict[str, AnyRule], Rule | None]:
    """(rule per layer kind, rule for the first layer or None) of a named composite."""
    key = name.lower().replace("_", "-")
    stab = DEFAULT_STABILIZER if stabilizer is None else stabilizer
    if key in TRANSFORMER_COMPOSITES:
        return transformer_rules(key, epsilon=epsilon, gamma=gamma), None
    if key == "epsilon":
        rule = Epsilon(1.0 if epsilon is None else epsilon)
        return {**dict.fromkeys(LINEAR_KINDS, rule), SUM_KIND: Norm(rule.epsilon)}, None
    if key not in COMPOSITES:
        raise RuleError(f"unknown composite '{name}'; known: {', '.join(COMPOSITES)}")
    dense = Epsilon(1e-6 if epsilon is None else epsilon)
    norm = Epsilon(stab)  # zennit's Norm rule for pooling and free-standing affine layers
    conv: Rule = {
        "epsilon-plus": ZPlus(stab),
        "epsilon-plus-flat": ZPlus(stab),
        "epsilon-alpha2-beta1": AlphaBeta(2.0, 1.0, stab),
        "epsilon-gamma-box": Gamma(0.25 if gamma is None else gamma, stab),
    }[key]
    first: Rule | None = {
        "epsilon-plus-flat": Flat(stab),
        "epsilon-gamma-box": ZBox(-1.0 if low is None else low, 1.0 if high is None else high, stab),
    }.get(key)
    return {"conv": conv, "dense": dense, "avgpool": norm, "affine": norm, SUM_KIND: Norm(stab)}, first


def for_kind(rule: AnyRule, kind: str, what: str) -> AnyRule:
    """``rule`` as the rule protocol of a node kind takes it; a one-line error when it has no meaning
    there (``what`` names the node or op type)."""
    if RULE_PROTOCOLS[kind] is SumRule:
        as_sum = sum_rule(rule) if isinstance(rule, Rule | SumRule) else None
        if as_sum is None:
            raise RuleError(
                f"{what} is a sum of activations: it takes epsilon, lrp0, alphabeta, zplus or a "
                f"rules.SumRule, not {rule.name} (a sum has no weights or input bounds for it to use)"
            )
        return as_sum
    protocol = RULE_PROTOCOLS[kind]
    if protocol is not Rule:
        if not isinstance(rule, protocol):
            raise RuleError(f"{what} is a {kind} node: it takes a {protocol.__name__}, not {rule.name}")
        return rule
    if not isinstance(rule, Rule):
        raise RuleError(f"{what} is a linear layer: it takes a linear-layer rule, not {rule.name}")
    return rule


def _rule(spec: str | AnyRule, params: Mapping[str, Any]) -> AnyRule:
    if isinstance(spec, SumRule | ProductRule | SoftmaxRule):
        return spec
    return make_rule(spec, **params)


def type_rules(rules_by_type: Mapping[str, str | AnyRule], params: Mapping[str, Any]) -> dict[str, AnyRule]:
    """Each op type's rule, checked: the op type must take a rule, of the protocol its kind takes."""
    takers = rule_taking_ops()
    checked = {}
    for op_type, spec in rules_by_type.items():
        if op_type not in takers:
            reason = "takes no rule" if spec_for(op_type) is not None else "is not an op type onnxlrp knows"
            raise RuleError(
                f"rules_by_type: '{op_type}' {reason}; op types that take a rule: {', '.join(takers)}"
            )
        checked[op_type] = for_kind(_rule(spec, params), takers[op_type], f"op type {op_type}")
    return checked


def assign_rules(
    layers: Mapping[str, tuple[str, str]], first_layers: set[str], options: CompileOptions
) -> dict[str, AnyRule]:
    """Map every rule-taking node (node name -> (op type, kind)) to its rule."""
    rule, composite = options.rule, options.composite
    params = options.rule_params()
    if rule is not None and composite is not None:
        raise RuleError("give either a rule or a composite, not both")
    by_kind: dict[str, AnyRule]
    if rule is not None:
        single = make_rule(rule, **params)
        by_kind, first = dict.fromkeys(LINEAR_KINDS, single), None
        # sums of activations get Norm (zennit's choice), with the epsilon of an epsilon-type rule;
        # another rule applies to a sum only when asked for by type or name
        stab = DEFAULT_STABILIZER if options.stabilizer is None else options.stabilizer
        by_kind[SUM_KIND] = Norm(single.epsilon) if isinstance(single, Epsilon) else Norm(stab)
    else:
        composite_params = {k: params[k] for k in ("epsilon", "gamma", "low", "high", "stabilizer")}
        by_kind, first = composite_rules(composite or "epsilon", **composite_params)
    by_kind.setdefault("norm", by_kind["affine"])
    by_kind.setdefault(SOFTMAX_KIND, SoftmaxGradient())
    by_kind.setdefault(PRODUCT_KIND, Uniform(getattr(by_kind["dense"], "epsilon", DEFAULT_STABILIZER)))
    if options.first_rule is not None:
        first = make_rule(options.first_rule, **params)
    by_type = type_rules(options.rules_by_type or {}, params)
    by_name = {k: _rule(v, params) for k, v in (options.rules_by_name or {}).items()}
    unknown = set(by_name) - set(layers)
    if unknown:
        raise RuleError(f"rules_by_name names no node that takes a rule: {', '.join(sorted(unknown))}")
    assigned = {}
    for name, (op_type, kind) in layers.items():
        if kind not in by_kind:
            continue  # x + c outside the transformer composites: relevance passes to x unchanged
        chosen = by_kind[kind]
        if first is not None and name in first_layers and kind in ("conv", "dense"):
            chosen = first
        typed = by_type.get(op_type)
        if typed is not None and isinstance(typed, RULE_PROTOCOLS[kind]):
            chosen = typed
        if name in by_name:
            chosen = for_kind(by_name[name], kind, f"node '{name}' ({op_type})")
        assigned[name] = chosen
    return assigned
