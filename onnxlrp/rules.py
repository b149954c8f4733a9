"""LRP rules. A rule is a small object; `propagate` writes its relevance nodes.

Each kind of node that takes a rule has its own rule protocol: linear layers take a `Rule` over a
`LinearLayer`, sums of several activations (residual connections) a `SumRule` over a
`SumOfActivations`. A new kind of node (normalisation, softmax, ...) adds its own pair.

Transformers add two kinds: an in-graph Softmax takes a `SoftmaxRule` over a `SoftmaxLayer`, a
product of two activations (Q K^T, A V, gated units) a `ProductRule` over a `Product` (AttnLRP,
Achtibat et al. 2024; CP-LRP, Ali et al. 2022). LayerNormalization with its standard deviation held
constant is a linear layer.

Every linear operator (Conv, Gemm, MatMul, pooling as a linear map, ...) is wrapped by its emitter
in a `LinearLayer`: z = forward(x, W) + bias, with `transpose` the adjoint of forward. A rule only
uses these two maps with element-wise modified weights, so each rule is written once for all ops.
Formulas: docs/CONVENTIONS.md and the README.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from onnxlrp.builder import GraphBuilder
from onnxlrp.errors import InvalidOptionError

WeightMap = Callable[[str, np.ndarray], str]

DEFAULT_STABILIZER = 1e-6


class RuleError(InvalidOptionError):
    """A rule, composite or layer rule that does not fit: unknown name, bad parameter, wrong node."""


def checked(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float if it is a finite number, > 0 with ``positive``, else >= 0; else a
    RuleError naming the parameter. Every rule parameter passes here: a NaN, an infinity or a zero
    stabiliser would make the relevance NaN or silently wrong."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RuleError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise RuleError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")
    return number


@dataclass(frozen=True)
class LinearLayer:
    """A linear layer z = forward(x, weight) + bias, as its emitter sees it."""

    x: str
    weight: np.ndarray
    bias: np.ndarray | str | None  # a constant, or a tensor of the graph (per-sample statistics)
    forward_map: WeightMap
    transpose_map: WeightMap
    output: str  # the forward graph's z (with the unmodified weight and bias)
    x_nonnegative: bool = False
    rectified: str | None = None  # Relu(z), when the relevance reaching z is zero wherever z < 0

    def forward(self, x: str | None, weight: np.ndarray) -> str | None:
        """forward(x, weight) without bias; None (zero) when x or the weight is zero."""
        if x is None or not np.any(weight):
            return None
        return self.forward_map(x, weight)

    def transpose(self, s: str | None, weight: np.ndarray) -> str | None:
        if s is None or not np.any(weight):
            return None
        return self.transpose_map(s, weight)


def _bias_const(b: GraphBuilder, bias: np.ndarray | str | None) -> str | None:
    if isinstance(bias, str):
        return bias
    if bias is None or not np.any(bias):
        return None
    return b.const(bias.astype(np.float32), "bias")


def _bias_part(
    b: GraphBuilder, bias: np.ndarray | str | None, part: str, gamma: float = 0.0
) -> np.ndarray | str | None:
    """bias + gamma * bias+ ("up") or + gamma * bias- ("down"), bias+ ("positive"), bias- ("negative")
    or bias^2 ("square"): computed now for a constant bias, in the graph for a tensor."""
    if bias is None:
        return None
    if isinstance(bias, str):
        if part == "square":
            return b.mul(bias, bias)
        positive = b.positive_part(bias) if part in ("positive", "up") else None
        negative = b.negative_part(bias) if part in ("negative", "down") else None
        if part in ("positive", "negative"):
            return positive or negative
        return b.add(bias, b.scale(positive or negative, gamma))
    return {
        "positive": lambda: _pos(bias),
        "negative": lambda: _neg(bias),
        "up": lambda: (bias + gamma * _pos(bias)).astype(np.float32),
        "down": lambda: (bias + gamma * _neg(bias)).astype(np.float32),
        "square": lambda: np.square(bias),
    }[part]()


def _pos(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0).astype(np.float32)


def _neg(a: np.ndarray) -> np.ndarray:
    return np.minimum(a, 0).astype(np.float32)


def _parts(b: GraphBuilder, layer: LinearLayer) -> tuple[str, str | None]:
    """x+ and x- (None when x is known to be non-negative)."""
    if layer.x_nonnegative:
        return layer.x, None
    return b.positive_part(layer.x), b.negative_part(layer.x)


def _times_transpose(
    b: GraphBuilder, layer: LinearLayer, x: str | None, s: str, weight: np.ndarray
) -> str | None:
    """x * T_W(s), None (zero) when x is: no transpose is emitted for an input part that is zero."""
    return None if x is None else b.mul(x, layer.transpose(s, weight))


def _or_zero(b: GraphBuilder, layer: LinearLayer, relevance: str | None) -> str:
    """The input relevance, or zeros shaped like x where every term of it was zero."""
    return relevance if relevance is not None else b.mul(layer.x, b.const(np.float32(0)))


def _compact(value: object) -> str:
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value.tolist()
    return f"{value:g}" if isinstance(value, float) else repr(value)


class RuleObject:
    """A rule's identity is its class and its parameters (the stabilizer left out of its repr)."""

    name = "rule"

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_compact(v)}" for k, v in vars(self).items() if k != "stabilizer")
        return f"{self.name}({params})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items(), key=str))))


