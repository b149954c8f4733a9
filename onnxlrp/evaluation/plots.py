"""Writing an evaluation: the AOPC table (JSON, CSV), mean and per-image curves, and plots."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp.evaluation.metrics import aopc
from onnxlrp.evaluation.runner import EvaluationResult
from onnxlrp.loading import claim_outputs, output_folder, write_json, write_text, writing


def plot_curves(
    results: EvaluationResult | Sequence[EvaluationResult], path: str | os.PathLike, force: bool = True
) -> Path:
    """Mean perturbation curve f(x^(0)) - f(x^(k)) per method (one panel per result), saved as PNG
    (atomically; an existing file is replaced only with ``force``)."""
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
    output_folder(path.parent)
    with writing(path, force) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def plot_json(json_paths: Sequence[str | os.PathLike], path: str | os.PathLike) -> Path:
    """One figure, one panel per ``aopc.json`` written by ``write_results`` (models side by side)."""
    results = []
    for jp in json_paths:
        doc = json.loads(Path(jp).read_text())
        curves: dict[str, np.ndarray] = {}
        for label, mean_curve in doc["mean_curves"].items():
            row = next(r for r in doc["aopc"] if r["method"] == label)
            curves[label] = _SummaryCurves(np.asarray(mean_curve), row["aopc"], row["stderr"])
        results.append(EvaluationResult(doc["model"], doc["data"], curves, doc["settings"], doc["accuracy"]))
    return plot_curves(results, path)


class _SummaryCurves(np.ndarray):
    """A mean curve standing in for per-image curves in plot_curves (carries its AOPC and SE)."""

    aopc_se: tuple[float, float]

    def __new__(cls, mean_curve: np.ndarray, aopc_value: float, stderr: float) -> _SummaryCurves:
        obj = np.asarray(mean_curve, dtype=np.float64)[None, :].view(cls)
        obj.aopc_se = (aopc_value, stderr)
        return obj

    def __array_finalize__(self, obj: object) -> None:
        self.aopc_se = getattr(obj, "aopc_se", (float("nan"), float("nan")))


def result_files(out_dir: str | os.PathLike, stem: str = "aopc") -> dict[str, Path]:
    """The files `write_results` writes, by kind (to check them before the work)."""
    out = Path(out_dir)
    names = {
        "json": ".json",
        "csv": ".csv",
        "curves": "_curves.csv",
        "per_image": "_per_image.npz",
        "png": ".png",
    }
    return {kind: out / f"{stem}{suffix}" for kind, suffix in names.items()}


def write_results(
    result: EvaluationResult, out_dir: str | os.PathLike, stem: str = "aopc", force: bool = False
) -> dict[str, Path]:
    """Write ``<stem>.json`` (settings, table, mean curves), ``<stem>.csv`` (the table),
    ``<stem>_curves.csv`` (mean curve per method), ``<stem>_per_image.npz`` (every image's curve,
    float32, one array per method) and ``<stem>.png`` into ``out_dir`` (created), each atomically;
    existing files are replaced only with ``force``."""
    output_folder(out_dir)
    paths = result_files(out_dir, stem)
    claim_outputs(paths.values(), force)
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
    write_json(paths["json"], doc, force)
    rows = ["method,aopc,stderr,n,vs_random,vs_random_stderr"]
    for row in table:
        vs = f"{row['vs_random']:.6g},{row['vs_random_stderr']:.6g}" if "vs_random" in row else ","
        rows.append(f"{row['method']},{row['aopc']:.6g},{row['stderr']:.6g},{row['n']},{vs}")
    write_text(paths["csv"], "\n".join(rows) + "\n", force)
    labels = list(mean_curves)
    lines = ["step," + ",".join(labels)]
    for k in range(len(next(iter(mean_curves.values()), []))):
        lines.append(f"{k}," + ",".join(f"{mean_curves[lb][k]:.6g}" for lb in labels))
    write_text(paths["curves"], "\n".join(lines) + "\n", force)
    per_image: dict[str, Any] = {k: v.astype(np.float32) for k, v in result.curves.items()}
    with writing(paths["per_image"], force) as tmp:
        np.savez_compressed(tmp, **per_image)
    plot_curves(result, paths["png"], force)
    return paths
