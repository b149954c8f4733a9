"""The heatmaps compared: LRP relevance of a method, the random baseline, and the
gradient x input identity check."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp.evaluation.metrics import RANDOM, ForwardFn, region_relevance
from onnxlrp.explaining import run_batched
from onnxlrp.loading import ModelLike, load_model
from onnxlrp.methods import Method, parse_method
from onnxlrp.ops import has_fact
from onnxlrp.scan import InputRelevance, scan


def gradient_x_input_ok(model: ModelLike) -> list[str]:
    """Op types in ``model`` that break the LRP-0 == gradient x input identity (empty list: it holds).

    For a graph of linear layers (Conv, Gemm, MatMul, pooling, BatchNorm; biases included), ReLU-like
    positively homogeneous activations, max pooling and residual adds, LRP-0 relevance (the bias in
    the denominator, relevance passed through the activation unchanged) equals x * df/dx exactly:
    by induction from the top, R_a = a * df/da at every tensor, since a ReLU's R/z = [z > 0] * df/da.
    """
    proto = load_model(model)
    return sorted({n.op_type for n in proto.graph.node if not has_fact(n.op_type, "piecewise_linear")})


def random_relevance(shape: Sequence[int], seed: int = 0, index_offset: int = 0) -> np.ndarray:
    """Random heatmaps [N, C, H, W]: image i's from default_rng([seed, 1, index_offset + i])."""
    n = shape[0]
    return np.stack(
        [
            np.random.default_rng([seed, RANDOM, index_offset + i]).standard_normal(tuple(shape[1:]))
            for i in range(n)
        ]
    ).astype(np.float32)


def compute_relevance(
    model: ModelLike,
    x: np.ndarray,
    targets: np.ndarray,
    method: Method,
    batch_size: int = 256,
    seed: int = 0,
    low: Any = None,
    high: Any = None,
    progress: bool = False,
    compiled: Any = None,
    store: str | os.PathLike | None = None,
    backend: str = "local",
) -> np.ndarray:
    """Heatmaps [N, C, H, W] of ``method`` for ``targets`` (the LRP ones via onnxlrp.compile, or the
    relevance graph ``compiled``); ``low``/``high``: the box bounds of zbox and epsilon-gamma-box.
    With ``store`` (a folder) the heatmaps are computed by ``onnxlrp.scan`` into a subfolder per
    method, resumable and reused by a later run, on ``backend`` ("local" or "ray")."""
    if method.kind == "random":
        return random_relevance(x.shape, seed)
    import onnxlrp

    kwargs = dict(method.kwargs)
    if kwargs.get("rule") == "zbox" or kwargs.get("composite") == "epsilon-gamma-box":
        kwargs.setdefault("low", low)
        kwargs.setdefault("high", high)
    graph = compiled if compiled is not None else onnxlrp.compile(model, **kwargs)
    if store is not None:
        folder = Path(store) / re.sub(r"[^A-Za-z0-9._-]+", "_", method.label)
        data = np.ascontiguousarray(x, dtype=np.float32)
        scanned = scan(
            graph.SerializeToString(), data, InputRelevance(), folder, targets=targets,
            batch_size=batch_size, progress=progress, backend=backend, describe="input relevance",
        )  # fmt: skip
        return np.asarray(scanned.array("relevance"), dtype=np.float32)
    session = onnxlrp.RelevanceSession(graph)
    result = run_batched(
        session.run,
        x,
        batch_size=batch_size,
        desc=f"relevance {method.label}" if progress else None,
        target=np.asarray(targets, dtype=np.int64),
    )
    return np.asarray(result["relevance"], dtype=np.float32)


def finite_difference_check(
    forward_fn: ForwardFn,
    x: np.ndarray,
    relevance: np.ndarray,
    targets: np.ndarray,
    pixels: int = 8,
    step: float = 1e-2,
    seed: int = 0,
) -> float:
    """Largest |x_i * (f(x + h e_i) - f(x - h e_i)) / 2h - R_i| over ``pixels`` random inputs per image,
    relative to max |R| of the image: a check that ``relevance`` is gradient x input."""
    rng = np.random.default_rng(seed)
    n = len(x)
    flat = x.reshape(n, -1)
    worst = 0.0
    for i in range(n):
        idx = rng.choice(flat.shape[1], size=min(pixels, flat.shape[1]), replace=False)
        plus = np.repeat(flat[i : i + 1], len(idx), axis=0).astype(np.float32)
        minus = plus.copy()
        plus[np.arange(len(idx)), idx] += step
        minus[np.arange(len(idx)), idx] -= step
        batch = np.concatenate([plus, minus]).reshape((-1, *x.shape[1:]))
        f = np.asarray(forward_fn(batch), dtype=np.float64)[:, targets[i]]
        grad = (f[: len(idx)] - f[len(idx) :]) / (2 * step)
        est = flat[i, idx] * grad
        r = relevance[i].reshape(-1)
        scale = max(float(np.abs(r).max()), 1e-12)
        worst = max(worst, float(np.abs(est - r[idx]).max() / scale))
    return worst


def method_region_scores(
    model: ModelLike,
    x: np.ndarray,
    targets: np.ndarray,
    methods: Iterable[str | Method],
    region: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    low: Any = None,
    high: Any = None,
    progress: bool = False,
    store: str | os.PathLike | None = None,
    backend: str = "local",
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Region scores [N, R] (relevance summed per region and over channels) of each method
    (``store``/``backend``: see ``compute_relevance``).

    Methods with the same relevance (gradxinput and lrp0) share one computation and one array.
    Non-finite relevance is set to 0 (with a note). Returns (label -> scores, notes).
    """
    parsed = [m if isinstance(m, Method) else parse_method(m) for m in methods]
    seen: set[str] = set()
    unique = []
    for m in parsed:
        if m.label not in seen:
            seen.add(m.label)
            unique.append(m)
    notes: list[str] = []
    cache: dict[tuple, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for method in unique:
        key: tuple = (method.kind, tuple(sorted(method.kwargs.items())))
        if method.kind == "gradxinput":
            key = ("lrp", (("rule", "lrp0"),))
            bad = gradient_x_input_ok(model)
            if bad:
                msg = (
                    f"gradxinput is LRP-0 relevance, which equals gradient x input only for piecewise-linear "
                    f"networks; this model has {', '.join(bad)}"
                )
                warnings.warn(msg, stacklevel=2)
                notes.append(msg)
        if key not in cache:
            relevance = compute_relevance(
                model, x, targets, method, batch_size=batch_size, seed=seed, low=low, high=high,
                progress=progress, store=store, backend=backend,
            )  # fmt: skip
            if not np.all(np.isfinite(relevance)):
                bad_n = int((~np.isfinite(relevance)).reshape(len(x), -1).any(axis=1).sum())
                msg = f"{method.label}: non-finite relevance in {bad_n} images (set to 0 there)"
                warnings.warn(msg, stacklevel=2)
                notes.append(msg)
                relevance = np.nan_to_num(relevance, nan=0.0, posinf=0.0, neginf=0.0)
            cache[key] = region_relevance(relevance, region)
        scores[method.label] = cache[key]
    return scores, notes