class Rule(RuleObject):
    """Base class of the rules for linear layers: `propagate(b, layer, R)` returns the name of the
    input relevance."""

    keeps_zeros = False  # True when the input relevance is x * (...): zero wherever x is zero

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        raise NotImplementedError


class Epsilon(Rule):
    """R_x = x * T_W(R / (z + eps * sign0(z))), z = xW + b."""

    name = "epsilon"
    keeps_zeros = True

    def __init__(self, epsilon: float = 1.0) -> None:
        self.epsilon = checked("epsilon", epsilon, positive=True)

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        stabilized = b.stabilize(layer.output, self.epsilon, like=relevance, rectified=layer.rectified)
        s = b.div(relevance, stabilized)
        return _or_zero(b, layer, b.mul(layer.x, layer.transpose(s, layer.weight)))


class LRP0(Epsilon):
    """LRP-0 ("simple"): epsilon with eps = 1e-16, as in the LRP toolbox."""

    name = "lrp0"

    def __init__(self) -> None:
        super().__init__(1e-16)


def _check_alpha_beta(alpha: float, beta: float) -> tuple[float, float]:
    alpha, beta = checked("alpha", alpha), checked("beta", beta)
    if abs(alpha - beta - 1) > 1e-9:
        raise RuleError(f"alpha-beta needs alpha - beta = 1; got alpha {alpha:g}, beta {beta:g}")
    return alpha, beta


class AlphaBeta(Rule):
    """alpha * (positive contributions) - beta * (negative contributions), alpha - beta = 1."""

    name = "alphabeta"
    keeps_zeros = True

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.alpha, self.beta = _check_alpha_beta(alpha, beta)
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)

    def _share(
        self,
        b: GraphBuilder,
        layer: LinearLayer,
        relevance: str,
        xp: str,
        xn: str | None,
        w_for_xp: np.ndarray,
        w_for_xn: np.ndarray,
        bias: np.ndarray | str | None,
        sign: int,
    ) -> str | None:
        """xp * T_a(s) + xn * T_b(s), s = R / stab(xp a + xn b + bias); every term of the sum has the
        sign ``sign`` (+1: the positive contributions, -1: the negative ones)."""
        if not any(x is not None and np.any(w) for x, w in ((xp, w_for_xp), (xn, w_for_xn))):
            return None  # no contribution of this sign (e.g. the negative part of a pooling layer)
        # z's sign is known, so its stabiliser joins the bias: one constant Add, which onnxruntime folds
        # into the convolution or Gemm before it
        shift = np.float32(sign * self.stabilizer)
        stabilized_bias: str | None
        if isinstance(bias, str):  # a bias computed in the graph
            stabilized_bias = b.add(bias, b.const(shift)) if shift else bias
        else:
            stabilized_bias = _bias_const(b, np.asarray(shift if bias is None else bias + shift, np.float32))
        z = b.total([layer.forward(xp, w_for_xp), layer.forward(xn, w_for_xn), stabilized_bias])
        assert z is not None  # some contribution has this sign (checked above)
        s = b.div(relevance, z)
        return b.add(_times_transpose(b, layer, xp, s, w_for_xp), _times_transpose(b, layer, xn, s, w_for_xn))

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        xp, xn = _parts(b, layer)
        wp, wn = _pos(layer.weight), _neg(layer.weight)
        positive = self._share(
            b, layer, relevance, xp, xn, wp, wn, _bias_part(b, layer.bias, "positive"), sign=1
        )
        result = b.scale(positive, self.alpha)
        if self.beta:
            negative = self._share(
                b, layer, relevance, xp, xn, wn, wp, _bias_part(b, layer.bias, "negative"), sign=-1
            )
            result = b.sub(result, b.scale(negative, self.beta))
        return _or_zero(b, layer, result)


