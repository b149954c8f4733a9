"""Independent, slow, obvious reference implementation of LRP on ONNX graphs.

Written from the formulas in the README (section "Rules"); it imports nothing from the onnxlrp package.
Every linear layer is reduced to small local problems "outputs j of one window / one position
from the inputs i of that window" with contributions z_ij = x_i w_ij, and each local problem is
solved with the rule's formula:

    R_i = sum_j  z_ij / stab(z_j) * R_j          (epsilon; other rules change z_ij and z_j)

Conv and pooling layers loop explicitly over output positions, gather the input window
(strides, pads, dilations, groups; zero padding), solve the local problem, and scatter-add the
input relevance back. All arithmetic is float64.

Public API:
    reference_lrp(model, x, rule_for_node, target=None, seed="logit", start=None, start_seed=None,
                  output=None, fold_batchnorm=False) -> dict
    reference_forward(model, x) -> dict[str, np.ndarray]          (every tensor of the graph)
    composite_rule_for_node(name, epsilon=None, low=-1.0, high=1.0) -> rule_for_node
    single_rule(rule_tuple) -> rule_for_node
    per-op functions: conv_forward / conv_lrp, dense_forward / dense_lrp, avgpool_forward /
    avgpool_lrp, global_avgpool_forward / global_avgpool_lrp, maxpool_forward / maxpool_lrp,
    elementwise_affine_lrp (BatchNormalization, Add/Sub/Mul/Div with a constant), sum_lrp
    (residual Add), batchnorm_forward, local_lrp (the rule formulas on one local problem).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

STABILIZER = 1e-6  # zennit's default stabilizer, used by every rule but epsilon
LRP0_EPS = 1e-16

# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


def stab(d: np.ndarray, e: float) -> np.ndarray:
    """stab(d, e) = d + e * sign0(d), sign0(d) = +1 if d >= 0 else -1."""
    return d + e * np.where(d >= 0, 1.0, -1.0)


def normalize_rule(rule: Sequence) -> tuple:
    """Canonical rule tuple: lrp0 -> epsilon(1e-16), zplus -> alphabeta(1, 0), defaults filled in."""
    if isinstance(rule, str):
        rule = (rule,)
    name = rule[0]
    args = tuple(rule[1:])
    if name == "epsilon":
        return ("epsilon", float(args[0]) if args and args[0] is not None else 1.0)
    if name == "lrp0":
        return ("epsilon", LRP0_EPS)
    if name == "zplus":
        return ("alphabeta", 1.0, 0.0)
    if name == "alphabeta":
        alpha = float(args[0]) if args and args[0] is not None else 2.0
        beta = float(args[1]) if len(args) > 1 and args[1] is not None else alpha - 1.0
        return ("alphabeta", alpha, beta)
    if name == "gamma":
        return ("gamma", float(args[0]) if args and args[0] is not None else 0.25)
    if name in ("wsquare", "flat"):
        return (name,)
    if name == "zbox":
        low = args[0] if args and args[0] is not None else -1.0
        high = args[1] if len(args) > 1 and args[1] is not None else 1.0
        return ("zbox", low, high)
    raise ValueError(f"unknown rule {rule!r}")


def local_lrp(
    rule: tuple,
    x: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | float,
    R: np.ndarray,
    ones: np.ndarray,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> np.ndarray:
    """The rule on a batch of local problems z_j = sum_i x_i W_ij + b_j.

    x: (G, M, K) inputs (G independent groups/channels, M rows e.g. the batch, K inputs);
    W: (G or 1, K, J); b: broadcastable to (G, M, J); R: (G, M, J) relevance of the outputs;
    ones: (G or 1, M or 1, K): 1 for a real input, 0 for a padded tap (zero padding);
    low/high: like x (zbox bounds gathered with zero padding). Returns R_x shaped like x.

    For a matrix A, (s @ A^T)_i = sum_j A_ij s_j, so x_i * (s @ W^T)_i = sum_j (x_i W_ij) s_j
    = sum_j z_ij R_j / z_j: the contributions z_ij = x_i w_ij distributed in proportion.
    """
    rule = normalize_rule(rule)
    name = rule[0]

    def T(s, A):  # sum_j A_ij s_j
        return s @ np.swapaxes(A, -1, -2)

    Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
    b = np.asarray(b, dtype=np.float64)
    if name == "epsilon":
        z = x @ W + b
        s = R / stab(z, rule[1])
        return x * T(s, W)
    if name == "alphabeta":
        alpha, beta = rule[1], rule[2]
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        bp, bn = np.maximum(b, 0), np.minimum(b, 0)
        zp = xp @ Wp + xn @ Wn + bp
        zn = xp @ Wn + xn @ Wp + bn
        sp = R / stab(zp, STABILIZER)
        sn = R / stab(zn, STABILIZER)
        return alpha * (xp * T(sp, Wp) + xn * T(sp, Wn)) - beta * (xp * T(sn, Wn) + xn * T(sn, Wp))
    if name == "gamma":
        g = rule[1]
        xp, xn = np.maximum(x, 0), np.minimum(x, 0)
        bp, bn = np.maximum(b, 0), np.minimum(b, 0)
        Wgp = W + g * Wp  # W + g W+
        Wgn = W + g * Wn  # W + g W-
        z = x @ W + b
        sp = np.where(z > 0, R, 0.0) / stab(xp @ Wgp + (b + g * bp) + xn @ Wgn, STABILIZER)
        sn = np.where(z < 0, R, 0.0) / stab(xp @ Wgn + (b + g * bn) + xn @ Wgp, STABILIZER)
        return xp * T(sp, Wgp) + xn * T(sp, Wgn) + xp * T(sn, Wgn) + xn * T(sn, Wgp)
    if name == "wsquare":
        W2 = W * W
        z = ones @ W2 + b * b
        s = R / stab(z, STABILIZER)
        return ones * T(s, W2)
    if name == "flat":
        W1 = np.ones_like(W)
        z = ones @ W1
        s = R / stab(z, STABILIZER)
        return ones * T(s, W1)
    if name == "zbox":
        assert low is not None and high is not None
        zd = x @ W - low @ Wp - high @ Wn
        s = R / stab(zd, STABILIZER)
        return x * T(s, W) - low * T(s, Wp) - high * T(s, Wn)
    raise ValueError(f"unknown rule {rule!r}")


def _bounds(rule: tuple, shape: tuple) -> tuple[np.ndarray | None, np.ndarray | None]:
    """zbox low/high as float64 arrays shaped like the layer input (None for other rules)."""
    rule = normalize_rule(rule)
    if rule[0] != "zbox":
        return None, None
    low = np.broadcast_to(np.asarray(rule[1], dtype=np.float64), shape)
    high = np.broadcast_to(np.asarray(rule[2], dtype=np.float64), shape)
    return low, high


# ---------------------------------------------------------------------------------------------
# Windows: output sizes and padding
# ---------------------------------------------------------------------------------------------


def window_geometry(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    auto_pad: str = "NOTSET",
    ceil_mode: bool = False,
) -> tuple[list[int], list[int], list[int]]:
    """(pads_begin, pads_end, out_spatial) as ONNX Conv/pooling define them.

    ceil_mode: out = ceil((H + pb + pe - dk) / s) + 1, minus one if the last window would start
    beyond the input and its begin padding (the PyTorch/onnxruntime rule).
    """
    nd = len(in_spatial)
    strides = list(strides) if strides else [1] * nd
    dilations = list(dilations) if dilations else [1] * nd
    pads = list(pads) if pads else [0] * (2 * nd)
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    pb, pe, out = [], [], []
    for a in range(nd):
        H, k, s, d = in_spatial[a], kernel[a], strides[a], dilations[a]
        dk = d * (k - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-H // s)
            total = max(0, (o - 1) * s + dk - H)
            small = total // 2
            b_, e_ = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        elif auto_pad == "VALID":
            b_, e_ = 0, 0
            o = (H - dk) // s + 1
        else:
            b_, e_ = pads[a], pads[a + nd]
            span = H + b_ + e_ - dk
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= H + b_:
                    o -= 1
            else:
                o = span // s + 1
        pb.append(b_)
        pe.append(e_)
        out.append(o)
    return pb, pe, out


def _padded(x: np.ndarray, pb, pe_total, value=0.0) -> np.ndarray:
    widths = [(0, 0), (0, 0)] + [(int(b), int(e)) for b, e in zip(pb, pe_total, strict=True)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def _end_padding(in_spatial, kernel, strides, dilations, pb, pe, out):
    """End padding that also covers the ceil_mode overhang of the last window."""
    res = []
    for a in range(len(in_spatial)):
        need = (out[a] - 1) * strides[a] + dilations[a] * (kernel[a] - 1) + 1 - in_spatial[a] - pb[a]
        res.append(max(pe[a], need))
    return res


def _window(pos, kernel, strides, dilations):
    return tuple(
        slice(p * s, p * s + d * (k - 1) + 1, d)
        for p, k, s, d in zip(pos, kernel, strides, dilations, strict=True)
    )


def _defaults(nd, strides, dilations):
    return (list(strides) if strides else [1] * nd, list(dilations) if dilations else [1] * nd)


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------


CHUNK_ELEMENTS = 1 << 22  # how many gathered input values one batch of local problems may hold


def _position_chunks(out, per_position: int) -> list[list[tuple]]:
    """All output positions in row-major order, in chunks of at most CHUNK_ELEMENTS gathered values."""
    positions = list(itertools.product(*[range(o) for o in out]))
    step = max(1, CHUNK_ELEMENTS // max(1, per_position))
    return [positions[i : i + step] for i in range(0, len(positions), step)]


def _gather(a: np.ndarray, positions, kernel, strides, dilations) -> np.ndarray:
    """Stack the windows at the given output positions: (rows, P, C, *kernel), one per position."""
    return np.stack(
        [a[(slice(None), slice(None), *_window(pos, kernel, strides, dilations))] for pos in positions],
        axis=1,
    )


def _scatter_add(target: np.ndarray, r: np.ndarray, positions, kernel, strides, dilations) -> None:
    """target[window at position p] += r[:, p] for every position (overlapping windows add up)."""
    for p, pos in enumerate(positions):
        target[(slice(None), slice(None), *_window(pos, kernel, strides, dilations))] += r[:, p]


def _conv_setup(x, W, b, strides, pads, dilations, group, auto_pad):
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    C = x.shape[1]
    sp = x.shape[2:]
    kernel = W.shape[2:]
    strides, dilations = _defaults(len(sp), strides, dilations)
    pb, pe, out = window_geometry(sp, kernel, strides, pads, dilations, auto_pad)
    G = group
    Jg, Cg = W.shape[0] // G, C // G
    K = Cg * int(np.prod(kernel))
    Wg = W.reshape(G, Jg, K).transpose(0, 2, 1)  # (G, K, J): local weights of group g
    bg = np.zeros((G, 1, Jg)) if b is None else np.asarray(b, np.float64).reshape(G, 1, Jg)
    return x, kernel, strides, dilations, pb, pe, out, G, Jg, K, Wg, bg


def _rows(win: np.ndarray, G: int, K: int) -> np.ndarray:
    """Gathered windows (rows, P, C, *k) -> local problems (G, rows*P, K) of each group."""
    n, P = win.shape[:2]
    return win.reshape(n, P, G, K).transpose(2, 0, 1, 3).reshape(G, n * P, K)


def conv_forward(x, W, b=None, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET"):
    """ONNX Conv (N, C, *spatial): for every output position, window . weights + bias."""
    x, kernel, strides, dilations, pb, pe, out, G, Jg, K, Wg, bg = _conv_setup(
        x, W, b, strides, pads, dilations, group, auto_pad
    )
    N = x.shape[0]
    xp = _padded(x, pb, pe)
    y = np.zeros((N, G * Jg, int(np.prod(out))))
    for chunk in _position_chunks(out, N * G * K):
        P = len(chunk)
        z = _rows(_gather(xp, chunk, kernel, strides, dilations), G, K) @ Wg + bg  # (G, N*P, J)
        flat = [int(np.ravel_multi_index(pos, out)) for pos in chunk]
        y[:, :, flat] = z.reshape(G, N, P, Jg).transpose(1, 0, 3, 2).reshape(N, G * Jg, P)
    return y.reshape(N, G * Jg, *out)


def conv_lrp(
    x, W, b, R, rule, strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET", mask=None
) -> np.ndarray:
    """LRP through an ONNX Conv: gather the (zero-padded) input window of every output position,
    solve the local problem window -> output channels with the rule, scatter-add the result.
    mask (broadcastable to x): 1 where x is a real input, 0 where it is a structural zero (the
    inserted zeros of a ConvTranspose); like padding, such taps do not count for flat/wsquare/zbox."""
    rule = normalize_rule(rule)
    x, kernel, strides, dilations, pb, pe, out, G, Jg, K, Wg, bg = _conv_setup(
        x, W, b, strides, pads, dilations, group, auto_pad
    )
    R = np.asarray(R, dtype=np.float64)
    N, C = x.shape[:2]
    sp = x.shape[2:]
    assert tuple(out) == R.shape[2:], (out, R.shape)
    xp = _padded(x, pb, pe)
    ones = np.ones((N, C, *sp)) if mask is None else np.broadcast_to(np.asarray(mask, np.float64), x.shape)
    onesp = _padded(ones, pb, pe)  # 1 on real inputs, 0 on padded taps
    low, high = _bounds(rule, x.shape)
    if low is not None:
        low, high = low * ones, high * ones
    lowp = _padded(low, pb, pe) if low is not None else None
    highp = _padded(high, pb, pe) if high is not None else None
    Rxp = np.zeros_like(xp)
    Rflat = R.reshape(N, G, Jg, -1)
    for chunk in _position_chunks(out, N * G * K):
        P = len(chunk)

        def rows(a, chunk=chunk):
            return _rows(_gather(a, chunk, kernel, strides, dilations), G, K)

        flat = [int(np.ravel_multi_index(pos, out)) for pos in chunk]
        Rj = Rflat[:, :, :, flat].transpose(1, 0, 3, 2).reshape(G, N * P, Jg)
        Rx = local_lrp(
            rule,
            rows(xp),
            Wg,
            bg,
            Rj,
            rows(onesp),
            rows(lowp) if lowp is not None else None,
            rows(highp) if highp is not None else None,
        )  # (G, N*P, K)
        Rx = Rx.reshape(G, N, P, K).transpose(1, 2, 0, 3).reshape(N, P, C, *kernel)
        _scatter_add(Rxp, Rx, chunk, kernel, strides, dilations)
    crop = (slice(None), slice(None), *[slice(b_, b_ + h) for b_, h in zip(pb, sp, strict=True)])
    return Rxp[crop]


def _conv_transpose_as_conv(x, W, strides, pads, dilations, group, output_padding):
    """ConvTranspose(x, W) == Conv(x', W') with x' = x with stride-1 zeros inserted between pixels
    and d*(k-1)-pad zeros around it (cropped where negative), W' = W flipped with in/out swapped.
    Returns (x', mask of the real inputs in x', W', index of the real inputs in x')."""
    x = np.asarray(x, np.float64)
    W = np.asarray(W, np.float64)
    N, C = x.shape[:2]
    sp = x.shape[2:]
    nd = len(sp)
    kernel = W.shape[2:]
    strides, dilations = _defaults(nd, strides, dilations)
    pads = list(pads) if pads else [0] * (2 * nd)
    output_padding = list(output_padding) if output_padding else [0] * nd
    G = group
    Cg, Jg = C // G, W.shape[1]
    # W: (C_in, C_out/G, *k) -> W': (C_out, C_in/G, *k), flipped in space
    Wc = W.reshape(G, Cg, Jg, *kernel).swapaxes(1, 2).reshape(G * Jg, Cg, *kernel)
    Wc = Wc[(slice(None), slice(None), *[slice(None, None, -1)] * nd)]
    begin, size = [], []
    for a in range(nd):
        full = strides[a] * (sp[a] - 1) + 1
        pb_ = dilations[a] * (kernel[a] - 1) - pads[a]
        pe_ = dilations[a] * (kernel[a] - 1) - pads[a + nd] + output_padding[a]
        begin.append(pb_)
        size.append(pb_ + full + pe_)
    xc = np.zeros((N, C, *size))
    mask = np.zeros((1, 1, *size))
    real = []  # for each input axis: positions in x' of the real inputs (None where cropped away)
    for a in range(nd):
        real.append([begin[a] + i * strides[a] for i in range(sp[a])])
    for pos in itertools.product(*[range(h) for h in sp]):
        q = tuple(real[a][pos[a]] for a in range(nd))
        if all(0 <= q[a] < size[a] for a in range(nd)):
            xc[(slice(None), slice(None), *q)] = x[(slice(None), slice(None), *pos)]
            mask[(0, 0, *q)] = 1.0
    return xc, mask, Wc, real, size


def conv_transpose_forward(
    x, W, b=None, strides=None, pads=None, dilations=None, group=1, output_padding=None
) -> np.ndarray:
    """ONNX ConvTranspose by its definition: every input pixel adds x * W to its output window."""
    x = np.asarray(x, np.float64)
    W = np.asarray(W, np.float64)
    N, C = x.shape[:2]
    sp = x.shape[2:]
    nd = len(sp)
    kernel = W.shape[2:]
    strides, dilations = _defaults(nd, strides, dilations)
    pads = list(pads) if pads else [0] * (2 * nd)
    output_padding = list(output_padding) if output_padding else [0] * nd
    G, Cg, Jg = group, C // group, W.shape[1]
    out = [
        strides[a] * (sp[a] - 1)
        + output_padding[a]
        + dilations[a] * (kernel[a] - 1)
        + 1
        - pads[a]
        - pads[a + nd]
        for a in range(nd)
    ]
    full = [
        strides[a] * (sp[a] - 1) + output_padding[a] + dilations[a] * (kernel[a] - 1) + 1 for a in range(nd)
    ]
    y = np.zeros((N, G * Jg, *full))
    for pos in itertools.product(*[range(h) for h in sp]):
        win = _window(pos, kernel, strides, dilations)
        for g in range(G):
            xin = x[(slice(None), slice(g * Cg, (g + 1) * Cg), *pos)]  # (N, Cg)
            contrib = np.einsum("nc,cj...->nj...", xin, W[g * Cg : (g + 1) * Cg])
            y[(slice(None), slice(g * Jg, (g + 1) * Jg), *win)] += contrib
    y = y[(slice(None), slice(None), *[slice(pads[a], pads[a] + out[a]) for a in range(nd)])]
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape((-1,) + (1,) * nd)
    return y


def conv_transpose_lrp(
    x, W, b, R, rule, strides=None, pads=None, dilations=None, group=1, output_padding=None
) -> np.ndarray:
    """LRP through an ONNX ConvTranspose, as the equivalent Conv on the zero-inserted input; the
    inserted zeros are structural (masked like padding), relevance is read back at the real inputs."""
    xc, mask, Wc, real, size = _conv_transpose_as_conv(x, W, strides, pads, dilations, group, output_padding)
    nd = xc.ndim - 2
    Rc = conv_lrp(xc, Wc, b, R, rule, dilations=dilations, group=group, mask=mask)
    x = np.asarray(x, np.float64)
    Rx = np.zeros_like(x)
    for pos in itertools.product(*[range(h) for h in x.shape[2:]]):
        q = tuple(real[a][pos[a]] for a in range(nd))
        if all(0 <= q[a] < size[a] for a in range(nd)):
            Rx[(slice(None), slice(None), *pos)] = Rc[(slice(None), slice(None), *q)]
    return Rx


# ---------------------------------------------------------------------------------------------
# Dense (Gemm, MatMul)
# ---------------------------------------------------------------------------------------------


def dense_forward(x, W, b=None):
    """y = x W + b, x (M, K), W (K, J), b broadcastable to (M, J)."""
    y = np.asarray(x, np.float64) @ np.asarray(W, np.float64)
    return y if b is None else y + np.asarray(b, np.float64)


def dense_lrp(x, W, b, R, rule) -> np.ndarray:
    """LRP through y = x W + b (x (M, K), W (K, J), b broadcastable to (M, J))."""
    rule = normalize_rule(rule)
    x = np.asarray(x, np.float64)
    W = np.asarray(W, np.float64)
    M, K = x.shape
    J = W.shape[1]
    bb = np.zeros((M, J)) if b is None else np.broadcast_to(np.asarray(b, np.float64), (M, J))
    low, high = _bounds(rule, x.shape)
    Rx = local_lrp(
        rule,
        x[None],
        W[None],
        bb[None],
        np.asarray(R, np.float64)[None],
        np.ones((1, 1, K)),
        None if low is None else low[None],
        None if high is None else high[None],
    )
    return Rx[0]


def gemm_operands(A, B, C=None, alpha=1.0, beta=1.0, transA=0, transB=0):
    """Gemm with the activation A: x = A', weight alpha * B', bias beta * C broadcast to (M, J)."""
    x = np.asarray(A, np.float64)
    x = x.T if transA else x
    Bm = np.asarray(B, np.float64)
    Bm = Bm.T if transB else Bm
    W = alpha * Bm
    M, J = x.shape[0], W.shape[1]
    bias = np.zeros((M, J)) if C is None else np.broadcast_to(beta * np.asarray(C, np.float64), (M, J))
    return x, W, bias


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def _avgpool_divisor(pos, kernel, strides, dilations, pb, pe, sp, count_include_pad):
    """Number of taps averaged by the window at pos (as onnxruntime counts them)."""
    n = 1
    for a in range(len(sp)):
        start = pos[a] * strides[a] - pb[a]
        taps = [start + t * dilations[a] for t in range(kernel[a])]
        if count_include_pad:
            cnt = sum(1 for t in taps if -pb[a] <= t < sp[a] + pe[a])
        else:
            cnt = sum(1 for t in taps if 0 <= t < sp[a])
        n *= cnt
    return n


def _avgpool_setup(x, kernel, strides, pads, dilations, auto_pad, ceil_mode):
    sp = x.shape[2:]
    nd = len(sp)
    strides, dilations = _defaults(nd, strides, dilations)
    pb, pe, out = window_geometry(sp, kernel, strides, pads, dilations, auto_pad, ceil_mode)
    pe_all = _end_padding(sp, kernel, strides, dilations, pb, pe, out)
    return sp, strides, dilations, pb, pe, out, pe_all


def avgpool_forward(
    x, kernel, strides=None, pads=None, dilations=None, count_include_pad=0, ceil_mode=0, auto_pad="NOTSET"
):
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    sp, strides, dilations, pb, pe, out, pe_all = _avgpool_setup(
        x, kernel, strides, pads, dilations, auto_pad, ceil_mode
    )
    xp = _padded(x, pb, pe_all)
    y = np.zeros((N, C, *out))
    for pos in itertools.product(*[range(o) for o in out]):
        win = xp[(slice(None), slice(None), *_window(pos, kernel, strides, dilations))]
        div = _avgpool_divisor(pos, kernel, strides, dilations, pb, pe, sp, count_include_pad)
        y[(slice(None), slice(None), *pos)] = win.reshape(N, C, -1).sum(-1) / div
    return y


def avgpool_lrp(
    x,
    R,
    rule,
    kernel,
    strides=None,
    pads=None,
    dilations=None,
    count_include_pad=0,
    ceil_mode=0,
    auto_pad="NOTSET",
) -> np.ndarray:
    """AveragePool as a linear layer with weight 1/divisor on every tap of a window; channels are
    independent local problems. Positions are solved in groups that share a divisor."""
    rule = normalize_rule(rule)
    x = np.asarray(x, np.float64)
    R = np.asarray(R, np.float64)
    N, C = x.shape[:2]
    sp, strides, dilations, pb, pe, out, pe_all = _avgpool_setup(
        x, kernel, strides, pads, dilations, auto_pad, ceil_mode
    )
    K = int(np.prod(kernel))
    xp = _padded(x, pb, pe_all)
    onesp = _padded(np.ones((N, C, *sp)), pb, pe_all)
    low, high = _bounds(rule, x.shape)
    lowp = _padded(low, pb, pe_all) if low is not None else None
    highp = _padded(high, pb, pe_all) if high is not None else None
    Rxp = np.zeros_like(xp)
    by_divisor: dict[int, list[tuple]] = {}
    for pos in itertools.product(*[range(o) for o in out]):
        div = _avgpool_divisor(pos, kernel, strides, dilations, pb, pe, sp, count_include_pad)
        by_divisor.setdefault(div, []).append(pos)
    Rflat = R.reshape(N, C, -1)
    for div, positions in by_divisor.items():
        W = np.full((1, K, 1), 1.0 / div)
        step = max(1, CHUNK_ELEMENTS // (N * C * K))
        for i in range(0, len(positions), step):
            chunk = positions[i : i + step]
            P = len(chunk)

            def rows(a, chunk=chunk):  # (N, P, C, *k) -> (C, N*P, K)
                return _rows(_gather(a, chunk, kernel, strides, dilations), C, K)

            flat = [int(np.ravel_multi_index(pos, out)) for pos in chunk]
            Rj = Rflat[:, :, flat].transpose(1, 0, 2).reshape(C, N * P, 1)
            Rx = local_lrp(
                rule,
                rows(xp),
                W,
                0.0,
                Rj,
                rows(onesp),
                rows(lowp) if lowp is not None else None,
                rows(highp) if highp is not None else None,
            )
            Rx = Rx.reshape(C, N, P, K).transpose(1, 2, 0, 3).reshape(N, P, C, *kernel)
            _scatter_add(Rxp, Rx, chunk, kernel, strides, dilations)
    crop = (slice(None), slice(None), *[slice(b_, b_ + h) for b_, h in zip(pb, sp, strict=True)])
    return Rxp[crop]


def global_avgpool_forward(x):
    x = np.asarray(x, np.float64)
    axes = tuple(range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True)


def global_avgpool_lrp(x, R, rule) -> np.ndarray:
    """GlobalAveragePool: one window per channel, weight 1/(H*W) on every pixel."""
    rule = normalize_rule(rule)
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    K = int(np.prod(x.shape[2:]))
    low, high = _bounds(rule, x.shape)

    def chan(a):
        return a.reshape(a.shape[0], C, K).transpose(1, 0, 2)

    Rx = local_lrp(
        rule,
        chan(x),
        np.full((1, K, 1), 1.0 / K),
        0.0,
        np.asarray(R, np.float64).reshape(N, C).T[:, :, None],
        np.ones((1, 1, K)),
        chan(low) if low is not None else None,
        chan(high) if high is not None else None,
    )
    return Rx.transpose(1, 0, 2).reshape(x.shape)


def maxpool_forward(x, kernel, strides=None, pads=None, dilations=None, ceil_mode=0, auto_pad="NOTSET"):
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    _sp, strides, dilations, pb, _pe, out, pe_all = _avgpool_setup(
        x, kernel, strides, pads, dilations, auto_pad, ceil_mode
    )
    xp = _padded(x, pb, pe_all, value=-np.inf)
    y = np.zeros((N, C, *out))
    for pos in itertools.product(*[range(o) for o in out]):
        win = xp[(slice(None), slice(None), *_window(pos, kernel, strides, dilations))]
        y[(slice(None), slice(None), *pos)] = win.reshape(N, C, -1).max(-1)
    return y


def maxpool_lrp(
    x, R, kernel, strides=None, pads=None, dilations=None, ceil_mode=0, auto_pad="NOTSET"
) -> np.ndarray:
    """Winner-take-all: the relevance of a window goes to its first maximum (row-major order);
    overlapping windows accumulate; padded taps (-inf) never win."""
    x = np.asarray(x, np.float64)
    R = np.asarray(R, np.float64)
    N, C = x.shape[:2]
    sp, strides, dilations, pb, _pe, out, pe_all = _avgpool_setup(
        x, kernel, strides, pads, dilations, auto_pad, ceil_mode
    )
    K = int(np.prod(kernel))
    xp = _padded(x, pb, pe_all, value=-np.inf)
    Rxp = np.zeros_like(xp)
    for pos in itertools.product(*[range(o) for o in out]):
        idx = (slice(None), slice(None), *_window(pos, kernel, strides, dilations))
        win = xp[idx].reshape(N, C, K)
        first = np.argmax(win, axis=-1)  # np.argmax returns the first maximum
        onehot = np.arange(K)[None, None, :] == first[:, :, None]
        contrib = onehot * R[(slice(None), slice(None), *pos)][:, :, None]
        Rxp[idx] += contrib.reshape(xp[idx].shape)
    crop = (slice(None), slice(None), *[slice(b_, b_ + h) for b_, h in zip(pb, sp, strict=True)])
    return Rxp[crop]


def global_maxpool_lrp(x, R) -> np.ndarray:
    x = np.asarray(x, np.float64)
    N, C = x.shape[:2]
    flat = x.reshape(N, C, -1)
    first = np.argmax(flat, axis=-1)
    onehot = np.arange(flat.shape[-1])[None, None, :] == first[:, :, None]
    return (onehot * np.asarray(R, np.float64).reshape(N, C, 1)).reshape(x.shape)


def reduce_axes(node: onnx.NodeProto, vals: dict, attrs: dict, ndim: int) -> list[int]:
    """The axes a ReduceMean/ReduceSum/ReduceMax reduces (input or attribute; none given = all)."""
    axes = _const_inputs_axes(node, vals, attrs, 0)
    if not axes:
        return list(range(ndim))
    return sorted(a % ndim for a in axes)


def _grouped(x: np.ndarray, axes: list[int]) -> np.ndarray:
    """x as (G, N, K): G = the kept non-batch positions, K = the reduced elements (row-major)."""
    kept = [a for a in range(1, x.ndim) if a not in axes]
    moved = np.transpose(x, [*kept, 0, *axes])
    return moved.reshape(int(np.prod([x.shape[a] for a in kept])), x.shape[0], -1)


def _ungrouped(g: np.ndarray, shape: tuple, axes: list[int]) -> np.ndarray:
    kept = [a for a in range(1, len(shape)) if a not in axes]
    perm = [*kept, 0, *axes]
    moved = g.reshape([shape[a] for a in perm])
    return np.transpose(moved, np.argsort(perm))


def reduce_linear_lrp(x, R, axes: list[int], mean: bool, rule) -> np.ndarray:
    """ReduceMean / ReduceSum over `axes` (batch axis excluded): a linear layer per kept position
    with weight 1/K (mean) or 1 (sum) on each of its K reduced elements."""
    rule = normalize_rule(rule)
    x = np.asarray(x, np.float64)
    X = _grouped(x, axes)
    G, N, K = X.shape
    low, high = _bounds(rule, x.shape)
    Rg = np.asarray(R, np.float64).reshape(N, -1).T.reshape(G, N, 1)
    W = np.full((1, K, 1), 1.0 / K if mean else 1.0)
    Rx = local_lrp(
        rule,
        X,
        W,
        0.0,
        Rg,
        np.ones((1, 1, K)),
        _grouped(low, axes) if low is not None else None,
        _grouped(high, axes) if high is not None else None,
    )
    return _ungrouped(Rx, x.shape, axes)


def reduce_max_lrp(x, R, axes: list[int]) -> np.ndarray:
    """ReduceMax: each output's relevance goes to the first maximum of its reduced elements."""
    x = np.asarray(x, np.float64)
    X = _grouped(x, axes)
    G, N, K = X.shape
    first = np.argmax(X, axis=-1)
    onehot = np.arange(K)[None, None, :] == first[:, :, None]
    Rg = np.asarray(R, np.float64).reshape(N, -1).T.reshape(G, N, 1)
    return _ungrouped(onehot * Rg, x.shape, axes)


