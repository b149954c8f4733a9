"""Composites: which rule each linear layer gets.

Layer kinds come from the op registry: "conv" (Conv, ConvTranspose), "dense" (Gemm, MatMul),
"avgpool" (AveragePool, GlobalAveragePool), "affine" (a BatchNormalization that was not folded) and
"sum" (Add/Sum/Sub of several activations, e.g. residual connections).
Precedence: rules_by_name > rules_by_type > first_rule (first layers) > rule or composite.
"""

from __future__ import annotations

from collections.abc import Mapping

from onnxlrp.rules import (
    DEFAULT_STABILIZER,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Rule,
    ZBox,
    ZPlus,
    make_rule,
)

COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-plus-flat", "epsilon-gamma-box")


def composite_rules(
    name: str,
    *,
    epsilon: float | None = None,
    gamma: float | None = None,
    low=None,
    high=None,
    stabilizer: float | None = None,
) -> tuple[dict[str, Rule], Rule | None]:
    """(rule per layer kind, rule for the first layer or None) of a named composite."""
    key = name.lower().replace("_", "-")
    stab = DEFAULT_STABILIZER if stabilizer is None else stabilizer
    if key == "epsilon":
        rule = Epsilon(1.0 if epsilon is None else epsilon)
        return {"conv": rule, "dense": rule, "avgpool": rule, "affine": rule, "sum": rule}, None
    if key not in COMPOSITES:
        raise ValueError(f"unknown composite '{name}'; known: {', '.join(COMPOSITES)}")
    dense = Epsilon(1e-6 if epsilon is None else epsilon)
    norm = Epsilon(stab)  # zennit's Norm rule for pooling and free-standing affine layers
    conv = {
        "epsilon-plus": ZPlus(stab),
        "epsilon-plus-flat": ZPlus(stab),
        "epsilon-alpha2-beta1": AlphaBeta(2.0, 1.0, stab),
        "epsilon-gamma-box": Gamma(0.25 if gamma is None else gamma, stab),
    }[key]
    first = {
        "epsilon-plus-flat": Flat(stab),
        "epsilon-gamma-box": ZBox(-1.0 if low is None else low, 1.0 if high is None else high, stab),
    }.get(key)
    return {"conv": conv, "dense": dense, "avgpool": norm, "affine": norm, "sum": norm}, first


def assign_rules(
    layers: Mapping[str, tuple[str, str]],
    first_layers: set[str],
    *,
    rule: str | Rule | None = None,
    composite: str | None = None,
    first_rule: str | Rule | None = None,
    rules_by_type: Mapping[str, str | Rule] | None = None,
    rules_by_name: Mapping[str, str | Rule] | None = None,
    **params,
) -> dict[str, Rule]:
    """Map every linear layer (node name -> (op type, kind)) to its rule."""
    if rule is not None and composite is not None:
        raise ValueError("give either a rule or a composite, not both")
    if rule is not None:
        single = make_rule(rule, **params)
        by_kind, first = dict.fromkeys(("conv", "dense", "avgpool", "affine"), single), None
        # a sum of activations has no weights: epsilon-type rules apply as they are, others as Norm
        stab = DEFAULT_STABILIZER if params.get("stabilizer") is None else params["stabilizer"]
        by_kind["sum"] = single if isinstance(single, Epsilon) else Epsilon(stab)
    else:
        composite_params = {k: params.get(k) for k in ("epsilon", "gamma", "low", "high", "stabilizer")}
        by_kind, first = composite_rules(composite or "epsilon", **composite_params)
    if first_rule is not None:
        first = make_rule(first_rule, **params)
    by_type = {k: make_rule(v, **params) for k, v in (rules_by_type or {}).items()}
    by_name = {k: make_rule(v, **params) for k, v in (rules_by_name or {}).items()}
    unknown = set(by_name) - set(layers)
    if unknown:
        raise ValueError(f"rules_by_name names no linear layer: {', '.join(sorted(unknown))}")
    assigned = {}
    for name, (op_type, kind) in layers.items():
        chosen = by_kind[kind]
        if first is not None and name in first_layers and kind in ("conv", "dense"):
            chosen = first
        chosen = by_type.get(op_type, chosen)
        assigned[name] = by_name.get(name, chosen)
    return assigned