class ZPlus(AlphaBeta):
    """z+ : alpha-beta with alpha = 1, beta = 0."""

    name = "zplus"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        super().__init__(1.0, 0.0, stabilizer)


class Gamma(Rule):
    """zennit's generalised gamma rule: favour positive contributions by gamma."""

    name = "gamma"
    keeps_zeros = True

    def __init__(self, gamma: float = 0.25, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.gamma = checked("gamma", gamma)
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        g = self.gamma
        w = layer.weight
        w_up, w_down = (w + g * _pos(w)).astype(np.float32), (w + g * _neg(w)).astype(np.float32)
        b_up, b_down = _bias_part(b, layer.bias, "up", g), _bias_part(b, layer.bias, "down", g)
        xp, xn = _parts(b, layer)
        z = layer.output
        zero = b.const(np.float32(0))
        result = None
        # outputs with z > 0 use (W + g W+) on x+ and (W + g W-) on x-; z < 0 the other way round
        for mask_op, w_xp, w_xn, b_term in (("Greater", w_up, w_down, b_up), ("Less", w_down, w_up, b_down)):
            mask = b.op("Cast", [b.op(mask_op, [z, zero])], to=1)
            denominator = b.total([layer.forward(xp, w_xp), layer.forward(xn, w_xn), _bias_const(b, b_term)])
            s = b.div(b.mul(relevance, mask), b.stabilize(denominator, self.stabilizer, like=relevance))
            result = b.total(
                [result, _times_transpose(b, layer, xp, s, w_xp), _times_transpose(b, layer, xn, s, w_xn)]
            )
        return _or_zero(b, layer, result)


class WSquare(Rule):
    """w^2: R_x = T_{W^2}(R / stab(1 W^2 + b^2)); the input values are ignored."""

    name = "wsquare"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER, bias: bool = True) -> None:
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)
        self.bias = bias

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        w2 = np.square(layer.weight).astype(np.float32)
        ones = b.ones_like(layer.x)
        bias = _bias_part(b, layer.bias, "square") if self.bias else None
        z = b.add(layer.forward(ones, w2), _bias_const(b, bias))  # >= 0
        s = b.div(relevance, b.stabilize(z, self.stabilizer, like=relevance, sign=1))
        return _or_zero(b, layer, b.mul(ones, layer.transpose(s, w2)))


class ToolboxWSquare(WSquare):
    """The LRP toolbox's w^2 ("ww"): T_{W^2}(R / (1 W^2)), no bias term, the toolbox's tiny stabiliser."""

    name = "ww"

    def __init__(self, stabilizer: float = 1e-16) -> None:
        super().__init__(stabilizer, bias=False)