# ---------------------------------------------------------------------------------------------
# Elementwise affine layers (BatchNormalization, Add/Sub/Mul/Div with a constant) and sums
# ---------------------------------------------------------------------------------------------


def batchnorm_coefficients(scale, bias, mean, var, epsilon=1e-5, ndim=4):
    """BatchNormalization (inference) as y = a * x + c per channel; a, c shaped (C, 1, ..., 1)."""
    a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
    c = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a
    shape = (-1,) + (1,) * (ndim - 2)
    return a.reshape(shape), c.reshape(shape)


def batchnorm_forward(x, scale, bias, mean, var, epsilon=1e-5):
    x = np.asarray(x, np.float64)
    a, c = batchnorm_coefficients(scale, bias, mean, var, epsilon, x.ndim)
    return a * x + c


def elementwise_affine_lrp(x, a, c, R, rule) -> np.ndarray:
    """y = a * x + c elementwise (a, c broadcastable to x): a linear layer with diagonal weight a.

    Every element is its own local problem with one input and one output (the batch axis 0 is
    the row axis of the local problems; a must not vary along it)."""
    rule = normalize_rule(rule)
    x = np.asarray(x, np.float64)
    N = x.shape[0]
    E = x[0].size
    a_full = np.broadcast_to(np.asarray(a, np.float64), x.shape)[0].reshape(E, 1, 1)
    c_full = np.broadcast_to(np.asarray(c, np.float64), x.shape).reshape(N, E).T[:, :, None]
    low, high = _bounds(rule, x.shape)

    def col(t):
        return np.asarray(t, np.float64).reshape(N, E).T[:, :, None]  # (E, N, 1)

    Rx = local_lrp(
        rule,
        col(x),
        a_full,
        c_full,
        col(R),
        np.ones((1, 1, 1)),
        col(low) if low is not None else None,
        col(high) if high is not None else None,
    )
    return Rx[:, :, 0].T.reshape(x.shape)


