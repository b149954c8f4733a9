"""An explanation folder: per input the heatmap (PNG) and the relevance (.npy), relevance grids of
inner layers, single-neuron maps, and ``explain.json`` (what `onnxlrp explain` writes).

Per input ``<name>``: ``<name>.png`` (input and heatmap side by side) and ``<name>.npy`` (the
relevance [C, H, W] as the relevance graph returned it); per layer T ``<name>.layer-<T>.png/.npy``;
per neuron T:I ``<name>.neuron-<T>-<I>.png/.npy``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import heatmap
from onnxlrp.atlas import check_atlas, render_image_concepts
from onnxlrp.concepts import ConceptGraph, concept_graph, image_concepts
from onnxlrp.explaining import (
    ModelHandle,
    compile_session,
    describe_rule,
    neuron_relevance,
    parse_neuron,
    run_batched,
    tensor_shapes,
)
from onnxlrp.inputs import Inputs
from onnxlrp.runtime import RelevanceSession

__all__ = ["FolderOptions", "neuron_maps", "safe_name", "write_explanations"]


@dataclass(frozen=True)
class FolderOptions:
    """What goes into the folder besides each input's heatmap, and how it is computed."""

    layers: Sequence[str] = ()  # tensors whose relevance is drawn per channel
    neurons: Sequence[str] = ()  # TENSOR:INDEX specs (see explaining.parse_neuron)
    target: int | None = None  # class explained (default: each input's predicted class)
    percentile: float | None = None  # colour scale bound (default: max |R|)
    batch_size: int = 256  # chunk size of one relevance-graph run (memory only)
    progress: bool = True  # a progress bar for four inputs or more
    concepts: str | None = None  # a layer whose most relevant channels are shown per input
    concept_top: int = 6  # how many of them
    atlas: str | None = None  # an `onnxlrp concepts` folder of that layer: their reference images


def safe_name(text: str) -> str:
    """``text`` as a file-name part: runs of other characters than [A-Za-z0-9._-] become '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "t"


def neuron_maps(
    handle: ModelHandle,
    x: np.ndarray,
    specs: Sequence[str],
    compile_kwargs: Mapping[str, Any],
    batch_size: int,
) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    """Per neuron spec: (tensor, index, input relevance [N, C, H, W]); one compile per tensor."""
    by_tensor: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for spec in specs:
        tensor, index = parse_neuron(spec)
        by_tensor.setdefault(tensor, []).append((spec, index))
    found = {}
    for tensor, items in by_tensor.items():
        shape = tensor_shapes(handle, x, [tensor])[tensor]
        session = compile_session(handle, compile_kwargs, start=tensor)
        maps = neuron_relevance(session, x, shape, [i for _, i in items], batch_size)
        for k, (spec, index) in enumerate(items):
            found[spec] = (tensor, index, maps[:, k])
    return found


def write_explanations(
    handle: ModelHandle,
    inputs: Inputs,
    compile_kwargs: Mapping[str, Any],
    out: str | Path,
    options: FolderOptions = FolderOptions(),
) -> dict[str, Any]:
    """Explain every input into folder ``out`` (created); returns the summary written to explain.json."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rule_text = describe_rule(compile_kwargs)
    n = inputs.x.shape[0]
    target = None if options.target is None else np.full(n, options.target, dtype=np.int64)
    session = compile_session(handle, compile_kwargs, expose=options.layers)
    result = run_batched(session.run, inputs.x, batch_size=options.batch_size, target=target)
    logits = np.asarray(result[handle.output]).reshape(n, -1)
    predicted = logits.argmax(axis=1)
    targets = predicted if target is None else target
    neurons = neuron_maps(handle, inputs.x, options.neurons, compile_kwargs, options.batch_size)
    concepts = None
    if options.concepts is not None:
        graph = concept_graph(handle.model, options.concepts, **compile_kwargs)
        if options.atlas is not None:
            check_atlas(options.atlas, graph.tensor)
        concepts = (graph, RelevanceSession(graph.model))

    summary: dict[str, Any] = {"model": handle.name, "rule": rule_text, "inputs": []}
    progress = tqdm(
        total=n, desc="explain", unit="input", disable=not options.progress or n < 4, file=sys.stderr
    )
    for i, name in enumerate(inputs.names):
        t = int(targets[i])
        files = _write_input(
            out,
            handle,
            inputs.x[i],
            name,
            i,
            result,
            neurons,
            t,
            int(predicted[i]),
            logits[i, t],
            rule_text,
            options,
        )
        if concepts is not None:
            files += _write_concepts(out, handle, inputs.x[i], name, t, *concepts, options)
        summary["inputs"].append(
            {
                "name": name,
                "predicted": int(predicted[i]),
                "target": t,
                "logit": float(logits[i, t]),
                "relevance_sum": float(result["relevance"][i].sum()),
                "files": files,
            }
        )
        progress.update(1)
    progress.close()
    (out / "explain.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_concepts(
    out: Path,
    handle: ModelHandle,
    x: np.ndarray,
    name: str,
    target: int,
    graph: ConceptGraph,
    session: RelevanceSession,
    options: FolderOptions,
) -> list[str]:
    """The most relevant channels of ``options.concepts`` for one input: their conditional heatmaps
    (.npy [k, C, H, W]) and a figure with reference images from ``options.atlas``."""
    found = image_concepts(graph, x, target, options.concept_top, session)
    stem = f"{name}.concepts-{safe_name(graph.tensor)}"
    np.save(out / f"{stem}.npy", found.heatmaps)
    (out / f"{stem}.json").write_text(
        json.dumps(
            {
                "layer": graph.tensor,
                "target": found.target,
                "layer_relevance": found.total,
                "channels": [
                    {"channel": int(c), "relevance": float(r)}
                    for c, r in zip(found.channels, found.relevance, strict=True)
                ],
            },
            indent=1,
        )
    )
    render_image_concepts(
        out / f"{stem}.png",
        heatmap.display_image(x, handle.low, handle.high),
        found,
        graph.tensor,
        [handle.class_name(k) for k in range(graph.classes)],
        options.atlas,
    )
    return [f"{stem}.png", f"{stem}.npy", f"{stem}.json"]