class Flat(Rule):
    """flat: all weights 1, inputs ignored, no bias: relevance spread evenly over each window."""

    name = "flat"

    def __init__(self, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        w1 = np.ones_like(layer.weight, dtype=np.float32)
        ones = b.ones_like(layer.x)
        z = layer.forward(ones, w1)  # > 0
        s = b.div(relevance, b.stabilize(z, self.stabilizer, like=relevance, sign=1))
        return _or_zero(b, layer, b.mul(ones, layer.transpose(s, w1)))


def box_bounds(low: object, high: object) -> tuple[np.ndarray, np.ndarray]:
    """The box rule's bounds as float32 arrays: finite, broadcastable, low < high everywhere."""
    try:
        bounds = [np.asarray(v, np.float64) for v in (low, high)]
        np.broadcast_shapes(bounds[0].shape, bounds[1].shape)
    except (TypeError, ValueError):
        raise RuleError(
            f"the box bounds must be numbers or broadcastable arrays, got {low!r}, {high!r}"
        ) from None
    for name, value in zip(("low", "high"), bounds, strict=True):
        if not np.isfinite(value).all():
            raise RuleError(f"{name} must be finite, got {value.tolist()}")
    if not np.all(bounds[0] < bounds[1]):
        raise RuleError(
            f"the box rule needs low < high, got low {bounds[0].tolist()}, high {bounds[1].tolist()}"
        )
    return bounds[0].astype(np.float32), bounds[1].astype(np.float32)


class ZBox(Rule):
    """z^B (box) rule for inputs bounded by [low, high] (scalars or arrays broadcasting to the input)."""

    name = "zbox"

    def __init__(
        self,
        low: float | np.ndarray = -1.0,
        high: float | np.ndarray = 1.0,
        stabilizer: float = DEFAULT_STABILIZER,
    ) -> None:
        self.low, self.high = box_bounds(low, high)
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and np.array_equal(self.low, other.low)
            and np.array_equal(self.high, other.high)
            and self.stabilizer == other.stabilizer
        )

    def __hash__(self) -> int:
        return hash((type(self), self.low.tobytes(), self.high.tobytes(), self.stabilizer))

    def propagate(self, b: GraphBuilder, layer: LinearLayer, relevance: str) -> str:
        w, wp, wn = layer.weight.astype(np.float32), _pos(layer.weight), _neg(layer.weight)
        ones = b.ones_like(layer.x)
        low = b.mul(ones, b.const(self.low, "low"))
        high = b.mul(ones, b.const(self.high, "high"))
        z = b.sub(b.sub(layer.forward(layer.x, w), layer.forward(low, wp)), layer.forward(high, wn))
        s = b.div(relevance, b.stabilize(z, self.stabilizer, like=relevance))

        def negated(term: str | None) -> str | None:
            return None if term is None else b.op("Neg", [term])

        terms = [
            b.mul(layer.x, layer.transpose(s, w)),
            negated(b.mul(low, layer.transpose(s, wp))),  # None (nothing emitted) where wp is zero
            negated(b.mul(high, layer.transpose(s, wn))),
        ]
        return _or_zero(b, layer, b.total(terms))


@dataclass(frozen=True)
class SumOfActivations:
    """z = sum of terms, each an activation (a Sub's subtrahend already negated), as its emitter
    sees it."""

    terms: list[str]
    output: str  # the forward graph's z
    rectified: str | None = None  # Relu(z), when the relevance reaching z is zero wherever z < 0


class SumRule(RuleObject):
    """Base class of the rules for sums of activations: `propagate(b, total, R)` returns the
    relevance of each term."""

    name = "sumrule"
    keeps_zeros = True  # every rule for sums so far gives term k x_k * (...)

    def propagate(self, b: GraphBuilder, total: SumOfActivations, relevance: str) -> list[str]:
        raise NotImplementedError


class Norm(SumRule):
    """R_k = x_k * R / (z + eps * sign0(z)), z = sum of the x_k (zennit's Norm rule): each term
    gets relevance in proportion to its contribution."""

    name = "norm"

    def __init__(self, epsilon: float = DEFAULT_STABILIZER) -> None:
        self.epsilon = checked("epsilon", epsilon, positive=True)

    def propagate(self, b: GraphBuilder, total: SumOfActivations, relevance: str) -> list[str]:
        stabilized = b.stabilize(total.output, self.epsilon, like=relevance, rectified=total.rectified)
        s = b.op("Div", [relevance, stabilized])
        return [b.op("Mul", [term, s]) for term in total.terms]


class SumAlphaBeta(SumRule):
    """alpha-beta on a sum, read as a linear layer whose weights are all 1: the positive parts of the
    terms share alpha R, the negative parts -beta R:
    R_k = alpha x_k+ R / (sum x+ + eps) - beta x_k- R / (sum x- - eps). alpha = 1, beta = 0 is z+."""

    name = "sum-alphabeta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = DEFAULT_STABILIZER) -> None:
        self.alpha, self.beta = _check_alpha_beta(alpha, beta)
        self.stabilizer = checked("stabilizer", stabilizer, positive=True)

    def _shares(self, b: GraphBuilder, parts: list[str], relevance: str, sign: int) -> list[str]:
        """part_k * R / stab(sum of the parts); every part has the sign ``sign``."""
        z = b.op("Sum", parts) if len(parts) > 1 else parts[0]
        s = b.op("Div", [relevance, b.stabilize(z, self.stabilizer, like=relevance, sign=sign)])
        return [b.op("Mul", [part, s]) for part in parts]

    def propagate(self, b: GraphBuilder, total: SumOfActivations, relevance: str) -> list[str]:
        positive = self._shares(b, [b.positive_part(t) for t in total.terms], relevance, sign=1)
        shares: list[str] = [b.scale(p, self.alpha) or p for p in positive]
        if self.beta:
            negative = self._shares(b, [b.negative_part(t) for t in total.terms], relevance, sign=-1)
            shares = [
                b.op("Sub", [p, b.scale(n, self.beta) or n]) for p, n in zip(shares, negative, strict=True)
            ]
        return shares


