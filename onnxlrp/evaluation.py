"""Quantitative heatmap evaluation: region perturbation curves and AOPC (issue 7).

The method follows Samek et al. (2017), "Evaluating the visualization of what a deep neural network
has learned" (IEEE TNNLS 28(11)): the input is split into non-overlapping k x k regions; a region's
relevance is the sum of the heatmap over its pixels and over all channels; regions are perturbed one
per step in order of relevance, most relevant first (MoRF, or least relevant first: LeRF), each
perturbed region taking, on all channels, values drawn from a uniform distribution over the input's
value range (or a blurred copy of the image). After each of L steps the target's logit is recomputed.
The target is the predicted class of the clean image. The area over the perturbation curve is

    AOPC = < 1/(L+1) * sum_{k=0..L} f(x^(0)) - f(x^(k)) >_images

reported with its standard error over images. With MoRF a larger AOPC means the heatmap found the
evidence the model uses; with LeRF a smaller one does.

The core (``perturbation_curve``, ``aopc``) takes any batched ``forward_fn(x) -> logits`` so it can be
tested with plain numpy; ``onnx_forward`` wraps an ONNX model for it, and ``evaluate`` runs a list of
methods (LRP rules, composites and two baselines) on one model and data set.

Determinism: the noise (or blur) an image's regions are replaced by depends only on the seed and the
image's index in ``x``, never on batch size or on the method, so methods are compared on the same
perturbations (paired), and the random baseline's relevance likewise depends only on (seed, index).

This module does not import torch.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxlrp.errors import OnnxLrpError

__all__ = [
    "DatasetError",
    "EvaluationResult",
    "Method",
    "aopc",
    "aopc_per_image",
    "compute_relevance",
    "evaluate",
    "finite_difference_check",
    "load_dataset",
    "method_region_scores",
    "onnx_forward",
    "paired_difference",
    "parse_method",
    "perturbation_curve",
    "plot_curves",
    "plot_json",
    "random_relevance",
    "region_map",
    "region_order",
    "region_relevance",
    "write_results",
]

ForwardFn = Callable[[np.ndarray], np.ndarray]

# Seed-stream tags: the noise of image i comes from default_rng([seed, _NOISE, i]), the random
# baseline's relevance from default_rng([seed, _RANDOM, i]).
_NOISE = 0
_RANDOM = 1


class DatasetError(OnnxLrpError):
    """A data set is missing, unreadable or does not fit the model."""


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
    np.add.at(out, (slice(None), ids.reshape(-1)), per_pixel)
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


def _as_channel_range(value_range, channels: int) -> tuple[np.ndarray, np.ndarray]:
    low, high = value_range
    low = np.broadcast_to(np.asarray(low, dtype=np.float64).reshape(-1), (channels,)).copy()
    high = np.broadcast_to(np.asarray(high, dtype=np.float64).reshape(-1), (channels,)).copy()
    if np.any(high < low):
        raise ValueError(f"value_range high < low: {low} {high}")
    return low, high


def data_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of a data set [N, C, H, W]: the default range of the uniform noise."""
    return x.min(axis=(0, 2, 3)).astype(np.float64), x.max(axis=(0, 2, 3)).astype(np.float64)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
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
        rng = np.random.default_rng([seed, _NOISE, index])
        u = rng.random(x_i.shape)
        return (low[:, None, None] + u * (high - low)[:, None, None]).astype(x_i.dtype)
    if perturbation == "blur":
        return _gaussian_blur(x_i, blur_sigma)
    raise ValueError(f"perturbation must be 'uniform' or 'blur', got {perturbation!r}")


