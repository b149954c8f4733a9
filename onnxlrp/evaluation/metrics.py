"""Region perturbation curves and AOPC (Samek et al. 2017), for any batched ``forward_fn(x) -> logits``.

Determinism: the noise (or blur) an image's regions are replaced by depends only on the seed and the
image's index in ``x``, never on batch size or on the method, so methods are compared on the same
perturbations (paired).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onnxlrp.errors import InvalidOptionError

ForwardFn = Callable[[np.ndarray], np.ndarray]

# Seed-stream tags: the noise of image i comes from default_rng([seed, NOISE, i]), the random
# baseline's relevance from default_rng([seed, RANDOM, i]).
NOISE = 0
RANDOM = 1


@dataclass(frozen=True)
class PerturbationSetup:
    """How regions are perturbed: ``region`` x ``region`` tiles, ``steps`` of them one per step (None:
    all), replaced by ``perturbation`` ("uniform" noise over ``value_range``, per channel, default the
    data's per-channel min/max; or "blur", a Gaussian of sigma ``blur_sigma``, default region/2), in
    ``order`` ("morf": most relevant first, or "lerf"), the noise seeded by ``seed``."""

    region: int = 4
    steps: int | None = None
    perturbation: str = "uniform"
    order: str = "morf"
    seed: int = 0
    value_range: Any = None
    blur_sigma: float | None = None

    def __post_init__(self) -> None:
        def whole(value: Any) -> bool:
            return bool(isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1)

        if not whole(self.region):
            raise InvalidOptionError(f"region must be a whole number >= 1, got {self.region!r}")
        if self.steps is not None and not whole(self.steps):
            raise InvalidOptionError(f"steps must be a whole number >= 1 (or None: all), got {self.steps!r}")
        for name, known in (("perturbation", ("uniform", "blur")), ("order", ("morf", "lerf"))):
            if getattr(self, name) not in known:
                raise InvalidOptionError(
                    f"{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}"
                )
        sigma = self.blur_sigma
        if sigma is not None and not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
            raise InvalidOptionError(f"blur sigma must be a finite number > 0, got {sigma!r}")

    def replace(self, **changes: Any) -> PerturbationSetup:
        """A copy with ``changes``."""
        return PerturbationSetup(**{**asdict(self), **changes})

    @property
    def sigma(self) -> float:
        """The blur's sigma: ``blur_sigma``, else region / 2."""
        return float(self.region) / 2 if self.blur_sigma is None else float(self.blur_sigma)


def setup_from(setup: PerturbationSetup | None, settings: dict[str, Any]) -> PerturbationSetup:
    """``setup`` (default: the defaults) with keyword ``settings`` (PerturbationSetup's fields) applied."""
    base = setup or PerturbationSetup()
    try:
        return base.replace(**settings) if settings else base
    except TypeError as error:
        raise TypeError(f"unknown perturbation setting: {error}") from None


# ----------------------------------------------------------------------------- regions and order


def region_map(height: int, width: int, region: int) -> tuple[np.ndarray, int]:
    """Region index of every pixel for non-overlapping ``region`` x ``region`` tiles, row-major.

    Tiles at the right and bottom edges are smaller when ``region`` does not divide the size.
    Returns (ids [H, W] int64, number of regions).
    """
    if region < 1:
        raise ValueError(f"region must be >= 1, got {region}")
    rows = -(-height // region)
    cols = -(-width // region)
    r = np.arange(height) // region
    c = np.arange(width) // region
    return (r[:, None] * cols + c[None, :]).astype(np.int64), rows * cols


def region_relevance(relevance: np.ndarray, region: int) -> np.ndarray:
    """Sum of relevance over each region's pixels and over all channels: [N, C, H, W] -> [N, R]."""
    relevance = np.asarray(relevance)
    if relevance.ndim != 4:
        raise ValueError(f"relevance must be [N, C, H, W], got shape {relevance.shape}")
    n, _, h, w = relevance.shape
    ids, n_regions = region_map(h, w, region)
    per_pixel = relevance.astype(np.float64).sum(axis=1).reshape(n, h * w)
    out = np.zeros((n, n_regions), dtype=np.float64)
    np.add.at(out, (slice(None), ids.reshape(-1)), per_pixel)  # type: ignore[arg-type]
    return out


def region_order(relevance: np.ndarray, region: int, order: str = "morf") -> np.ndarray:
    """Region indices in perturbation order, [N, R]: most relevant first ("morf") or least ("lerf").

    ``relevance``: heatmaps [N, C, H, W], or region scores [N, R] already summed (``region_relevance``).

    Ties are broken by region index (stable sort), so the order is deterministic.
    """
    relevance = np.asarray(relevance)
    scores = relevance.astype(np.float64) if relevance.ndim == 2 else region_relevance(relevance, region)
    if order == "morf":
        return np.argsort(-scores, axis=1, kind="stable")
    if order == "lerf":
        return np.argsort(scores, axis=1, kind="stable")
    raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")


# ----------------------------------------------------------------------------- perturbations


def _as_channel_range(value_range: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = value_range
    low = np.broadcast_to(np.asarray(low, dtype=np.float64).reshape(-1), (channels,)).copy()
    high = np.broadcast_to(np.asarray(high, dtype=np.float64).reshape(-1), (channels,)).copy()
    if np.any(high < low):
        raise ValueError(f"value_range high < low: {low} {high}")
    return low, high


def data_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of a data set [N, C, H, W]: the default range of the uniform noise."""
    return x.min(axis=(0, 2, 3)).astype(np.float64), x.max(axis=(0, 2, 3)).astype(np.float64)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of one image [C, H, W] with reflected borders (numpy only)."""
    if sigma <= 0:
        return image.copy()
    radius = max(1, int(np.ceil(3 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect" if out.shape[axis] > radius else "edge")
        acc = np.zeros_like(out)
        size = out.shape[axis]
        for j, kv in enumerate(kernel):
            acc += kv * np.take(padded, np.arange(j, j + size), axis=axis)
        out = acc
    return out.astype(image.dtype)


def _fill(
    x_i: np.ndarray,
    index: int,
    perturbation: str,
    seed: int,
    low: np.ndarray,
    high: np.ndarray,
    blur_sigma: float,
) -> np.ndarray:
    """The values an image's perturbed pixels take: drawn once per image, from (seed, index) only."""
    if perturbation == "uniform":
        rng = np.random.default_rng([seed, NOISE, index])
        u = rng.random(x_i.shape)
        return (low[:, None, None] + u * (high - low)[:, None, None]).astype(x_i.dtype)
    if perturbation == "blur":
        return gaussian_blur(x_i, blur_sigma)
    raise ValueError(f"perturbation must be 'uniform' or 'blur', got {perturbation!r}")


def _pixel_rank(relevance: np.ndarray, shape: tuple[int, ...], setup: PerturbationSetup) -> np.ndarray:
    """[N, H, W]: the step at which each pixel is replaced (its region's rank in perturbation order)."""
    n, _, h, w = shape
    ids, n_regions = region_map(h, w, setup.region)
    if relevance.shape != shape and relevance.shape != (n, n_regions):
        raise ValueError(
            f"relevance shape {relevance.shape} is neither x's shape {shape} nor region scores "
            f"{(n, n_regions)}"
        )
    ordering = region_order(relevance, setup.region, setup.order)  # [N, R]
    rank = np.empty_like(ordering)
    np.put_along_axis(rank, ordering, np.arange(n_regions)[None, :], axis=1)
    return rank[:, ids.reshape(-1)].reshape(n, h, w)


def perturbation_curve(
    forward_fn: ForwardFn,
    x: np.ndarray,
    relevance: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    setup: PerturbationSetup | None = None,
    *,
    batch_size: int = 1024,
    progress: bool = False,
    desc: str | None = None,
    index_offset: int = 0,
    **settings: Any,
) -> np.ndarray:
    """Target logit after 0..L region perturbations: returns curves [N, L+1] (float64).

    forward_fn: batched function [B, C, H, W] -> logits [B, classes] (B up to ``batch_size``).
    relevance: [N, C, H, W] heatmaps, summed over each region and all channels to order regions
      (or those sums, [N, R], as ``region_relevance`` gives them).
    targets: [N] class whose logit is tracked (the predicted class of the clean image, usually).
    setup: the perturbation (``PerturbationSetup``); ``settings`` (its fields: region=2, steps=8,
      ...) change it. steps L: one region per step (default: every region).
    All (image, step) pairs are evaluated in batches of ``batch_size``; column 0 is the clean logit.
    index_offset: added to each image's index when drawing its noise (for evaluating in parts).
    """
    setup = setup_from(setup, settings)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {x.shape}")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    n, c, h, w = x.shape
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images")
    pixel_rank = _pixel_rank(np.asarray(relevance), x.shape, setup)
    n_regions = region_map(h, w, setup.region)[1]
    steps = n_regions if setup.steps is None else setup.steps
    if not 0 <= steps <= n_regions:
        raise ValueError(
            f"steps must be in 0..{n_regions} (the number of {setup.region}x{setup.region} regions)"
        )
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    low, high = _as_channel_range(data_range(x) if setup.value_range is None else setup.value_range, c)

    per_image = steps + 1
    total = n * per_image
    curves = np.empty((n, per_image), dtype=np.float64)
    fills: dict[int, np.ndarray] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc or "perturbation", unit="fwd", leave=False)
    try:
        for start in range(0, total, batch_size):
            flat = np.arange(start, min(start + batch_size, total))
            img = flat // per_image
            step = flat % per_image
            for i in np.unique(img):
                if i not in fills:
                    fills[int(i)] = _fill(
                        x[i], int(i) + index_offset, setup.perturbation, setup.seed, low, high, setup.sigma
                    )
            fill = np.stack([fills[int(i)] for i in img])
            mask = (pixel_rank[img] < step[:, None, None])[:, None, :, :]
            batch = np.where(mask, fill, x[img]).astype(x.dtype, copy=False)
            logits = np.asarray(forward_fn(batch))
            if logits.ndim != 2 or logits.shape[0] != len(flat):
                raise ValueError(f"forward_fn returned shape {logits.shape} for a batch of {len(flat)}")
            curves[img, step] = logits[np.arange(len(flat)), targets[img]]
            for i in [k for k in fills if k < img[-1]]:
                del fills[i]
            if bar is not None:
                bar.update(len(flat))
    finally:
        if bar is not None:
            bar.close()
    return curves


def aopc_per_image(curves: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Per image: 1/(L+1) * sum_{k=0..L} (f(x^(0)) - f(x^(k))). curves: [N, L+1].

    ``steps``: use only the first L = steps perturbations (the same as a run with that L, since a
    run's perturbations are a prefix of a longer run's)."""
    curves = np.asarray(curves, dtype=np.float64)
    if steps is not None:
        if not 0 <= steps < curves.shape[1]:
            raise ValueError(f"steps must be in 0..{curves.shape[1] - 1}, got {steps}")
        curves = curves[:, : steps + 1]
    return (curves[:, :1] - curves).mean(axis=1)


def paired_difference(
    curves_a: np.ndarray, curves_b: np.ndarray, steps: int | None = None
) -> tuple[float, float]:
    """AOPC(a) - AOPC(b) over the same images, and the standard error of the per-image differences.

    Both methods see the same images and the same noise, so this is far tighter than comparing two
    AOPCs with their own standard errors."""
    diff = aopc_per_image(curves_a, steps) - aopc_per_image(curves_b, steps)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return float(diff.mean()), se


def aopc(curves: np.ndarray, steps: int | None = None) -> tuple[float, float]:
    """AOPC (mean over images) and its standard error (sample std / sqrt(N)); ``steps``: the first L."""
    per = aopc_per_image(curves, steps)
    se = float(per.std(ddof=1) / np.sqrt(len(per))) if len(per) > 1 else float("nan")
    return float(per.mean()), se
