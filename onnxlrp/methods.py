"""Method specs: the one spelling of LRP rules, composites and baselines that every command accepts.

    epsilon  eps  epsilon:0.25  lrp0  zplus  z+  gamma:0.5  alphabeta:3,2  alphabeta:3  zbox:-1,1 ...
    composite:epsilon-plus  composite:epsilon-plus:0.1  epsilon-plus (a bare composite name)
    gradxinput  random (the evaluation's baselines)

Rule names and their parameters come from ``rules.RULES`` / ``rules.parse_rule``, composite names from
``composites.COMPOSITES``; ``parse_method`` turns a spec into keyword arguments of ``onnxlrp.compile``
and a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxlrp.composites import COMPOSITES
from onnxlrp.rules import RULES, AlphaBeta, Epsilon, Gamma, Rule, ZBox, parse_rule

__all__ = ["BASELINES", "DEFAULT_METHODS", "Method", "parse_method"]

DEFAULT_METHODS = (
    "epsilon:0.01",
    "epsilon:0.1",
    "epsilon:1",
    "alphabeta:2,1",
    "alphabeta:3,2",
    "composite:epsilon-plus",
    "composite:epsilon-gamma-box",
    "lrp0",
)
BASELINES = ("gradxinput", "random")
_GRADXINPUT = ("gradxinput", "gradient-x-input", "gxi", "input-x-gradient")
_ALIASES = {"lrp-0": "lrp0"}
_PARAMS: dict[type[Rule], tuple[str, ...]] = {
    Epsilon: ("epsilon",),
    AlphaBeta: ("alpha", "beta"),
    Gamma: ("gamma",),
}


@dataclass(frozen=True)
class Method:
    """One heatmap method: an LRP rule/composite (``kwargs`` for onnxlrp.compile) or a baseline."""

    label: str
    kind: str  # "lrp" | "random" | "gradxinput"
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _floats(text: str, spec: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"bad number in method {spec!r}") from None


def _composite(name: str, epsilon: str, spec: str) -> Method:
    if name not in COMPOSITES:
        raise ValueError(f"unknown composite {name!r} in {spec!r}; known: {', '.join(COMPOSITES)}")
    kwargs: dict[str, Any] = {"composite": name}
    label = f"composite:{name}"
    if epsilon:
        kwargs["epsilon"] = _floats(epsilon, spec)[0]
        label += f":{epsilon}"
    return Method(label, "lrp", kwargs)


def rule_label(rule: Rule) -> str:
    """A rule's spec with its parameters: epsilon:0.25, alphabeta:3,2, gamma:0.25, zplus, ..."""
    kind = type(rule)
    if kind is Epsilon:
        return f"epsilon:{rule.epsilon:g}"  # type: ignore[attr-defined]
    if kind is Gamma:
        return f"gamma:{rule.gamma:g}"  # type: ignore[attr-defined]
    if kind is AlphaBeta:
        return f"alphabeta:{rule.alpha:g},{rule.beta:g}"  # type: ignore[attr-defined]
    return rule.name


def parse_method(spec: str) -> Method:
    """A method from its spec (see the module docstring); a ValueError names what is wrong.

    A rule gives ``{"rule": NAME}`` plus the parameters the spec sets (``alphabeta:3`` sets
    alpha=3, beta=2); without any, the caller's options or the rule's defaults apply. The label
    always shows the parameters the rule runs with.
    """
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    key = _ALIASES.get(head.lower(), head.lower())
    dashed = key.replace("_", "-")
    if dashed == "random":
        return Method("random", "random")
    if dashed in _GRADXINPUT:
        return Method("gradxinput", "gradxinput", {"rule": "lrp0"})
    if dashed == "composite":
        name, _, epsilon = rest.partition(":")
        return _composite(name.lower().replace("_", "-"), epsilon, spec)
    if key not in RULES and dashed in COMPOSITES:
        return _composite(dashed, rest, spec)
    if key not in RULES:
        raise ValueError(
            f"unknown method {spec!r}; rules: {', '.join(sorted(set(RULES)))}; composites: "
            f"{', '.join(COMPOSITES)} (or composite:NAME); baselines: random, gradxinput"
        )
    values = _floats(rest, spec)
    rule = parse_rule(f"{key}:{rest}" if rest else key)
    kwargs: dict[str, Any] = {"rule": rule.name}
    label = rule_label(rule)
    if values and type(rule) is ZBox:
        kwargs.update(zip(("low", "high"), values, strict=False))
        label += f":{rest}"
    elif values:
        kwargs.update({name: float(getattr(rule, name)) for name in _PARAMS[type(rule)]})
    return Method(label, "lrp", kwargs)