def _unbroadcast(r: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum r over the axes along which an input of `shape` was broadcast."""
    while r.ndim > len(shape):
        r = r.sum(axis=0)
    for a, n in enumerate(shape):
        if n == 1 and r.shape[a] != 1:
            r = r.sum(axis=a, keepdims=True)
    return r


def sum_lrp(inputs: Sequence[np.ndarray], signs: Sequence[float], R, rule) -> list[np.ndarray]:
    """y = sum_k sign_k * input_k (residual Add, Sum, Sub of activations): per element a linear layer
    with inputs the summands and weights the signs. Under epsilon: R_k = in_k * sign_k * R / stab(y)."""
    rule = normalize_rule(rule)
    R = np.asarray(R, np.float64)
    shape = R.shape
    N = shape[0]
    E = int(np.prod(shape[1:]))
    xs = [np.broadcast_to(np.asarray(t, np.float64), shape) for t in inputs]
    X = np.stack([t.reshape(N, E).T for t in xs], axis=-1)  # (E, N, K)
    W = np.asarray(signs, np.float64).reshape(1, -1, 1)
    low, high = _bounds(rule, X.shape)
    Rx = local_lrp(rule, X, W, 0.0, R.reshape(N, E).T[:, :, None], np.ones((1, 1, len(xs))), low, high)
    return [_unbroadcast(Rx[:, :, k].T.reshape(shape), np.asarray(t).shape) for k, t in enumerate(inputs)]


# ---------------------------------------------------------------------------------------------
# Graph interpreter
# ---------------------------------------------------------------------------------------------

CONV_OPS = {"Conv", "ConvTranspose"}
DENSE_OPS = {"Gemm", "MatMul"}
AVGPOOL_OPS = {"AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum"}
LINEAR_OPS = CONV_OPS | DENSE_OPS | AVGPOOL_OPS
PASS_OPS = {
    "Relu",
    "LeakyRelu",
    "Identity",
    "Dropout",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "Softplus",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Cast",
}
RESHAPE_OPS = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
# ops through which the model input reaches a "first layer"
FIRST_LAYER_PATH_OPS = {"Reshape", "Flatten", "Transpose", "Identity", "Dropout", "Squeeze", "Unsqueeze"}


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _opset(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 17


def _softmax(x, axis, log, opset):
    if opset < 13:
        ax = axis if axis >= 0 else x.ndim + axis
        shp = x.shape
        x2 = x.reshape(int(np.prod(shp[:ax])), -1)
        m = x2 - x2.max(axis=1, keepdims=True)
        y = (
            m - np.log(np.exp(m).sum(1, keepdims=True))
            if log
            else np.exp(m) / np.exp(m).sum(1, keepdims=True)
        )
        return y.reshape(shp)
    m = x - x.max(axis=axis, keepdims=True)
    if log:
        return m - np.log(np.exp(m).sum(axis=axis, keepdims=True))
    e = np.exp(m)
    return e / e.sum(axis=axis, keepdims=True)


def _reshape_target(x, shape, allowzero=0):
    shape = [int(s) for s in shape]
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _const_inputs_axes(node, vals, attrs, opset, name="axes"):
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in np.asarray(vals[node.input[1]]).ravel()]
    return attrs.get(name)


def _gemm_args(node, vals, attrs):
    A = vals[node.input[0]]
    B = vals[node.input[1]]
    C = vals[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    return gemm_operands(
        A,
        B,
        C,
        attrs.get("alpha", 1.0),
        attrs.get("beta", 1.0),
        attrs.get("transA", 0),
        attrs.get("transB", 0),
    )


def _pool_kwargs(attrs, with_count=False):
    kw = {
        "kernel": list(attrs["kernel_shape"]),
        "strides": attrs.get("strides"),
        "pads": attrs.get("pads"),
        "dilations": attrs.get("dilations"),
        "ceil_mode": attrs.get("ceil_mode", 0),
        "auto_pad": attrs.get("auto_pad", "NOTSET"),
    }
    if with_count:
        kw["count_include_pad"] = attrs.get("count_include_pad", 0)
    return kw


def _conv_kwargs(attrs):
    return {
        "strides": attrs.get("strides"),
        "pads": attrs.get("pads"),
        "dilations": attrs.get("dilations"),
        "group": attrs.get("group", 1),
        "auto_pad": attrs.get("auto_pad", "NOTSET"),
    }


def _convt_kwargs(attrs):
    if attrs.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in attrs:
        raise NotImplementedError("reference: ConvTranspose with auto_pad or output_shape")
    return {
        "strides": attrs.get("strides"),
        "pads": attrs.get("pads"),
        "dilations": attrs.get("dilations"),
        "group": attrs.get("group", 1),
        "output_padding": attrs.get("output_padding"),
    }


def _affine_const(node, vals, is_act):
    """(a, c, activation input) for Add/Sub/Mul/Div with exactly one activation input."""
    i0, i1 = node.input[0], node.input[1]
    act_first = is_act(i0)
    act, const = (i0, i1) if act_first else (i1, i0)
    k = np.asarray(vals[const], np.float64)
    op = node.op_type
    if op == "Add":
        return 1.0, k, act
    if op == "Sub":
        return (1.0, -k, act) if act_first else (-1.0, k, act)
    if op == "Mul":
        return k, 0.0, act
    if op == "Div" and act_first:
        return 1.0 / k, 0.0, act
    raise NotImplementedError(f"{op} {node.name!r}: constant / activation is not a linear layer")


def forward_node(node: onnx.NodeProto, vals: dict, opset: int) -> list[np.ndarray]:
    """Plain numpy forward of one node (floats in float64)."""
    op = node.op_type
    at = _attrs(node)
    inp = [vals[i] if i else None for i in node.input]
    x = inp[0] if inp else None
    if op == "Constant":
        if "value" in at:
            return [numpy_helper.to_array(node.attribute[0].t)]
        for key in ("value_float", "value_int"):
            if key in at:
                return [np.asarray(at[key])]
        for key in ("value_floats", "value_ints"):
            if key in at:
                return [np.asarray(at[key])]
        raise NotImplementedError(f"Constant {at.keys()}")
    if op == "Conv":
        return [conv_forward(x, inp[1], inp[2] if len(inp) > 2 else None, **_conv_kwargs(at))]
    if op == "ConvTranspose":
        return [conv_transpose_forward(x, inp[1], inp[2] if len(inp) > 2 else None, **_convt_kwargs(at))]
    if op == "Gemm":
        xx, W, bias = _gemm_args(node, vals, at)
        return [dense_forward(xx, W, bias)]
    if op == "MatMul":
        return [np.matmul(np.asarray(x, np.float64), np.asarray(inp[1], np.float64))]
    if op == "AveragePool":
        return [avgpool_forward(x, **_pool_kwargs(at, True))]
    if op == "GlobalAveragePool":
        return [global_avgpool_forward(x)]
    if op == "MaxPool":
        return [maxpool_forward(x, **_pool_kwargs(at))]
    if op == "GlobalMaxPool":
        x = np.asarray(x, np.float64)
        return [x.max(axis=tuple(range(2, x.ndim)), keepdims=True)]
    if op in ("ReduceMean", "ReduceSum", "ReduceMax"):
        x = np.asarray(x, np.float64)
        axes = tuple(reduce_axes(node, vals, at, x.ndim))
        fn = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}[op]
        return [fn(x, axis=axes, keepdims=bool(at.get("keepdims", 1)))]
    if op == "BatchNormalization":
        return [batchnorm_forward(x, inp[1], inp[2], inp[3], inp[4], at.get("epsilon", 1e-5))]
    if op == "Relu":
        return [np.maximum(x, 0)]
    if op == "LeakyRelu":
        return [np.where(x >= 0, x, at.get("alpha", 0.01) * x)]
    if op == "Sigmoid":
        return [1 / (1 + np.exp(-x))]
    if op == "HardSigmoid":
        return [np.clip(at.get("alpha", 0.2) * x + at.get("beta", 0.5), 0, 1)]
    if op == "Tanh":
        return [np.tanh(x)]
    if op == "Clip":
        lo = inp[1] if len(inp) > 1 and inp[1] is not None else at.get("min", -np.inf)
        hi = inp[2] if len(inp) > 2 and inp[2] is not None else at.get("max", np.inf)
        return [np.clip(x, lo, hi)]
    if op in ("Identity", "Dropout"):
        return [x]
    if op == "Cast":
        dt = onnx.helper.tensor_dtype_to_np_dtype(at["to"])
        return [np.asarray(x, np.float64 if np.issubdtype(dt, np.floating) else dt)]
    if op == "Flatten":
        ax = at.get("axis", 1)
        ax = ax if ax >= 0 else x.ndim + ax
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if op == "Reshape":
        return [_reshape_target(x, np.asarray(inp[1]).ravel(), at.get("allowzero", 0))]
    if op == "Squeeze":
        axes = _const_inputs_axes(node, vals, at, opset)
        return [np.squeeze(x, axis=tuple(axes)) if axes is not None else np.squeeze(x)]
    if op == "Unsqueeze":
        axes = _const_inputs_axes(node, vals, at, opset)
        y = np.asarray(x)
        nd = y.ndim + len(axes)
        for a in sorted(a if a >= 0 else a + nd for a in axes):
            y = np.expand_dims(y, a)
        return [y]
    if op == "Transpose":
        perm = at.get("perm", list(range(x.ndim))[::-1])
        return [np.transpose(x, perm)]
    if op == "Concat":
        return [np.concatenate([np.asarray(t) for t in inp], axis=at["axis"])]
    if op == "Shape":
        shp = np.asarray(np.shape(x), np.int64)
        return [shp[at.get("start", 0) : at.get("end", None)]]
    if op == "Gather":
        return [np.take(x, np.asarray(inp[1]), axis=at.get("axis", 0))]
    if op in ("Softmax", "LogSoftmax"):
        default_axis = -1 if opset >= 13 else 1
        return [_softmax(np.asarray(x, np.float64), at.get("axis", default_axis), op == "LogSoftmax", opset)]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = inp[0], inp[1]
        fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        if np.issubdtype(np.asarray(a).dtype, np.integer) and np.issubdtype(np.asarray(b).dtype, np.integer):
            return [np.floor_divide(a, b) if op == "Div" else fn(a, b)]
        return [fn(np.asarray(a, np.float64), np.asarray(b, np.float64))]
    if op == "Sum":
        return [sum(np.asarray(t, np.float64) for t in inp)]
    raise NotImplementedError(f"reference: no forward for op {op} ({node.name!r})")


def _as_model(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return onnx.load_from_string(model)
    return onnx.load(str(model))


def _fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold a BatchNormalization into the Conv before it (when only the BN reads the Conv output):
    W' = a W, b' = a (b - mean) + beta with a = scale / sqrt(var + eps). Exact."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    drop = set()
    for bn in g.node:
        if bn.op_type != "BatchNormalization":
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits:
            continue
        if consumers.get(bn.input[0], 0) != 1 or bn.input[0] in outputs:
            continue
        if not all(i in inits for i in bn.input[1:5]):
            continue
        if len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits:
            continue
        sc, bi, me, va = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        a = sc / np.sqrt(va + _attrs(bn).get("epsilon", 1e-5))
        W = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        has_b = len(conv.input) > 2 and conv.input[2]
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_b else np.zeros(W.shape[0])
        wname, bname = conv.output[0] + "__bnfold_W", conv.output[0] + "__bnfold_B"
        g.initializer.extend(
            [
                numpy_helper.from_array(W * a.reshape((-1,) + (1,) * (W.ndim - 1)), wname),
                numpy_helper.from_array(a * (b - me) + bi, bname),
            ]
        )
        x_in = conv.input[0]
        del conv.input[:]
        conv.input.extend([x_in, wname, bname])
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
    kept = [onnx.NodeProto.FromString(n.SerializeToString()) for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(kept)
    return model


def reference_forward(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor of the graph (initializers, Constant outputs, activations) as numpy arrays."""
    model = _as_model(model)
    g = model.graph
    opset = _opset(model)
    vals: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in vals]
    vals[inputs[0]] = np.asarray(x, np.float64)
    for node in g.node:
        outs = forward_node(node, vals, opset)
        for name, v in zip(node.output, outs, strict=False):
            if name:
                vals[name] = v
    return vals


