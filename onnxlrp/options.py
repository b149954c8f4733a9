"""CompileOptions: every setting of a compilation (rules, their hyper-parameters, seeding, outputs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxlrp.rules import Rule, SumRule

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

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")

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
