"""An independent numpy implementation of the LRP toolbox's forward pass and LRP rules (test oracle).

Written from the text format's description and the rules' formulas, in the toolbox's conventions:
NHWC tensors, filters (h, w, d, n), no padding, loops over windows, float64 arithmetic.

Rules (``rule`` argument of :func:`lrp`), per linear layer z_j = sum_i x_i w_ij + b_j:
- ``simple``:    R_i = sum_j z_ij / (z_j + 1e-16 sign0(z_j)) R_j            (sign0(0) = +1)
- ``epsilon``:   likewise with eps * ((z_j >= 0) * 2 - 1)
- ``alphabeta``: alpha * [z_ij > 0] z_ij / (sum_i z_ij^+ + b_j^+ + stab) R_j
                 + (1 - alpha) * [z_ij < 0] z_ij / (sum_i z_ij^- + b_j^- - stab) R_j   (alpha - beta = 1)
- ``flat``:      R_i = sum_j R_j / fan_in_j                        (weights 1, no bias)
- ``ww``:        R_i = sum_j w_ij^2 / sum_i w_ij^2 R_j            (no bias, as the toolbox)
SumPool is a linear layer on the *unscaled* window sum (weights 1 per channel, no bias); its forward
multiplies the sum by 1/sqrt(h*w). MaxPool is winner-take-all under simple/epsilon/alphabeta (ties
split equally, ``maxpool_ties="first"`` gives all to the first maximum in row-major order instead, as
onnxlrp); under flat and ww the toolbox spreads relevance uniformly over the window
(``maxpool_flat="uniform"``, the toolbox's) - ``maxpool_flat="winner"`` keeps winner-take-all (onnxlrp's).
Rect/Tanh pass relevance through, SoftMax is skipped, and relevance starts as the target logit times a
one-hot mask.
"""

from __future__ import annotations

import numpy as np

HEADER_ARGS = {
    "Linear": 2,
    "Convolution": 6,
    "SumPool": 4,
    "MaxPool": 4,
    "Rect": 0,
    "Tanh": 0,
    "SoftMax": 0,
    "Flatten": 0,
}


def read_model(path) -> list[dict]:
    """Parse a toolbox text file into a list of dicts {kind, params, W, B} (weights float32 -> float64)."""
    with open(path, encoding="utf-8") as handle:
        lines = [ln.split() for ln in handle if ln.strip()]
    layers, k = [], 0
    while k < len(lines):
        kind, params = lines[k][0], [int(v) for v in lines[k][1:]]
        assert kind in HEADER_ARGS and len(params) == HEADER_ARGS[kind], lines[k]
        k += 1
        layer = {"kind": kind, "params": params}
        if kind in ("Linear", "Convolution"):
            shape = params[:2] if kind == "Linear" else params[:4]
            n_rows = params[0] if kind == "Linear" and len(lines[k]) != params[0] * params[1] else 1
            w = np.array(
                [v for row in lines[k : k + n_rows] for v in row], dtype=np.float64
            )  # legacy: m rows
            b = np.array(lines[k + n_rows], dtype=np.float64)
            k += n_rows + 1
            # the importer stores float32: use the same values
            layer["W"] = w.reshape(shape).astype(np.float32).astype(np.float64)
            layer["B"] = b.astype(np.float32).astype(np.float64)
        layers.append(layer)
    return layers


def sign0(z):
    return (z >= 0) * 2.0 - 1.0