def _activation_tensors(g: onnx.GraphProto, x_name: str) -> set[str]:
    act = {x_name}
    for n in g.node:
        if any(i in act for i in n.input):
            act.update(o for o in n.output if o)
    return act


def _input_tensor_name(g: onnx.GraphProto) -> str:
    inits = {t.name for t in g.initializer}
    return next(i.name for i in g.input if i.name not in inits)


def is_first_layer(g: onnx.GraphProto, node: onnx.NodeProto, act_input: str) -> bool:
    """A linear layer whose activation input is the model input, reached only through shape ops."""
    if node.op_type not in LINEAR_OPS:
        return False
    x_name = _input_tensor_name(g)
    producers = {o: n for n in g.node for o in n.output}
    t = act_input
    while True:
        if t == x_name:
            return True
        p = producers.get(t)
        if p is None or p.op_type not in FIRST_LAYER_PATH_OPS:
            return False
        t = p.input[0]


def _one_hot_seed(logits: np.ndarray, target, seed: str) -> tuple[np.ndarray, np.ndarray]:
    N = logits.shape[0]
    flat = logits.reshape(N, -1)
    pred = flat.argmax(axis=1)
    if target is None:
        t = pred
    else:
        t = np.broadcast_to(np.asarray(target, np.int64).reshape(-1), (N,)).copy()
        t = np.where(t < 0, pred, t)
    mask = np.zeros_like(flat)
    mask[np.arange(N), t] = 1.0
    R = flat * mask if seed == "logit" else mask
    if seed not in ("logit", "onehot"):
        raise ValueError(f"seed must be 'logit' or 'onehot', not {seed!r}")
    return R.reshape(logits.shape), t