def _batched(fn: ForwardFn, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def perturbation_curve(
    forward_fn: ForwardFn,
    x: np.ndarray,
    relevance: np.ndarray,
    targets: Sequence[int] | np.ndarray,
    region: int = 4,
    steps: int | None = None,
    perturbation: str = "uniform",
    order: str = "morf",
    batch_size: int = 1024,
    seed: int = 0,
    value_range=None,
    blur_sigma: float | None = None,
    progress: bool = False,
    desc: str | None = None,
    index_offset: int = 0,
) -> np.ndarray:
    """Target logit after 0..L region perturbations: returns curves [N, L+1] (float64).

    forward_fn: batched function [B, C, H, W] -> logits [B, classes] (B up to ``batch_size``).
    relevance: [N, C, H, W] heatmaps, summed over each region and all channels to order regions
      (or those sums, [N, R], as ``region_relevance`` gives them).
    targets: [N] class whose logit is tracked (the predicted class of the clean image, usually).
    steps: L, one region per step (default: every region, L = number of regions).
    perturbation: "uniform" (noise over ``value_range``, per channel; default: the per-channel
      min/max of ``x``) or "blur" (a Gaussian-blurred copy, sigma ``blur_sigma``, default region/2).
    All (image, step) pairs are evaluated in batches of ``batch_size``; column 0 is the clean logit.
    index_offset: added to each image's index when drawing its noise (for evaluating in parts).
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {x.shape}")
    relevance = np.asarray(relevance)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    n, c, h, w = x.shape
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images")
    ids, n_regions = region_map(h, w, region)
    if relevance.shape != x.shape and relevance.shape != (n, n_regions):
        raise ValueError(
            f"relevance shape {relevance.shape} is neither x's shape {x.shape} nor region scores "
            f"{(n, n_regions)}"
        )
    if steps is None:
        steps = n_regions
    if not 0 <= steps <= n_regions:
        raise ValueError(f"steps must be in 0..{n_regions} (the number of {region}x{region} regions)")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if value_range is None:
        value_range = data_range(x)
    low, high = _as_channel_range(value_range, c)
    sigma = float(region) / 2 if blur_sigma is None else float(blur_sigma)

    ordering = region_order(relevance, region, order)  # [N, R]
    rank = np.empty_like(ordering)
    np.put_along_axis(rank, ordering, np.arange(n_regions)[None, :], axis=1)
    pixel_rank = rank[:, ids.reshape(-1)].reshape(n, h, w)  # step at which each pixel is replaced

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
                    fills[int(i)] = _fill(x[i], int(i) + index_offset, perturbation, seed, low, high, sigma)
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


# ----------------------------------------------------------------------------- ONNX forward


def _load_model(model):
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model))
    return onnx.load(os.fspath(model))


def logit_model(model, output: str | None = None):
    """A copy of ``model`` whose single output is the logits: a trailing Softmax/LogSoftmax is cut off."""
    import onnx
    from onnx import helper

    proto = onnx.ModelProto()
    proto.CopyFrom(_load_model(model))
    graph = proto.graph
    names = [o.name for o in graph.output]
    name = output or names[0]
    if name not in names:
        raise OnnxLrpError(f"model has no output {name!r} (outputs: {names})")
    producers = {o: node for node in graph.node for o in node.output}
    node = producers.get(name)
    while node is not None and node.op_type in ("Softmax", "LogSoftmax", "Identity"):
        name = node.input[0]
        node = producers.get(name)
    keep = [o for o in graph.output if o.name == name]
    del graph.output[:]
    if keep:
        graph.output.extend(keep)
    else:
        graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return proto


def onnx_forward(model, output: str | None = None, providers=None, threads: int | None = None) -> ForwardFn:
    """One onnxruntime session of ``model``'s logits (a trailing Softmax is skipped): x -> logits.

    If the model's batch dimension is fixed, batches are split into pieces of that size.
    """
    import onnxruntime as ort

    proto = logit_model(model, output)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=providers or ["CPUExecutionProvider"]
    )
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if inp.shape and isinstance(inp.shape[0], int) else None
    out_name = session.get_outputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if fixed and len(x) != fixed:
            return np.concatenate(
                [session.run([out_name], {inp.name: x[i : i + fixed]})[0] for i in range(0, len(x), fixed)]
            )
        return session.run([out_name], {inp.name: x})[0]

    forward.session = session  # type: ignore[attr-defined]
    return forward


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Method:
    """One heatmap method: an LRP rule/composite (``kwargs`` for onnxlrp.compile) or a baseline."""

    label: str
    kind: str  # "lrp" | "random" | "gradxinput"
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)


_SIMPLE_RULES = ("lrp0", "zplus", "wsquare", "flat", "zbox", "epsilon", "gamma", "alphabeta")
_COMPOSITES = ("epsilon", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-plus-flat", "epsilon-gamma-box")


def _floats(text: str, spec: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"bad number in method {spec!r}") from None


def parse_method(spec: str) -> Method:
    """Parse a method spec.

    ``epsilon[:E]``, ``lrp0``, ``zplus``, ``wsquare``, ``flat``, ``zbox``, ``gamma[:G]``,
    ``alphabeta:A,B`` (or ``alphabeta:A``: B = A - 1), ``composite:NAME[:E]`` (E: the composite's
    epsilon), and the baselines ``random`` and ``gradxinput`` (gradient x input).
    """
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    head = head.lower().replace("_", "-")
    if head in ("random",):
        return Method("random", "random")
    if head in ("gradxinput", "gradient-x-input", "gxi", "input-x-gradient"):
        return Method("gradxinput", "gradxinput", {"rule": "lrp0"})
    if head == "composite":
        name, _, eps = rest.partition(":")
        if name not in _COMPOSITES:
            raise ValueError(f"unknown composite {name!r} in {spec!r}; known: {', '.join(_COMPOSITES)}")
        kwargs: dict = {"composite": name}
        label = f"composite:{name}"
        if eps:
            kwargs["epsilon"] = _floats(eps, spec)[0]
            label += f":{eps}"
        return Method(label, "lrp", kwargs)
    if head == "lrp-0":
        head = "lrp0"
    if head == "z+":
        head = "zplus"
    if head not in _SIMPLE_RULES:
        raise ValueError(
            f"unknown method {spec!r}; rules: {', '.join(_SIMPLE_RULES)}; also composite:NAME, "
            "random, gradxinput"
        )
    values = _floats(rest, spec) if rest else []
    kwargs = {"rule": head}
    if head == "epsilon":
        eps = values[0] if values else 1.0
        kwargs["epsilon"] = eps
        return Method(f"epsilon:{eps:g}", "lrp", kwargs)
    if head == "gamma":
        g = values[0] if values else 0.25
        kwargs["gamma"] = g
        return Method(f"gamma:{g:g}", "lrp", kwargs)
    if head == "alphabeta":
        if not values:
            values = [2.0, 1.0]
        alpha = values[0]
        beta = values[1] if len(values) > 1 else alpha - 1.0
        kwargs.update(alpha=alpha, beta=beta)
        return Method(f"alphabeta:{alpha:g},{beta:g}", "lrp", kwargs)
    if values:
        raise ValueError(f"rule {head!r} takes no parameters: {spec!r}")
    return Method(head, "lrp", kwargs)


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

# Ops through which LRP-0 relevance equals gradient x input exactly (see gradient_x_input_ok).
_PIECEWISE_LINEAR_OPS = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "BatchNormalization",
    "Relu", "LeakyRelu", "PRelu", "MaxPool", "GlobalMaxPool", "AveragePool", "GlobalAveragePool",
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Concat",
    "Softmax", "LogSoftmax", "Constant", "Shape", "Gather", "Slice", "Cast", "Pad",
}  # fmt: skip


def gradient_x_input_ok(model) -> list[str]:
    """Op types in ``model`` that break the LRP-0 == gradient x input identity (empty list: it holds).

    For a graph of linear layers (Conv, Gemm, MatMul, pooling, BatchNorm; biases included), ReLU-like
    positively homogeneous activations, max pooling and residual adds, LRP-0 relevance (the bias in
    the denominator, relevance passed through the activation unchanged) equals x * df/dx exactly:
    by induction from the top, R_a = a * df/da at every tensor, since a ReLU's R/z = [z > 0] * df/da.
    """
    proto = _load_model(model)
    return sorted({n.op_type for n in proto.graph.node if n.op_type not in _PIECEWISE_LINEAR_OPS})


def random_relevance(shape: Sequence[int], seed: int = 0, index_offset: int = 0) -> np.ndarray:
    """Random heatmaps [N, C, H, W]: image i's from default_rng([seed, 1, index_offset + i])."""
    n = shape[0]
    return np.stack(
        [
            np.random.default_rng([seed, _RANDOM, index_offset + i]).standard_normal(tuple(shape[1:]))
            for i in range(n)
        ]
    ).astype(np.float32)


def compute_relevance(
    model,
    x: np.ndarray,
    targets: np.ndarray,
    method: Method,
    batch_size: int = 256,
    seed: int = 0,
    low=None,
    high=None,
    progress: bool = False,
    compiled=None,
) -> np.ndarray:
    """Heatmaps [N, C, H, W] of ``method`` for ``targets`` (the LRP ones via onnxlrp.compile)."""
    if method.kind == "random":
        return random_relevance(x.shape, seed)
    import onnxlrp

    kwargs = dict(method.kwargs)
    if kwargs.get("rule") == "zbox" or kwargs.get("composite") == "epsilon-gamma-box":
        kwargs.setdefault("low", low)
        kwargs.setdefault("high", high)
    rel_model = compiled if compiled is not None else onnxlrp.compile(model, **kwargs)
    session = onnxlrp.RelevanceSession(rel_model)
    chunks = range(0, len(x), batch_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"relevance {method.label}", leave=False)
    out = []
    for i in chunks:
        result = session.run(
            np.ascontiguousarray(x[i : i + batch_size], dtype=np.float32),
            target=np.asarray(targets[i : i + batch_size], dtype=np.int64),
        )
        out.append(np.asarray(result["relevance"], dtype=np.float32))
    return np.concatenate(out)


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


# ----------------------------------------------------------------------------- data


def default_datasets_dir() -> Path:
    """``$ONNXLRP_DATASETS``, else ``../shared/datasets`` next to the project root, else beside cwd."""
    env = os.environ.get("ONNXLRP_DATASETS")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parent.parent
    for candidate in (root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"):
        if candidate.is_dir():
            return candidate
    return root.parent / "shared" / "datasets"


def _raw_test_split(name: str, datasets_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 test images ([N, 28, 28] for MNIST, [N, 32, 32, 3] RGB for CIFAR-10) and labels."""
    files = {"mnist": "mnist.npz", "cifar10": "cifar10_jpeg.npz"}
    path = datasets_dir / files[name]
    if not path.is_file():
        raise DatasetError(
            f"data set {name!r} needs {path}, which does not exist; set ONNXLRP_DATASETS to the folder "
            "holding mnist.npz / cifar10_jpeg.npz, or pass a .npy of preprocessed inputs [N, C, H, W]"
        )
    with np.load(path) as data:
        if name == "mnist":
            return data["x_test"], data["y_test"].astype(np.int64)
        from PIL import Image

        jpeg, offsets = data["test_jpeg"], data["test_offsets"]
        images = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
                for i in range(len(offsets) - 1)
            ]
        )
        return images, data["test_labels"].astype(np.int64)


def select_indices(total: int, n: int | None) -> np.ndarray:
    """The ``n`` test images evaluated: evenly spaced over the split (CIFAR-10's copy is grouped by
    class, so the first n would all be airplanes); all of them when n is None or >= total."""
    if n is None or n >= total:
        return np.arange(total)
    return np.floor(np.arange(n) * (total / n)).astype(np.int64)


def _preprocess(zoo_model, raw: np.ndarray) -> np.ndarray:
    pre = getattr(zoo_model, "preprocess", None)
    if pre is None:
        raise DatasetError(f"zoo model {getattr(zoo_model, 'name', zoo_model)!r} has no preprocess")
    out = np.asarray(pre(raw), dtype=np.float32)
    if out.ndim == 3:
        out = out[:, None]
    if out.ndim == 5 and out.shape[1] == 1:
        out = out[:, 0]
    return out


def load_dataset(
    data: str | os.PathLike,
    zoo_model=None,
    n: int | None = None,
    datasets_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Inputs [n, C, H, W] float32, labels (None for a .npy) and the indices taken.

    ``data``: "mnist" / "cifar10" (the test split, preprocessed with ``zoo_model.preprocess``), or a
    path to a .npy holding already preprocessed inputs [N, C, H, W].
    """
    text = os.fspath(data)
    if text.lower() in ("mnist", "cifar10", "cifar-10"):
        name = "cifar10" if text.lower().startswith("cifar") else "mnist"
        folder = Path(datasets_dir) if datasets_dir else default_datasets_dir()
        if not folder.is_dir():
            raise DatasetError(
                f"data set {name!r}: the datasets folder {folder} does not exist; set ONNXLRP_DATASETS "
                "to the folder holding mnist.npz / cifar10_jpeg.npz, or pass a .npy of preprocessed inputs"
            )
        if zoo_model is None:
            raise DatasetError(f"data set {name!r} needs a zoo model (for its preprocessing)")
        raw, labels = _raw_test_split(name, folder)
        idx = select_indices(len(raw), n)
        return _preprocess(zoo_model, raw[idx]), labels[idx], idx
    path = Path(text)
    if not path.is_file():
        raise DatasetError(f"data {text!r} is neither a data set name (mnist, cifar10) nor a .npy file")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if x.ndim != 4:
        raise DatasetError(f"{path}: expected preprocessed inputs [N, C, H, W], got shape {x.shape}")
    idx = np.arange(len(x) if n is None else min(n, len(x)))  # a .npy: its first n inputs
    return np.asarray(x[idx], dtype=np.float32), None, idx


def _zoo():
    try:
        from onnxlrp import zoo
    except ImportError:
        return None
    return zoo


def resolve_model(model: str | os.PathLike):
    """(path to the .onnx, zoo model or None) for an .onnx path or a zoo name (a path to a zoo
    model's own file also gives its zoo entry, hence its preprocessing)."""
    text = os.fspath(model)
    zoo = _zoo()
    if Path(text).is_file():
        entry = None
        if zoo is not None:  # a zoo model's file given by path: keep its preprocessing
            try:
                entry = zoo.load(Path(text).stem)
            except Exception:
                entry = None
            if entry is not None and Path(entry.path).resolve() != Path(text).resolve():
                entry = None
        return Path(text), entry
    if zoo is None:
        raise OnnxLrpError(f"model {text!r}: no such file (and onnxlrp.zoo is not available)")
    entry = zoo.load(text)
    return Path(entry.path), entry


# ----------------------------------------------------------------------------- whole evaluation


@dataclass
class EvaluationResult:
    """Per method: curves [N, L+1]; with the settings used."""

    model: str
    data: str
    curves: dict[str, np.ndarray]
    settings: dict
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    def table(self, baseline: str = "random", steps: int | None = None) -> list[dict]:
        """Rows: method, aopc, stderr, n, and (when ``baseline`` was run) the paired difference
        to it per image, ``vs_<baseline>`` with its standard error (same images, same noise).
        ``steps``: AOPC over the first L perturbations only."""
        rows = []
        base = self.curves.get(baseline)
        for label, curves in self.curves.items():
            mean, se = aopc(curves, steps)
            row = {"method": label, "aopc": mean, "stderr": se, "n": int(curves.shape[0])}
            if base is not None and base.shape == curves.shape:
                d, d_se = paired_difference(curves, base, steps)
                row[f"vs_{baseline}"], row[f"vs_{baseline}_stderr"] = d, d_se
            rows.append(row)
        return rows


def method_region_scores(
    model,
    x: np.ndarray,
    targets: np.ndarray,
    methods: Iterable[str | Method],
    region: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    low=None,
    high=None,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Region scores [N, R] (relevance summed per region and over channels) of each method.

    Methods with the same relevance (gradxinput and lrp0) share one computation and one array.
    Non-finite relevance is set to 0 (with a note). Returns (label -> scores, notes).
    """
    parsed = [m if isinstance(m, Method) else parse_method(m) for m in methods]
    seen: set[str] = set()
    parsed = [m for m in parsed if not (m.label in seen or seen.add(m.label))]
    notes: list[str] = []
    cache: dict[tuple, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for method in parsed:
        key = (method.kind, tuple(sorted(method.kwargs.items())))
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
                progress=progress,
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


def evaluate(
    model,
    x: np.ndarray,
    methods: Iterable[str | Method] = DEFAULT_METHODS + BASELINES,
    region: int = 4,
    steps: int | None = None,
    perturbation: str = "uniform",
    order: str = "morf",
    batch_size: int = 1024,
    seed: int = 0,
    value_range=None,
    blur_sigma: float | None = None,
    labels: np.ndarray | None = None,
    progress: bool = False,
    model_name: str | None = None,
    data_name: str = "",
    forward_fn: ForwardFn | None = None,
    targets: np.ndarray | None = None,
    scores: dict[str, np.ndarray] | None = None,
) -> EvaluationResult:
    """Perturbation curves of every method on one model: returns an ``EvaluationResult``.

    One forward session of the model (its logits, ``onnx_forward``) is built once and serves every
    method, unless ``forward_fn`` is given; the targets are the clean images' predicted classes unless
    given. The box bounds of zbox/epsilon-gamma-box are the data's global min and max. ``scores``
    (label -> [N, R], from ``method_region_scores``) skips the relevance computation.
    """
    forward = forward_fn if forward_fn is not None else onnx_forward(model)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if targets is None:
        targets = _batched(forward, x, batch_size).argmax(axis=1)
    targets = np.asarray(targets, dtype=np.int64)
    if value_range is None:
        value_range = data_range(x)
    low, high = float(np.min(value_range[0])), float(np.max(value_range[1]))
    notes: list[str] = []
    if scores is None:
        scores, notes = method_region_scores(
            model, x, targets, methods, region=region, batch_size=min(batch_size, 256), seed=seed,
            low=low, high=high, progress=progress,
        )  # fmt: skip
    done: dict[int, np.ndarray] = {}
    curves: dict[str, np.ndarray] = {}
    for label, sc in scores.items():
        if id(sc) not in done:  # the same relevance gives the same curves: computed once
            done[id(sc)] = perturbation_curve(
                forward, x, sc, targets, region=region, steps=steps, perturbation=perturbation,
                order=order, batch_size=batch_size, seed=seed, value_range=value_range,
                blur_sigma=blur_sigma, progress=progress, desc=label,
            )  # fmt: skip
        curves[label] = done[id(sc)]
    accuracy = float((targets == labels).mean()) if labels is not None else None
    settings = {
        "region": region,
        "steps": int(next(iter(curves.values())).shape[1] - 1) if curves else steps,
        "perturbation": perturbation,
        "order": order,
        "seed": seed,
        "n": len(x),
        "value_range": [np.asarray(v).tolist() for v in value_range],
        "blur_sigma": (float(region) / 2 if blur_sigma is None else blur_sigma)
        if perturbation == "blur"
        else None,
        "target": "predicted class of the clean image",
    }
    return EvaluationResult(
        model=model_name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "model"),
        data=data_name,
        curves=curves,
        settings=settings,
        accuracy=accuracy,
        notes=notes,
    )


def plot_curves(results: EvaluationResult | Sequence[EvaluationResult], path: str | os.PathLike) -> Path:
    """Mean perturbation curve f(x^(0)) - f(x^(k)) per method (one panel per result), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(results, EvaluationResult):
        results = [results]
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.0), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        for label, curves in res.curves.items():
            drop = (curves[:, :1] - curves).mean(axis=0)
            mean, se = curves.aopc_se if isinstance(curves, _SummaryCurves) else aopc(curves)
            style = "--" if label in ("random", "gradxinput") else "-"
            ax.plot(np.arange(len(drop)), drop, style, label=f"{label} ({mean:.3g}±{se:.2g})", lw=1.4)
        s = res.settings
        acc = f", acc {res.accuracy:.3f}" if res.accuracy is not None else ""
        ax.set_title(f"{res.model} on {res.data} (n={s['n']}{acc}, {s['order'].upper()})", fontsize=9)
        ax.set_xlabel(f"perturbation steps ({s['region']}x{s['region']} regions, {s['perturbation']})")
        ax.set_ylabel("f(x⁰) − f(xᵏ), mean over images")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="method (AOPC±SE)", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_json(json_paths: Sequence[str | os.PathLike], path: str | os.PathLike) -> Path:
    """One figure, one panel per ``aopc.json`` written by ``write_results`` (models side by side)."""
    results = []
    for jp in json_paths:
        doc = json.loads(Path(jp).read_text())
        curves = {}
        for label, mean_curve in doc["mean_curves"].items():
            row = next(r for r in doc["aopc"] if r["method"] == label)
            curves[label] = _SummaryCurves(np.asarray(mean_curve), row["aopc"], row["stderr"])
        results.append(EvaluationResult(doc["model"], doc["data"], curves, doc["settings"], doc["accuracy"]))
    return plot_curves(results, path)


class _SummaryCurves(np.ndarray):
    """A mean curve standing in for per-image curves in plot_curves (carries its AOPC and SE)."""

    def __new__(cls, mean_curve, aopc_value, stderr):
        obj = np.asarray(mean_curve, dtype=np.float64)[None, :].view(cls)
        obj.aopc_se = (aopc_value, stderr)
        return obj

    def __array_finalize__(self, obj):
        self.aopc_se = getattr(obj, "aopc_se", None)


def write_results(
    result: EvaluationResult, out_dir: str | os.PathLike, stem: str = "aopc"
) -> dict[str, Path]:
    """Write ``<stem>.json`` (settings, table, mean curves), ``<stem>.csv`` (the table),
    ``<stem>_curves.csv`` (mean curve per method), ``<stem>_per_image.npz`` (every image's curve,
    float32, one array per method) and ``<stem>.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = result.table()
    mean_curves = {k: v.mean(axis=0).tolist() for k, v in result.curves.items()}
    doc = {
        "model": result.model,
        "data": result.data,
        "accuracy": result.accuracy,
        "settings": result.settings,
        "aopc": table,
        "mean_curves": mean_curves,
        "notes": result.notes,
    }
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "curves": out / f"{stem}_curves.csv"}
    paths["json"].write_text(json.dumps(doc, indent=1))
    with open(paths["csv"], "w") as fh:
        fh.write("method,aopc,stderr,n,vs_random,vs_random_stderr\n")
        for row in table:
            vs = f"{row['vs_random']:.6g},{row['vs_random_stderr']:.6g}" if "vs_random" in row else ","
            fh.write(f"{row['method']},{row['aopc']:.6g},{row['stderr']:.6g},{row['n']},{vs}\n")
    with open(paths["curves"], "w") as fh:
        labels = list(mean_curves)
        fh.write("step," + ",".join(labels) + "\n")
        for k in range(len(next(iter(mean_curves.values()), []))):
            fh.write(f"{k}," + ",".join(f"{mean_curves[lb][k]:.6g}" for lb in labels) + "\n")
    paths["per_image"] = out / f"{stem}_per_image.npz"
    np.savez_compressed(paths["per_image"], **{k: v.astype(np.float32) for k, v in result.curves.items()})
    paths["png"] = plot_curves(result, out / f"{stem}.png")
    return paths