def _windows(H, W, h, w, s0, s1):
    for i in range((H - h) // s0 + 1):
        for j in range((W - w) // s1 + 1):
            yield i, j, slice(i * s0, i * s0 + h), slice(j * s1, j * s1 + w)


def _local_lrp(x, W, B, R, rule, param, stab):
    """One linear map z = x @ W + B with x (N, K), W (K, n), B (n,), R (N, n) -> Rx (N, K)."""
    if rule in ("simple", "epsilon"):
        eps = 1e-16 if rule == "simple" else param
        Z = x[:, :, None] * W[None]
        Zs = Z.sum(axis=1) + B
        Zs = Zs + eps * sign0(Zs)
        return (Z / Zs[:, None, :] * R[:, None, :]).sum(axis=2)
    if rule == "alphabeta":
        alpha = param
        beta = 1.0 - alpha  # the toolbox's internal beta (negative); alpha - |beta| = 1
        Z = x[:, :, None] * W[None]
        Zp = Z * (Z > 0)
        Zn = Z * (Z < 0)
        Zsp = Zp.sum(axis=1) + B * (B > 0) + stab
        Zsn = Zn.sum(axis=1) + B * (B < 0) - stab
        Ra = alpha * (Zp / Zsp[:, None, :] * R[:, None, :]).sum(axis=2)
        Rb = beta * (Zn / Zsn[:, None, :] * R[:, None, :]).sum(axis=2)
        return Ra + Rb
    if rule == "flat":
        Z = np.ones_like(W)
        return ((Z / Z.sum(axis=0))[None] * R[:, None, :]).sum(axis=2) * np.ones_like(x)
    if rule == "ww":
        Z = W**2
        return ((Z / Z.sum(axis=0))[None] * R[:, None, :]).sum(axis=2)
    raise ValueError(rule)


class Net:
    """A toolbox network: forward(X) stores activations, lrp(R, rule, param) propagates relevance."""

    def __init__(self, layers, maxpool_ties="split", maxpool_flat="uniform", stab=1e-16):
        self.layers = layers
        self.maxpool_ties = maxpool_ties
        self.maxpool_flat = maxpool_flat
        self.stab = stab

    def forward(self, X):
        """Forward pass; returns (logits, probabilities or None). X: (N, m) or NHWC (N, H, W, D)."""
        self.inputs = []
        X = np.asarray(X, dtype=np.float64)
        probs = None
        for layer in self.layers:
            self.inputs.append(X)
            kind, p = layer["kind"], layer["params"]
            if kind == "Linear":
                X = X.reshape(X.shape[0], -1) @ layer["W"] + layer["B"]
            elif kind == "Convolution":
                h, w, _, n, s0, s1 = p
                N, H, Wd, _ = X.shape
                Y = np.zeros((N, (H - h) // s0 + 1, (Wd - w) // s1 + 1, n))
                for i, j, si, sj in _windows(H, Wd, h, w, s0, s1):
                    Y[:, i, j, :] = np.tensordot(X[:, si, sj, :], layer["W"], axes=3) + layer["B"]
                X = Y
            elif kind in ("SumPool", "MaxPool"):
                h, w, s0, s1 = p
                N, H, Wd, D = X.shape
                Y = np.zeros((N, (H - h) // s0 + 1, (Wd - w) // s1 + 1, D))
                for i, j, si, sj in _windows(H, Wd, h, w, s0, s1):
                    win = X[:, si, sj, :]
                    Y[:, i, j, :] = (
                        win.sum(axis=(1, 2)) / np.sqrt(h * w) if kind == "SumPool" else win.max(axis=(1, 2))
                    )
                X = Y
            elif kind == "Rect":
                X = np.maximum(X, 0)
            elif kind == "Tanh":
                X = np.tanh(X)
            elif kind == "Flatten":
                X = X.reshape(X.shape[0], -1)
            elif kind == "SoftMax":
                e = np.exp(X - X.max(axis=-1, keepdims=True))
                probs = e / e.sum(axis=-1, keepdims=True)
        self.logits = self.inputs[-1] if self.layers[-1]["kind"] == "SoftMax" else X
        return self.logits, probs

    def seed(self, target=None):
        logits = self.logits.reshape(self.logits.shape[0], -1)
        if target is None:
            target = logits.argmax(axis=1)
        target = np.broadcast_to(np.asarray(target), (logits.shape[0],))
        mask = np.zeros_like(logits)
        mask[np.arange(logits.shape[0]), target] = 1.0
        return (logits * mask).reshape(self.logits.shape)

    def lrp(self, R, rule="simple", param=None):
        """Propagate relevance R (shaped like the logits) to the input; call forward first."""
        if param is None:
            param = {"epsilon": 1.0, "alphabeta": 2.0}.get(rule)
        layers = self.layers[:-1] if self.layers[-1]["kind"] == "SoftMax" else self.layers
        for layer, X in zip(reversed(layers), reversed(self.inputs[: len(layers)]), strict=True):
            R = self._layer_lrp(layer, X, R, rule, param)
        return R

    def _layer_lrp(self, layer, X, R, rule, param):
        kind, p = layer["kind"], layer["params"]
        if kind in ("Rect", "Tanh"):
            return R
        if kind == "Flatten":
            return R.reshape(X.shape)
        if kind == "Linear":
            x = X.reshape(X.shape[0], -1)
            return _local_lrp(x, layer["W"], layer["B"], R, rule, param, self.stab).reshape(X.shape)
        N, H, Wd, D = X.shape
        Rx = np.zeros_like(X)
        if kind == "Convolution":
            h, w, d, n, s0, s1 = p
            Wf = layer["W"].reshape(h * w * d, n)
            for i, j, si, sj in _windows(H, Wd, h, w, s0, s1):
                x = X[:, si, sj, :].reshape(N, -1)
                r = _local_lrp(x, Wf, layer["B"], R[:, i, j, :], rule, param, self.stab)
                Rx[:, si, sj, :] += r.reshape(N, h, w, d)
            return Rx
        h, w, s0, s1 = p
        for i, j, si, sj in _windows(H, Wd, h, w, s0, s1):
            win = X[:, si, sj, :]  # (N, h, w, D)
            r_out = R[:, i, j, :]  # (N, D)
            if kind == "SumPool":
                # per channel: a linear map with weights 1 on the unscaled window sum
                x = win.transpose(0, 3, 1, 2).reshape(N * D, h * w)
                r = _local_lrp(
                    x, np.ones((h * w, 1)), np.zeros(1), r_out.reshape(N * D, 1), rule, param, self.stab
                )
                Rx[:, si, sj, :] += r.reshape(N, D, h, w).transpose(0, 2, 3, 1)
            elif rule in ("flat", "ww") and self.maxpool_flat == "uniform":
                Rx[:, si, sj, :] += np.broadcast_to(r_out[:, None, None, :] / (h * w), win.shape)
            else:
                winners = (win == win.max(axis=(1, 2), keepdims=True)).astype(np.float64)
                if self.maxpool_ties == "first":
                    flat = winners.transpose(0, 3, 1, 2).reshape(N, D, h * w)
                    first = np.zeros_like(flat)
                    idx = flat.argmax(axis=2)
                    first[np.arange(N)[:, None], np.arange(D)[None, :], idx] = 1.0
                    winners = first.reshape(N, D, h, w).transpose(0, 2, 3, 1)
                share = winners / winners.sum(axis=(1, 2), keepdims=True)
                Rx[:, si, sj, :] += share * r_out[:, None, None, :]
        return Rx


def reference_relevance(path_or_layers, X, rule="simple", param=None, target=None, **options):
    """Convenience: (relevance, logits) for input X under ``rule`` (toolbox names: simple, epsilon,
    alphabeta, flat, ww)."""
    layers = read_model(path_or_layers) if not isinstance(path_or_layers, list) else path_or_layers
    net = Net(layers, **options)
    logits, _ = net.forward(X)
    return net.lrp(net.seed(target), rule, param), logits
