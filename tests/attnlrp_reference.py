"""Independent float64 numpy reference for AttnLRP and CP-LRP on ViT, BERT and GPT-2.

Written from the formulas (Achtibat et al., ICML 2024; LXT's efficient mode), with the weights read
from the torch modules, not from onnxlrp or the ONNX graph. Each model's forward is re-implemented
on a small tape; every operation stores its relevance rule, and relevance flows back from the
target logit (seed: the logit, on that output only), summed where a tensor has several consumers.

Rules (R is the relevance of an operation's output, eps = 0: LRP-0 everywhere, as LXT):
- linear z = x W + b:             R_x = x * ((R / z) W^T)            (bias absorbs its share)
- sum z = a + b (activations):    R_a = a R / z, R_b = b R / z
- z = x + c, c constant:          R_x = x R / z                      (c absorbs its share)
- x * c, x / c (c constant):      R_x = R
- GELU, tanh (elementwise):       R_x = R                            (identity)
- LayerNorm, sigma constant:      y = (x - mean x) w / sigma + b is linear: R_x = x * J^T (R / y)
- softmax s = softmax(x):         R_x = x * (R_s - s * sum(R_s))     (attnlrp); nothing (cp-lrp)
- O = A B, both activations:      R_A = A * ((R / 2O) B^T), R_B = B * (A^T (R / 2O))   (attnlrp)
                                  A = softmax output under cp-lrp: R_B = B * (A^T (R / O)), R_A = 0
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Backward = Callable[[np.ndarray], list[np.ndarray]]


class Var:
    """A float64 tensor on the tape: its value, its parents and the rule that sends R back to them."""

    def __init__(
        self,
        value: np.ndarray,
        parents: tuple[Var, ...] = (),
        rule: Backward | None = None,
        constant: bool = False,
    ):
        self.value = np.asarray(value, np.float64)
        self.parents = parents
        self.rule = rule
        self.constant = constant  # takes no relevance (CP-LRP's attention weights)
        self.relevance = np.zeros_like(self.value)


def _order(out: Var) -> list[Var]:
    seen: set[int] = set()
    order: list[Var] = []

    def visit(v: Var) -> None:
        if id(v) in seen:
            return
        seen.add(id(v))
        for p in v.parents:
            visit(p)
        order.append(v)

    visit(out)
    return order


def propagate(out: Var, seed: np.ndarray) -> None:
    """Send ``seed`` (shaped like out) back through the tape; every Var's ``relevance`` is filled."""
    order = _order(out)
    for v in order:
        v.relevance = np.zeros_like(v.value)
    out.relevance = np.asarray(seed, np.float64)
    for v in reversed(order):
        if v.rule is None:
            continue
        for p, r in zip(v.parents, v.rule(v.relevance), strict=True):
            p.relevance = p.relevance + _unbroadcast(r, p.value.shape)