def reference_lrp(
    model,
    x: np.ndarray,
    rule_for_node: Callable[[onnx.NodeProto, bool], tuple],
    target=None,
    seed: str = "logit",
    start: str | None = None,
    start_seed: np.ndarray | None = None,
    output: str | None = None,
    fold_batchnorm: bool = False,
    constant_arith: str = "pass",
) -> dict[str, np.ndarray]:
    """Run the forward pass in numpy, seed the relevance and propagate it backwards node by node.

    fold_batchnorm: fold a BatchNormalization into the Conv before it (otherwise it is an affine
    layer y = a x + c that gets its own rule). constant_arith: Add/Sub/Mul/Div of an activation and
    a constant (not fused as a bias into the Conv/Gemm/MatMul before it) pass the relevance through
    unchanged ("pass", LRP-0 of a diagonal layer for Mul/Div) or are affine layers with their
    node's rule ("affine").

    Returns {"relevance": R of the model input, "relevance:<t>": R of every tensor that got
    relevance, "logits": the explained outputs (input of a trailing Softmax/LogSoftmax),
    "output": the model output, "target": the target class per sample}.
    """
    model = _as_model(model)
    if fold_batchnorm:
        model = _fold_batchnorm(model)
    g = model.graph
    vals = reference_forward(model, x)
    x_name = _input_tensor_name(g)
    act = _activation_tensors(g, x_name)

    def is_act(t):
        return t in act

    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    out_name = output or g.output[0].name
    logits_name = out_name
    skipped = set()
    p = producers.get(out_name)
    if p is not None and p.op_type in ("Softmax", "LogSoftmax"):
        logits_name = p.input[0]
        skipped.add(id(p))
    logits = vals[logits_name]

    # Conv/Gemm/MatMul followed by an Add of a constant (read only by that Add): the constant is
    # the layer's bias (for a Conv only when it is per output channel). The Add passes R through.
    fused_add: set[int] = set()
    extra_bias: dict[int, np.ndarray] = {}  # id(linear node) -> constant added to its output
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(consumers.get(n.output[0], [])) != 1:
            continue
        c = consumers[n.output[0]][0]
        if c.op_type != "Add" or n.output[0] == out_name or len(c.input) != 2:
            continue
        other = c.input[1] if c.input[0] == n.output[0] else c.input[0]
        if is_act(other):
            continue
        k = np.asarray(vals[other], np.float64)
        if n.op_type == "Conv":
            out_rank = np.ndim(vals[n.output[0]])
            if k.ndim > out_rank or k.size not in (1, np.shape(vals[n.output[0]])[1]):
                continue
            if any(d != 1 for i, d in enumerate(k.shape[::-1]) if i != out_rank - 2):
                continue
            k = np.broadcast_to(k.reshape(-1), (np.shape(vals[n.output[0]])[1],))
        fused_add.add(id(c))
        extra_bias[id(n)] = k

    rel: dict[str, np.ndarray] = {}
    if start is None:
        R0, t = _one_hot_seed(np.asarray(logits, np.float64), target, seed)
        rel[logits_name] = R0
    else:
        rel[start] = np.asarray(start_seed, np.float64).reshape(np.shape(vals[start]))
        _, t = _one_hot_seed(np.asarray(logits, np.float64), target, "onehot")

    producer = {out: node for node in g.node for out in node.output}

    def is_gate(name):
        """A Sigmoid/HardSigmoid output, possibly reshaped: a multiplicative gate."""
        node = producer.get(name)
        while node is not None and node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity"):
            node = producer.get(node.input[0])
        return node is not None and node.op_type in ("Sigmoid", "HardSigmoid")

    def add_rel(name, r):
        if not is_act(name):
            return
        r = np.asarray(r, np.float64).reshape(np.shape(vals[name]))
        rel[name] = rel[name] + r if name in rel else r

    # reverse topological order: when a node is reached, every consumer of its output has added
    # its share to rel[output]; nodes whose output carries no relevance take no part
    for n in reversed(g.node):
        if id(n) in skipped or n.output[0] not in rel:
            continue
        R = rel[n.output[0]]
        op = n.op_type
        at = _attrs(n)
        ins = [i for i in n.input]
        act_ins = [i for i in ins if i and is_act(i)]
        if not act_ins:
            continue

        def rule_of(node, act_input):
            return normalize_rule(rule_for_node(node, is_first_layer(g, node, act_input)))

        if op == "Conv":
            r = rule_of(n, ins[0])
            xin = vals[ins[0]]
            b = np.asarray(vals[ins[2]], np.float64) if len(ins) > 2 and ins[2] else None
            if id(n) in extra_bias:
                b = extra_bias[id(n)] if b is None else b + extra_bias[id(n)]
            add_rel(ins[0], conv_lrp(xin, vals[ins[1]], b, R, r, **_conv_kwargs(at)))
        elif op == "ConvTranspose":
            r = rule_of(n, ins[0])
            b = np.asarray(vals[ins[2]], np.float64) if len(ins) > 2 and ins[2] else None
            add_rel(ins[0], conv_transpose_lrp(vals[ins[0]], vals[ins[1]], b, R, r, **_convt_kwargs(at)))
        elif op == "Gemm":
            if not is_act(ins[0]) or is_act(ins[1]):
                raise NotImplementedError(f"Gemm {n.name!r}: only A may be the activation")
            r = rule_of(n, ins[0])
            xx, W, bias = _gemm_args(n, vals, at)
            if id(n) in extra_bias:
                bias = bias + np.broadcast_to(extra_bias[id(n)], bias.shape)
            rx = dense_lrp(xx, W, bias, R, r)
            add_rel(ins[0], rx.T if at.get("transA", 0) else rx)
        elif op == "MatMul":
            r = rule_of(n, ins[0])
            add_rel(ins[0], _matmul_lrp(n, vals, R, extra_bias.get(id(n)), r, is_act))
        elif op == "Add" and id(n) in fused_add:
            add_rel(act_ins[0], R)  # the bias is part of the layer before
        elif op == "AveragePool":
            add_rel(ins[0], avgpool_lrp(vals[ins[0]], R, rule_of(n, ins[0]), **_pool_kwargs(at, True)))
        elif op == "GlobalAveragePool":
            add_rel(ins[0], global_avgpool_lrp(vals[ins[0]], R, rule_of(n, ins[0])))
        elif op == "MaxPool":
            add_rel(ins[0], maxpool_lrp(vals[ins[0]], R, **_pool_kwargs(at)))
        elif op == "GlobalMaxPool":
            add_rel(ins[0], global_maxpool_lrp(vals[ins[0]], R))
        elif op in ("ReduceMean", "ReduceSum"):
            axes = reduce_axes(n, vals, at, np.ndim(vals[ins[0]]))
            add_rel(ins[0], reduce_linear_lrp(vals[ins[0]], R, axes, op == "ReduceMean", rule_of(n, ins[0])))
        elif op == "ReduceMax":
            add_rel(ins[0], reduce_max_lrp(vals[ins[0]], R, reduce_axes(n, vals, at, np.ndim(vals[ins[0]]))))
        elif op == "BatchNormalization":
            a, c = batchnorm_coefficients(*[vals[i] for i in ins[1:5]], at.get("epsilon", 1e-5), R.ndim)
            add_rel(ins[0], elementwise_affine_lrp(vals[ins[0]], a, c, R, rule_of(n, ins[0])))
        elif op in PASS_OPS:
            add_rel(ins[0], R)
        elif op in RESHAPE_OPS:
            add_rel(ins[0], R.reshape(np.shape(vals[ins[0]])))
        elif op == "Transpose":
            perm = at.get("perm", list(range(R.ndim))[::-1])
            add_rel(ins[0], np.transpose(R, np.argsort(perm)))
        elif op == "Concat":
            axis = at["axis"]
            sizes = [np.shape(vals[i])[axis] for i in ins]
            parts = np.split(R, np.cumsum(sizes)[:-1], axis=axis)
            for i, part in zip(ins, parts, strict=True):
                add_rel(i, part)
        elif op in ("Add", "Sub", "Sum") and len(act_ins) == len(ins):
            signs = [1.0] * len(ins) if op != "Sub" else [1.0, -1.0]
            r = rule_of(n, ins[0])
            for i, ri in zip(ins, sum_lrp([vals[i] for i in ins], signs, R, r), strict=True):
                add_rel(i, ri)
        elif op == "Mul" and len(act_ins) == 2 and [is_gate(t) for t in act_ins].count(True) == 1:
            signal = next(t for t in act_ins if not is_gate(t))  # x * gate: the signal takes all
            add_rel(signal, _unbroadcast(R, np.shape(vals[signal])))
        elif op in ("Add", "Sub", "Mul", "Div") and len(act_ins) == 1:
            if constant_arith == "affine":
                a, c, xi = _affine_const(n, vals, is_act)
                add_rel(xi, elementwise_affine_lrp(vals[xi], a, c, R, rule_of(n, xi)))
            else:
                add_rel(act_ins[0], _unbroadcast(R, np.shape(vals[act_ins[0]])))
        elif op in ("Softmax", "LogSoftmax"):
            raise NotImplementedError(f"{op} {n.name!r} inside the graph: only a trailing one is skipped")
        else:
            raise NotImplementedError(f"reference: no relevance rule for op {op} ({n.name!r})")

    result = {f"relevance:{k}": v for k, v in rel.items()}
    result["relevance"] = rel.get(x_name, np.zeros(np.shape(vals[x_name])))
    result["logits"] = np.asarray(logits)
    result["output"] = np.asarray(vals[out_name])
    result["target"] = np.asarray(t)
    return result


