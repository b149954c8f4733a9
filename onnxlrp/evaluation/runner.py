"""A whole evaluation: every method's perturbation curves on one model and data set."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxlrp.datasets import load_dataset
from onnxlrp.errors import InvalidOptionError
from onnxlrp.evaluation.heatmaps import method_region_scores
from onnxlrp.evaluation.metrics import (
    ForwardFn,
    PerturbationSetup,
    aopc,
    data_range,
    paired_difference,
    perturbation_curve,
    setup_from,
)
from onnxlrp.explaining import LogitSession, run_batched
from onnxlrp.graph import data_input, fixed_dims
from onnxlrp.loading import ModelLike, load_model
from onnxlrp.methods import BASELINES, DEFAULT_METHODS, Method
from onnxlrp.zoo import locate


@dataclass
class EvaluationResult:
    """Per method: curves [N, L+1]; with the settings used."""

    model: str
    data: str
    curves: dict[str, np.ndarray]
    settings: dict[str, Any]
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


def evaluate(
    model: ModelLike,
    x: np.ndarray,
    methods: Iterable[str | Method] = DEFAULT_METHODS + BASELINES,
    setup: PerturbationSetup | None = None,
    *,
    batch_size: int = 1024,
    labels: np.ndarray | None = None,
    progress: bool = False,
    model_name: str | None = None,
    data_name: str = "",
    forward_fn: ForwardFn | None = None,
    targets: np.ndarray | None = None,
    scores: dict[str, np.ndarray] | None = None,
    store: str | os.PathLike | None = None,
    backend: str = "local",
    **settings: Any,
) -> EvaluationResult:
    """Perturbation curves of every method on one model: returns an ``EvaluationResult``.

    ``setup`` (or its fields as keywords: region=4, steps=16, ...) says how inputs are perturbed.
    One forward session of the model (its logits, ``LogitSession``) is built once and serves every
    method, unless ``forward_fn`` is given; the targets are the clean images' predicted classes unless
    given. The box bounds of zbox/epsilon-gamma-box are the data's global min and max. ``scores``
    (label -> [N, R], from ``method_region_scores``) skips the relevance computation; ``store`` keeps
    each method's relevance there as resumable scan shards (computed on ``backend``, "local" or "ray").
    """
    setup = setup_from(setup, settings)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidOptionError(f"batch size must be a whole number >= 1, got {batch_size!r}")
    x = checked_images(load_model(model, external_data=False), x, setup.region)
    forward = forward_fn if forward_fn is not None else LogitSession(model)
    if targets is None:
        targets = run_batched(lambda xb: {"logits": forward(xb)}, x, batch_size)["logits"].argmax(axis=1)
    targets = np.asarray(targets, dtype=np.int64)
    if setup.value_range is None:
        setup = setup.replace(value_range=data_range(x))
    low, high = float(np.min(setup.value_range[0])), float(np.max(setup.value_range[1]))
    notes: list[str] = []
    if scores is None:
        scores, notes = method_region_scores(
            model, x, targets, methods, region=setup.region, batch_size=min(batch_size, 256),
            seed=setup.seed, low=low, high=high, progress=progress, store=store, backend=backend,
        )  # fmt: skip
    done: dict[int, np.ndarray] = {}
    curves: dict[str, np.ndarray] = {}
    for label, sc in scores.items():
        if id(sc) not in done:  # the same relevance gives the same curves: computed once
            done[id(sc)] = perturbation_curve(
                forward, x, sc, targets, setup, batch_size=batch_size, progress=progress, desc=label
            )
        curves[label] = done[id(sc)]
    accuracy = float((targets == labels).mean()) if labels is not None else None
    return EvaluationResult(
        model=model_name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "model"),
        data=data_name,
        curves=curves,
        settings=_settings(setup, curves, len(x)),
        accuracy=accuracy,
        notes=notes,
    )


def load_data(
    model: str | os.PathLike,
    data: str | os.PathLike,
    n: int | None = None,
    datasets_dir: str | os.PathLike | None = None,
) -> tuple[Path, np.ndarray, np.ndarray | None]:
    """(the model's file, inputs, labels or None) of ``data`` for ``model`` (a zoo name or .onnx
    path): a data set preprocessed as the zoo entry says, or a .npy checked against the model's input."""
    path, zoo_model = locate(model)
    shape = fixed_dims(data_input(load_model(path, external_data=False)))
    x, labels, _ = load_dataset(data, zoo_model, n=n, datasets_dir=datasets_dir, input_shape=shape)
    return path, x, labels


def checked_images(model: onnx.ModelProto, x: np.ndarray, region: int) -> np.ndarray:
    """``x`` as float32 [N, C, H, W] if it fits the model's input (N >= 1, finite values) and a
    ``region`` x ``region`` tile fits in it; else an error saying what does not."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise InvalidOptionError(f"the inputs must be numbers, got dtype {x.dtype}")
    dims = fixed_dims(data_input(model))
    if x.ndim != 4 or any(w > 0 and w != h for w, h in zip(dims[1:], x.shape[1:], strict=False)):
        wanted = "x".join(str(w) if w > 0 else "?" for w in dims[1:])
        raise InvalidOptionError(f"the inputs have shape {list(x.shape)}; the model takes [N, {wanted}]")
    if x.shape[0] == 0:
        raise InvalidOptionError("there are no inputs (batch 0)")
    if not np.isfinite(x).all():
        raise InvalidOptionError("the inputs hold NaN or infinite values")
    if region > min(x.shape[2:]):
        raise InvalidOptionError(f"region {region} is larger than the images ({x.shape[2]}x{x.shape[3]})")
    return np.ascontiguousarray(x, dtype=np.float32)


def _settings(setup: PerturbationSetup, curves: dict[str, np.ndarray], n: int) -> dict[str, Any]:
    """The settings recorded with a result (aopc.json's "settings")."""
    return {
        "region": setup.region,
        "steps": int(next(iter(curves.values())).shape[1] - 1) if curves else setup.steps,
        "perturbation": setup.perturbation,
        "order": setup.order,
        "seed": setup.seed,
        "n": n,
        "value_range": [np.asarray(v).tolist() for v in setup.value_range],
        "blur_sigma": setup.sigma if setup.perturbation == "blur" else None,
        "target": "predicted class of the clean image",
    }