def _unbroadcast(r: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    while r.ndim > len(shape):
        r = r.sum(0)
    for axis, n in enumerate(shape):
        if n == 1 and r.shape[axis] != 1:
            r = r.sum(axis, keepdims=True)
    return r


def _div(r: np.ndarray, z: np.ndarray) -> np.ndarray:
    out = np.zeros_like(r)
    np.divide(r, z, out=out, where=z != 0)
    return out


# ---- operations -----------------------------------------------------------------------------


def linear(x: Var, w: np.ndarray, b: np.ndarray | None, gamma: float | None = None) -> Var:
    """z = x @ w + b over the last axis (w: [in, out]); LRP-0, or zennit's generalised gamma rule."""
    b = np.zeros(w.shape[1]) if b is None else b
    z = x.value @ w + b
    if gamma is None:
        return Var(z, (x,), lambda r: [x.value * (_div(r, z) @ w.T)])

    def rule(r: np.ndarray) -> list[np.ndarray]:
        xp, xn = np.maximum(x.value, 0), np.minimum(x.value, 0)
        up, down = w + gamma * np.maximum(w, 0), w + gamma * np.minimum(w, 0)
        total = np.zeros_like(x.value)
        # outputs with z > 0: (W + gW+) on x+, (W + gW-) on x-; z < 0 the other way round
        for sign, wa, wb, bias in (
            (1, up, down, b + gamma * np.maximum(b, 0)),
            (-1, down, up, b + gamma * np.minimum(b, 0)),
        ):
            d = xp @ wa + xn @ wb + bias
            d = d + 1e-6 * np.where(d >= 0, 1.0, -1.0)
            s = np.where(sign * z > 0, r, 0.0) / d
            total += xp * (s @ wa.T) + xn * (s @ wb.T)
        return [total]

    return Var(z, (x,), rule)


def add(a: Var, b: Var) -> Var:
    z = a.value + b.value
    return Var(z, (a, b), lambda r: [a.value * _div(r, z), b.value * _div(r, z)])


def add_const(x: Var, c: np.ndarray) -> Var:
    z = x.value + c
    return Var(z, (x,), lambda r: [x.value * _div(r, z)])


def scale(x: Var, c: float) -> Var:
    return Var(x.value * c, (x,), lambda r: [r])


def elementwise(x: Var, f: Callable[[np.ndarray], np.ndarray]) -> Var:
    """A non-linearity under the identity rule."""
    return Var(f(x.value), (x,), lambda r: [r])


def layer_norm(x: Var, w: np.ndarray, b: np.ndarray, eps: float) -> Var:
    mean = x.value.mean(-1, keepdims=True)
    sigma = np.sqrt(((x.value - mean) ** 2).mean(-1, keepdims=True) + eps)
    y = (x.value - mean) / sigma * w + b

    def rule(r: np.ndarray) -> list[np.ndarray]:
        v = _div(r, y) * w / sigma  # J^T (R / y): J = diag(w / sigma) (I - 1/n)
        return [x.value * (v - v.mean(-1, keepdims=True))]

    return Var(y, (x,), rule)


def softmax(x: Var, cp: bool) -> Var:
    e = np.exp(x.value - x.value.max(-1, keepdims=True))
    s = e / e.sum(-1, keepdims=True)
    if cp:
        return Var(s, constant=True)
    xs = np.where(s > 0, x.value, 0.0)  # masked logits (-inf or huge negative) get nothing
    return Var(s, (x,), lambda r: [xs * (r - s * r.sum(-1, keepdims=True))])


def matmul(a: Var, b: Var) -> Var:
    """O = a @ b of two activations: uniform split; a tape constant (no parents, no rule) gets none."""
    o = a.value @ b.value
    a_const = a.constant
    factor = 1.0 if a_const else 0.5

    def rule(r: np.ndarray) -> list[np.ndarray]:
        s = _div(r, o) * factor
        ra = np.zeros_like(a.value) if a_const else a.value * (s @ np.swapaxes(b.value, -1, -2))
        return [ra, b.value * (np.swapaxes(a.value, -1, -2) @ s)]

    return Var(o, (a, b), rule)


def transpose(x: Var, axes: tuple[int, ...]) -> Var:
    inv = tuple(np.argsort(axes))
    return Var(np.transpose(x.value, axes), (x,), lambda r: [np.transpose(r, inv)])


def reshape(x: Var, shape: tuple[int, ...]) -> Var:
    return Var(x.value.reshape(shape), (x,), lambda r: [r.reshape(x.value.shape)])


def take(x: Var, index: int, axis: int) -> Var:
    def rule(r: np.ndarray) -> list[np.ndarray]:
        out = np.zeros_like(x.value)
        sl = [slice(None)] * x.value.ndim
        sl[axis] = index
        out[tuple(sl)] = r
        return [out]

    return Var(np.take(x.value, index, axis=axis), (x,), rule)


def concat_const(c: np.ndarray, x: Var, axis: int) -> Var:
    """Concat(c, x) with c constant (ViT's class token): c's part of R is dropped."""
    n = c.shape[axis]
    return Var(np.concatenate([c, x.value], axis), (x,), lambda r: [np.split(r, [n], axis)[1]])


# ---- the three models -----------------------------------------------------------------------


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _attention(
    x: Var, wq, bq, wk, bk, wv, bv, heads: int, mask: np.ndarray | None, cp: bool, gamma: float | None = None
) -> Var:
    n, t, h = x.value.shape
    d = h // heads

    def split(v: Var) -> Var:
        return transpose(reshape(v, (n, t, heads, d)), (0, 2, 1, 3))

    q, k, v = (split(linear(x, wm, bm, gamma)) for wm, bm in ((wq, bq), (wk, bk), (wv, bv)))
    scores = scale(matmul(q, transpose(k, (0, 1, 3, 2))), 1 / np.sqrt(d))
    if mask is not None:
        scores = add_const(scores, mask)
    probs = softmax(scores, cp)
    ctx = matmul(probs, v)
    return reshape(transpose(ctx, (0, 2, 1, 3)), (n, t, h))


def _qkv(w: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    """Query, key and value weights ([in, out]) and biases of a HuggingFace attention module."""
    return [
        w[f"{prefix}{m}.weight"].T if k == "weight" else w[f"{prefix}{m}.bias"]
        for m in ("query", "key", "value")
        for k in ("weight", "bias")
    ]


def vit(
    w: dict[str, np.ndarray],
    pixels: np.ndarray,
    heads: int,
    patch: int,
    cp: bool,
    eps: float = 1e-12,
    gamma: float | None = None,
):
    """HF ViTForImageClassification; returns (logits Var, pixel Var). ``gamma``: the gamma rule on
    every linear layer instead of LRP-0."""
    x = Var(pixels)

    def _lin(v: Var, wm: np.ndarray, bm: np.ndarray | None) -> Var:
        return linear(v, wm, bm, gamma)

    n, c, hh, ww = pixels.shape
    gh, gw = hh // patch, ww // patch
    # the patch Conv as a linear map over flattened patches
    pat = x.value.reshape(n, c, gh, patch, gw, patch).transpose(0, 2, 4, 1, 3, 5).reshape(n, gh * gw, -1)
    px = Var(
        pat,
        (x,),
        lambda r: [r.reshape(n, gh, gw, c, patch, patch).transpose(0, 3, 1, 4, 2, 5).reshape(x.value.shape)],
    )
    conv_w = w["vit.embeddings.patch_embeddings.projection.weight"]
    emb = _lin(
        px, conv_w.reshape(conv_w.shape[0], -1).T, w["vit.embeddings.patch_embeddings.projection.bias"]
    )
    cls = np.broadcast_to(w["vit.embeddings.cls_token"], (n, 1, emb.value.shape[-1]))
    h = add_const(concat_const(cls, emb, 1), w["vit.embeddings.position_embeddings"])
    i = 0
    while f"vit.encoder.layer.{i}.layernorm_before.weight" in w:
        p = f"vit.encoder.layer.{i}."
        a = layer_norm(h, w[p + "layernorm_before.weight"], w[p + "layernorm_before.bias"], eps)
        att = p + "attention.attention."
        ctx = _attention(
            a,
            *_qkv(w, att),
            heads=heads,
            mask=None,
            cp=cp,
            gamma=gamma,
        )
        h = add(_lin(ctx, w[p + "attention.output.dense.weight"].T, w[p + "attention.output.dense.bias"]), h)
        m = layer_norm(h, w[p + "layernorm_after.weight"], w[p + "layernorm_after.bias"], eps)
        m = elementwise(
            _lin(m, w[p + "intermediate.dense.weight"].T, w[p + "intermediate.dense.bias"]), _gelu
        )
        h = add(_lin(m, w[p + "output.dense.weight"].T, w[p + "output.dense.bias"]), h)
        i += 1
    h = layer_norm(h, w["vit.layernorm.weight"], w["vit.layernorm.bias"], eps)
    logits = _lin(take(h, 0, 1), w["classifier.weight"].T, w["classifier.bias"])
    return logits, x


def bert(
    w: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, heads: int, cp: bool, eps: float = 1e-12
):
    """HF BertForSequenceClassification; returns (logits, word, position, token-type embedding Vars)."""
    _n, t = ids.shape
    word = Var(w["bert.embeddings.word_embeddings.weight"][ids])
    pos = Var(np.broadcast_to(w["bert.embeddings.position_embeddings.weight"][:t], word.value.shape))
    typ = Var(np.broadcast_to(w["bert.embeddings.token_type_embeddings.weight"][0], word.value.shape))
    h = add(add(word, typ), pos)
    h = layer_norm(h, w["bert.embeddings.LayerNorm.weight"], w["bert.embeddings.LayerNorm.bias"], eps)
    ext = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
    i = 0
    while f"bert.encoder.layer.{i}.output.dense.weight" in w:
        p = f"bert.encoder.layer.{i}."
        att = p + "attention.self."
        ctx = _attention(
            h,
            *_qkv(w, att),
            heads=heads,
            mask=ext,
            cp=cp,
        )
        a = add(
            linear(ctx, w[p + "attention.output.dense.weight"].T, w[p + "attention.output.dense.bias"]), h
        )
        h = layer_norm(
            a, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps
        )
        m = elementwise(
            linear(h, w[p + "intermediate.dense.weight"].T, w[p + "intermediate.dense.bias"]), _gelu
        )
        a = add(linear(m, w[p + "output.dense.weight"].T, w[p + "output.dense.bias"]), h)
        h = layer_norm(a, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        i += 1
    pooled = elementwise(
        linear(take(h, 0, 1), w["bert.pooler.dense.weight"].T, w["bert.pooler.dense.bias"]), np.tanh
    )
    logits = linear(pooled, w["classifier.weight"].T, w["classifier.bias"])
    return logits, word, pos, typ


def gpt2(w: dict[str, np.ndarray], ids: np.ndarray, heads: int, cp: bool, eps: float = 1e-5):
    """HF GPT2LMHeadModel; returns (logits [N, seq, vocab], word, position embedding Vars)."""
    _n, t = ids.shape
    word = Var(w["transformer.wte.weight"][ids])
    pos = Var(np.broadcast_to(w["transformer.wpe.weight"][:t], word.value.shape))
    h = add(word, pos)
    causal = np.where(np.tril(np.ones((t, t))) > 0, 0.0, np.finfo(np.float32).min)
    hid = h.value.shape[-1]
    i = 0
    while f"transformer.h.{i}.ln_1.weight" in w:
        p = f"transformer.h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        wa, ba = w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]
        ctx = _attention(
            a,
            wa[:, :hid],
            ba[:hid],
            wa[:, hid : 2 * hid],
            ba[hid : 2 * hid],
            wa[:, 2 * hid :],
            ba[2 * hid :],
            heads=heads,
            mask=causal,
            cp=cp,
        )
        h = add(linear(ctx, w[p + "attn.c_proj.weight"], w[p + "attn.c_proj.bias"]), h)
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = elementwise(linear(m, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"]), _gelu_tanh)
        h = add(linear(m, w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"]), h)
        i += 1
    h = layer_norm(h, w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], eps)
    logits = linear(h, w["lm_head.weight"].T, None)
    return logits, word, pos


def seed_at(logits: np.ndarray, target: np.ndarray, position: int | None = None) -> np.ndarray:
    """Each sample's target logit on that output only (at ``position`` for [N, seq, V] logits)."""
    seed = np.zeros_like(logits)
    for i, k in enumerate(target):
        idx = (i, k) if position is None else (i, position, k)
        seed[idx] = logits[idx]
    return seed
