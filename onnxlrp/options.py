"""CompileOptions: every setting of a compilation (rules, their hyper-parameters, seeding, outputs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxlrp.errors import InvalidOptionError
from onnxlrp.rules import Rule, SumRule, box_bounds, checked, make_rule

SEEDS = ("logit", "onehot")

# "portable": operators every runtime implements (onnxruntime CPU/CUDA/WASM/WebGPU, OpenVINO, onnx's
# reference evaluator); "onnxruntime": also MaxPool's Indices with MaxUnpool/ScatterElements
RUNTIMES = ("portable", "onnxruntime")


@dataclass(frozen=True)
class CompileOptions:
    """Settings of `onnxlrp.compile` (the README's contract describes each). Rule precedence:
    rules_by_name > rules_by_type > first_rule (first layers) > rule or composite."""

    rule: str | Rule | None = None
    composite: str | None = None
    epsilon: float | None = None
    alpha: float | None = None
    beta: float | None = None
    gamma: float | None = None
    stabilizer: float | None = None
    first_rule: str | Rule | None = None
    low: float | np.ndarray | None = None
    high: float | np.ndarray | None = None
    rules_by_type: Mapping[str, str | Rule | SumRule] | None = None
    rules_by_name: Mapping[str, str | Rule | SumRule] | None = None
    start: str | None = None
    expose: Iterable[str] = ()
    seed: str = "logit"
    output: str | None = None
    condition: Iterable[str] = ()
    runtime: str = "portable"
    input: str | None = None
    position: int = -1  # the explained position of an output with a sequence axis ([N, seq, classes])

    def __post_init__(self) -> None:
        """Check every setting before any work: all checks of compiling happen here (the rules
        check their own parameters as well)."""
        if self.runtime not in RUNTIMES:
            raise InvalidOptionError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        for name in ("epsilon", "stabilizer"):
            if getattr(self, name) is not None:
                checked(name, getattr(self, name), positive=True)
        for name in ("gamma", "alpha", "beta"):
            if getattr(self, name) is not None:
                checked(name, getattr(self, name))
        if self.alpha is not None and self.beta is not None and abs(self.alpha - self.beta - 1) > 1e-9:
            raise InvalidOptionError(f"alpha - beta must be 1; got alpha {self.alpha:g}, beta {self.beta:g}")
        if self.low is not None or self.high is not None:
            box_bounds(-1.0 if self.low is None else self.low, 1.0 if self.high is None else self.high)
        if self.seed not in SEEDS:
            raise InvalidOptionError(f"seed must be one of {', '.join(SEEDS)}, got {self.seed!r}")
        for name in ("start", "output", "input"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidOptionError(f"{name} must be a tensor name, got {value!r}")
        expose = (self.expose,) if isinstance(self.expose, str) else tuple(self.expose)
        twice = sorted({name for name in expose if expose.count(name) > 1})
        if twice:
            raise InvalidOptionError(f"expose names {', '.join(repr(t) for t in twice)} more than once")
        object.__setattr__(self, "expose", expose)
        self._check_rules()

    def _check_rules(self) -> None:
        """Every rule named or given is one that exists, with parameters in range."""
        from onnxlrp.composites import COMPOSITES  # composites reads these options

        if self.composite is not None and self.composite.lower().replace("_", "-") not in COMPOSITES:
            raise InvalidOptionError(f"unknown composite '{self.composite}'; known: {', '.join(COMPOSITES)}")
        if self.rule is not None and self.composite is not None:
            raise InvalidOptionError("give either a rule or a composite, not both")
        specs = [self.rule, self.first_rule, *(self.rules_by_type or {}).values()]
        specs += list((self.rules_by_name or {}).values())
        for spec in specs:
            if spec is not None and not isinstance(spec, SumRule):
                make_rule(spec, **self.rule_params())

    def rule_params(self) -> dict[str, Any]:
        """The hyper-parameters `rules.make_rule` takes (None: the rule's default)."""
        return {
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "low": self.low,
            "high": self.high,
            "stabilizer": self.stabilizer,
        }

    @property
    def logit_seed(self) -> bool:
        """Whether relevance starts as logit * one-hot (zero wherever the logit is zero)."""
        return self.start is None and self.seed == "logit"