# ---- transformers: softmax and products of two activations (AttnLRP, CP-LRP) ----

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


def sum_rule(rule: Rule | SumRule) -> SumRule | None:
    """The rule for sums a rule given for a sum stands for: itself, Norm with an epsilon-type rule's
    epsilon, alpha-beta (z+ included) on the terms' positive and negative parts; None where the rule
    has no meaning on a sum (it modifies weights or reads input bounds a sum does not have)."""
    if isinstance(rule, SumRule):
        return rule
    if isinstance(rule, Epsilon):
        return Norm(rule.epsilon)
    if isinstance(rule, AlphaBeta):
        return SumAlphaBeta(rule.alpha, rule.beta, rule.stabilizer)
    return None


RULES: dict[str, type[Rule]] = {
    "epsilon": Epsilon,
    "eps": Epsilon,
    "lrp0": LRP0,
    "simple": LRP0,
    "zero": LRP0,
    "gamma": Gamma,
    "alphabeta": AlphaBeta,
    "alpha-beta": AlphaBeta,
    "zplus": ZPlus,
    "z+": ZPlus,
    "wsquare": WSquare,
    "w2": WSquare,
    "w^2": WSquare,
    "ww": ToolboxWSquare,
    "flat": Flat,
    "zbox": ZBox,
    "zb": ZBox,
    "box": ZBox,
}


def make_rule(
    name: str | Rule,
    *,
    epsilon: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    low=None,
    high=None,
    stabilizer: float | None = None,
) -> Rule:
    """A rule from its name and the hyper-parameters that apply to it."""
    if isinstance(name, Rule):
        return name
    if not isinstance(name, str):
        raise RuleError(f"a rule is a name or a Rule object, got {name!r}")
    key = name.lower()
    if key not in RULES:
        raise RuleError(f"unknown rule '{name}'; known: {', '.join(sorted(set(RULES)))}")
    cls = RULES[key]
    stab = {} if stabilizer is None else {"stabilizer": stabilizer}
    if cls is Epsilon:
        return Epsilon(1.0 if epsilon is None else epsilon)
    if cls is LRP0:
        return LRP0()
    if cls is Gamma:
        return Gamma(0.25 if gamma is None else gamma, **stab)
    if cls is AlphaBeta:  # one of alpha, beta gives the other (alpha - beta = 1)
        a = (2.0 if beta is None else beta + 1.0) if alpha is None else alpha
        return AlphaBeta(a, a - 1.0 if beta is None else beta, **stab)
    if cls is ZBox:
        return ZBox(-1.0 if low is None else low, 1.0 if high is None else high, **stab)
    return cls(**stab)


def parse_rule(spec: str) -> Rule:
    """A rule from a compact spec: "epsilon:0.25", "alphabeta:3,2", "gamma:0.5", "zbox:-1,1", "flat"."""
    name, _, args = spec.partition(":")
    try:
        values = [float(v) for v in args.split(",")] if args else []
    except ValueError:
        raise RuleError(
            f"rule spec '{spec}': parameters must be numbers, e.g. epsilon:0.25 or alphabeta:2,1"
        ) from None
    key = name.lower()
    arity: dict[type[Rule], tuple[str, ...]] = {
        Epsilon: ("epsilon",),
        AlphaBeta: ("alpha", "beta"),
        Gamma: ("gamma",),
        ZBox: ("low", "high"),
    }
    cls = RULES.get(key)
    names = arity.get(cls, ()) if cls is not None else ()
    if len(values) > len(names):
        raise RuleError(
            f"rule spec '{spec}': {name} takes at most {len(names)} parameter(s) ({', '.join(names)})"
        )
    return make_rule(key, **dict(zip(names, values, strict=False)))