def _write_input(
    out: Path,
    handle: ModelHandle,
    x: np.ndarray,
    name: str,
    i: int,
    result: Mapping[str, np.ndarray],
    neurons: Mapping[str, tuple[str, tuple[int, ...], np.ndarray]],
    t: int,
    predicted: int,
    logit: float,
    rule_text: str,
    options: FolderOptions,
) -> list[str]:
    """The files of input ``i`` (``x``, named ``name``, explained for class ``t``); returns their names."""
    relevance = result["relevance"][i]
    title = (
        f"{handle.name}: {name} — predicted {handle.class_name(predicted)}, "
        f"target {handle.class_name(t)} (logit {logit:.3g})\nrule: {rule_text}"
    )
    display = heatmap.display_image(x, handle.low, handle.high)
    np.save(out / f"{name}.npy", relevance)
    heatmap.render_explanation(
        out / f"{name}.png", display, heatmap.channel_sum(relevance), title, percentile=options.percentile
    )
    files = [f"{name}.png", f"{name}.npy"]
    for tensor in options.layers:
        layer_rel = result[f"relevance:{tensor}"][i]
        stem = f"{name}.layer-{safe_name(tensor)}"
        np.save(out / f"{stem}.npy", layer_rel)
        maps = layer_rel if layer_rel.ndim == 3 else layer_rel.reshape(layer_rel.shape[0], 1, -1)
        heatmap.render_grid(
            out / f"{stem}.png",
            list(maps),
            f"{handle.name}: {name}, relevance at {tensor} per channel (target "
            f"{handle.class_name(t)}, {rule_text})",
            labels=[f"ch {c}: {maps[c].sum():.2g}" for c in range(maps.shape[0])],
            percentile=options.percentile,
        )
        files += [f"{stem}.png", f"{stem}.npy"]
    for tensor, index, unit_maps in neurons.values():
        index_text = ",".join(map(str, index))
        stem = f"{name}.neuron-{safe_name(tensor)}-{index_text.replace(',', '_')}"
        np.save(out / f"{stem}.npy", unit_maps[i])
        which = f"channel {index[0]} (all positions)" if len(index) == 1 else f"unit [{index_text}]"
        heatmap.render_explanation(
            out / f"{stem}.png",
            display,
            heatmap.channel_sum(unit_maps[i]),
            f"{handle.name}: {name} — relevance 1 at {tensor} {which}, propagated to the input\n"
            f"predicted {handle.class_name(predicted)}; rule: {rule_text}",
            percentile=options.percentile,
        )
        files += [f"{stem}.png", f"{stem}.npy"]
    return files