def _matmul_lrp(n, vals, R, bias, rule, is_act):
    """MatMul x (..., K) @ W (K, J) (+ bias): the leading axes of x are rows of a dense layer."""
    xin, Wn = n.input[0], n.input[1]
    if not is_act(xin) or is_act(Wn):
        raise NotImplementedError(f"MatMul {n.name!r}: only the first operand may be the activation")
    x = np.asarray(vals[xin], np.float64)
    W = np.asarray(vals[Wn], np.float64)
    if W.ndim != 2 or x.ndim < 2:
        raise NotImplementedError(f"MatMul {n.name!r}: needs a 2-D constant weight")
    K, J = W.shape
    out_shape = (*x.shape[:-1], J)
    b = None if bias is None else np.broadcast_to(np.asarray(bias, np.float64), out_shape).reshape(-1, J)
    rx = dense_lrp(x.reshape(-1, K), W, b, np.asarray(R).reshape(-1, J), rule)
    return rx.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Rule assignment: composites and single rules
# ---------------------------------------------------------------------------------------------

_AFFINE_OPS = {"BatchNormalization", "Add", "Sub", "Mul", "Div", "Sum"}


def composite_rule_for_node(
    name: str, epsilon: float | None = None, low=-1.0, high=1.0
) -> Callable[[onnx.NodeProto, bool], tuple]:
    """rule_for_node for the composites of the README (section "Rules").

    conv = Conv/ConvTranspose, dense = Gemm/MatMul, avgpool = AveragePool/GlobalAveragePool.
    The first-layer rule (flat, zbox) applies to conv and dense first layers.
    Affine and sum layers (BatchNormalization, residual Add, Add/Mul of a constant) get epsilon:
    eps (default 1.0) under "epsilon", the stabilizer 1e-6 (zennit's Norm/Sum rule) otherwise.
    """
    names = {"epsilon", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-plus-flat", "epsilon-gamma-box"}
    if name not in names:
        raise ValueError(f"unknown composite {name!r}")

    def rule_for_node(node: onnx.NodeProto, is_first: bool) -> tuple:
        op = node.op_type
        if name == "epsilon":
            return ("epsilon", 1.0 if epsilon is None else epsilon)
        dense_eps = STABILIZER if epsilon is None else epsilon
        if op in AVGPOOL_OPS or op in _AFFINE_OPS:
            return ("epsilon", STABILIZER)  # zennit's Norm rule
        if is_first and op in CONV_OPS | DENSE_OPS:
            if name == "epsilon-plus-flat":
                return ("flat",)
            if name == "epsilon-gamma-box":
                return ("zbox", low, high)
        if op in CONV_OPS:
            return {
                "epsilon-plus": ("zplus",),
                "epsilon-plus-flat": ("zplus",),
                "epsilon-alpha2-beta1": ("alphabeta", 2.0, 1.0),
                "epsilon-gamma-box": ("gamma", 0.25),
            }[name]
        return ("epsilon", dense_eps)  # dense

    return rule_for_node


def single_rule(rule: Sequence) -> Callable[[onnx.NodeProto, bool], tuple]:
    """Every linear layer (conv, dense, pooling, BatchNormalization, Add/Mul of a constant) gets `rule`.
    A sum of activations (residual Add) gets epsilon with the rule's eps for epsilon/lrp0 and the
    stabilizer 1e-6 under the other rules."""
    rule = normalize_rule(rule)

    def rule_for_node(node: onnx.NodeProto, is_first: bool) -> tuple:
        if node.op_type in ("Add", "Sub", "Sum") and rule[0] != "epsilon":
            return ("epsilon", STABILIZER)
        return rule

    return rule_for_node


__all__ = [
    "STABILIZER",
    "avgpool_forward",
    "avgpool_lrp",
    "batchnorm_forward",
    "composite_rule_for_node",
    "conv_forward",
    "conv_lrp",
    "conv_transpose_forward",
    "conv_transpose_lrp",
    "dense_forward",
    "dense_lrp",
    "elementwise_affine_lrp",
    "gemm_operands",
    "global_avgpool_forward",
    "global_avgpool_lrp",
    "global_maxpool_lrp",
    "local_lrp",
    "maxpool_forward",
    "maxpool_lrp",
    "normalize_rule",
    "reference_forward",
    "reference_lrp",
    "single_rule",
    "stab",
    "sum_lrp",
    "window_geometry",
]
