"""Rules for the node kinds transformers add: softmax, and products of two activations.

Each kind has its own rule protocol, as linear layers and sums do (rules.py): a `SoftmaxRule` over a
`SoftmaxLayer`, a `ProductRule` over a `Product`. Normalisation layers (LayerNormalization with its
standard deviation held constant) are linear layers and take the linear-layer rules of rules.py.
Formulas: AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022); the README's
transformer table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxlrp.builder import GraphBuilder
from onnxlrp.rules import RuleError, RuleObject

# the relevance of one factor of a product: s -> T_k(s), shaped like factor k (x_k is multiplied after)
FactorMap = Callable[[str], str]


@dataclass(frozen=True)
class SoftmaxLayer:
    """s = softmax(x) along ``axis``, as its emitter sees it."""

    x: str
    output: str
    axis: int


class SoftmaxRule(RuleObject):
    """Base class: `propagate(b, layer, R)` returns the name of the input relevance."""

    keeps_zeros = True  # R_x = x * (...)

    def propagate(self, b: GraphBuilder, layer: SoftmaxLayer, relevance: str) -> str:
        raise NotImplementedError


class SoftmaxGradient(SoftmaxRule):
    """R_x = x * (R_s - s * sum(R_s)): gradient x input, a Deep Taylor expansion at x with the bias
    absorbing the rest (AttnLRP). Masked logits (-inf or a large negative) get nothing: there s = 0
    and R_s = 0, and x is clipped to the lowest float so that -inf * 0 does not give NaN."""

    name = "softmax-gradient"

    def propagate(self, b: GraphBuilder, layer: SoftmaxLayer, relevance: str) -> str:
        axes = b.const(np.array([layer.axis], np.int64))
        total = b.op("ReduceSum", [relevance, axes], keepdims=1)
        inner = b.op("Sub", [relevance, b.op("Mul", [layer.output, total])])
        finite_x = b.op("Max", [layer.x, b.const(np.float32(np.finfo(np.float32).min))])
        return b.op("Mul", [finite_x, inner])


@dataclass(frozen=True)
class Product:
    """O = a (x) b of two activations (a MatMul, or an element-wise Mul), as its emitter sees it.

    ``maps[k](s)`` is T_k(s), the adjoint of the product with the other factor fixed (shaped like
    factor k); ``weights[k]`` says factor k is a Softmax output (attention weights)."""

    factors: tuple[str, str]
    output: str
    maps: tuple[FactorMap, FactorMap]
    weights: tuple[bool, bool]


class ProductRule(RuleObject):
    """Base class: `propagate(b, product, R)` returns each factor's relevance (None: none)."""

    keeps_zeros = True  # R_k = x_k * (...)

    def propagate(self, b: GraphBuilder, product: Product, relevance: str) -> list[str | None]:
        raise NotImplementedError


class Uniform(ProductRule):
    """Epsilon on the product, the relevance split evenly: R_k = x_k * T_k(R / (2 stab(O))) (AttnLRP)."""

    name = "uniform"

    def __init__(self, epsilon: float = 1e-16) -> None:
        if epsilon < 0:
            raise RuleError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)

    def _shares(
        self, b: GraphBuilder, product: Product, relevance: str, takers: list[int]
    ) -> list[str | None]:
        s = b.div(relevance, b.stabilize(product.output, self.epsilon, like=relevance))
        if len(takers) > 1:
            s = b.scale(s, 1.0 / len(takers)) or s
        return [b.mul(x, product.maps[k](s)) if k in takers else None for k, x in enumerate(product.factors)]

    def propagate(self, b: GraphBuilder, product: Product, relevance: str) -> list[str | None]:
        return self._shares(b, product, relevance, [0, 1])


class ConstantAttention(Uniform):
    """CP-LRP: attention weights (a Softmax output) act as a constant, so the other factor takes all
    the relevance by epsilon on a linear map; other products split evenly (as Uniform)."""

    name = "constant-attention"

    def propagate(self, b: GraphBuilder, product: Product, relevance: str) -> list[str | None]:
        takers = [k for k in (0, 1) if not product.weights[k]] or [0, 1]
        return self._shares(b, product, relevance, takers)
