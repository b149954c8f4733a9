"""An explanation folder: per input the heatmap (PNG) and the relevance (.npy), relevance grids of
inner layers, single-neuron maps, and ``explain.json`` (what `onnxlrp explain` writes).

Per input ``<name>``: ``<name>.png`` (input and heatmap side by side) and ``<name>.npy`` (the
relevance [C, H, W] as the relevance graph returned it); per layer T ``<name>.layer-<T>.png/.npy``;
per neuron T:I ``<name>.neuron-<T>-<I>.png/.npy``. Every file is checked before any work: none may
exist (unless ``force``) or be one of the inputs, and each is written atomically.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import heatmap
from onnxlrp.atlas import check_atlas, render_image_concepts
from onnxlrp.concepts import ConceptGraph, concept_graph, image_concepts
from onnxlrp.errors import InvalidOptionError
from onnxlrp.explaining import (
    ModelHandle,
    compile_session,
    describe_rule,
    neuron_relevance,
    parse_neuron,
    patch_embedding,
    run_batched,
    tensor_shapes,
    token_feeds,
)
from onnxlrp.inputs import Inputs, TokenInputs
from onnxlrp.loading import claim_outputs, output_folder, save_npy, write_json
from onnxlrp.runtime import RelevanceSession

__all__ = ["FolderOptions", "neuron_maps", "safe_name", "write_explanations", "write_text_explanations"]


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
    max_channels: int = 64  # a layer grid shows at most this many channels, the most relevant ones
    force: bool = False  # replace files of an earlier explanation
    patch_tokens: str | None = None  # a ViT's patch-token tensor [N, C, h, w] (default: patch_embedding)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidOptionError(
                    f"{name.replace('_', '-')} must be a whole number >= 1, got {value!r}"
                )
        p = self.percentile
        if p is not None and not (isinstance(p, int | float) and math.isfinite(p) and 0 < p <= 100):
            raise InvalidOptionError(f"percentile must be in (0, 100], got {p!r}")
        for name, values in (("layer", self.layers), ("neuron", self.neurons)):
            twice = sorted({v for v in values if list(values).count(v) > 1})
            if twice:
                raise InvalidOptionError(f"--{name} {', '.join(twice)} given more than once")


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

    out = output_folder(out)
    if options.patch_tokens is None:
        options = replace(options, patch_tokens=patch_embedding(handle))
    stems = {spec: _neuron_stem(*parse_neuron(spec)) for spec in options.neurons}
    planned = [out / "explain.json"]
    for name in inputs.names:
        for stem in _stems(name, options.layers, stems.values(), options.patch_tokens is not None):
            planned += [out / f"{stem}.png", out / f"{stem}.npy"]
        if options.concepts is not None:
            stem = f"{name}.concepts-{safe_name(options.concepts)}"
            planned += [out / f"{stem}{suffix}" for suffix in (".png", ".npy", ".json")]
    claim_outputs(planned, options.force, inputs.files)  # before any work
    rule_text = describe_rule(compile_kwargs)
    n = inputs.x.shape[0]
    target = None if options.target is None else np.full(n, options.target, dtype=np.int64)
    if inputs.extra and (options.neurons or options.concepts):
        raise InvalidOptionError(
            "--neuron and --concepts need a model with one input (this one takes several)"
        )
    expose = list(dict.fromkeys([*options.layers, *([options.patch_tokens] if options.patch_tokens else [])]))
    session = compile_session(handle, compile_kwargs, expose=expose)
    run, others = _feeding(session, inputs.extra)
    result = run_batched(run, inputs.x, batch_size=options.batch_size, target=target, **others)
    if inputs.extra:  # the logit session feeds one input: read the first output of the relevance run
        logits = np.asarray(result[handle.output]).reshape(n, -1)
    else:  # the explained logits (the first output may be a label or probabilities: skl2onnx)
        logits = handle.logits(inputs.x, options.batch_size, compile_kwargs.get("output"))
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
    write_json(out / "explain.json", summary, force=True)  # claimed above
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
    save_npy(out / f"{stem}.npy", found.heatmaps, force=True)  # claimed by write_explanations
    channels = [
        {"channel": int(c), "relevance": float(r)}
        for c, r in zip(found.channels, found.relevance, strict=True)
    ]
    document = {
        "layer": graph.tensor,
        "target": found.target,
        "layer_relevance": found.total,
        "channels": channels,
    }
    write_json(out / f"{stem}.json", document, force=True)
    render_image_concepts(
        out / f"{stem}.png",
        heatmap.display_image(x, handle.low, handle.high),
        found,
        graph.tensor,
        [handle.class_name(k) for k in range(graph.classes)],
        options.atlas,
    )
    return [f"{stem}.png", f"{stem}.npy", f"{stem}.json"]


def _feeding(
    session: RelevanceSession, extra: Mapping[str, np.ndarray]
) -> tuple[Callable[..., dict], dict[str, Any]]:
    """(a run function taking the explained input as ``x`` and the model's other inputs ``extra`` as
    keywords ``input0``, ``input1``, ... (cut into chunks by run_batched with x), those keywords)."""
    if not extra:
        return session.run, {}
    names = {f"input{i}": name for i, name in enumerate(extra)}

    def run(x: np.ndarray, target: np.ndarray | None = None, **others: np.ndarray) -> dict:
        fed = {names[key]: value for key, value in others.items()}
        return session.run({session.input_name: x, **fed}, target=target)

    return run, {key: extra[name] for key, name in names.items()}


def _neuron_stem(tensor: str, index: tuple[int, ...]) -> str:
    return f"neuron-{safe_name(tensor)}-{'_'.join(map(str, index))}"


def _stems(name: str, layers: Sequence[str], neuron_stems: Iterable[str], patch_tokens: bool) -> list[str]:
    """The file stems of one input: its heatmap, its patch-token map, its layer grids, its neuron maps."""
    return [
        name,
        *([f"{name}.tokens"] if patch_tokens else []),
        *(f"{name}.layer-{safe_name(t)}" for t in layers),
        *(f"{name}.{n}" for n in neuron_stems),
    ]


def strongest_channels(maps: np.ndarray, k: int) -> list[int]:
    """The ``k`` channels with the largest total |relevance|, in channel order."""
    strength = np.abs(maps.reshape(maps.shape[0], -1)).sum(axis=1)
    return sorted(np.argsort(-strength, kind="stable")[:k].tolist())


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
    save_npy(out / f"{name}.npy", relevance, force=True)
    heatmap.render_explanation(
        out / f"{name}.png", display, heatmap.channel_sum(relevance), title, percentile=options.percentile
    )
    files = [f"{name}.png", f"{name}.npy"]
    if options.patch_tokens:
        files += _write_patch_tokens(out, name, display, relevance, result, i, options, title)
    for tensor in options.layers:
        layer_rel = result[f"relevance:{tensor}"][i]
        stem = f"{name}.layer-{safe_name(tensor)}"
        save_npy(out / f"{stem}.npy", layer_rel, force=True)
        maps = layer_rel if layer_rel.ndim == 3 else layer_rel.reshape(layer_rel.shape[0], 1, -1)
        shown = strongest_channels(maps, options.max_channels)
        which = (
            "per channel"
            if len(shown) == len(maps)
            else f"the {len(shown)} most relevant of {len(maps)} channels"
        )
        heatmap.render_grid(
            out / f"{stem}.png",
            [maps[c] for c in shown],
            f"{handle.name}: {name}, relevance at {tensor}, {which} (target "
            f"{handle.class_name(t)}, {rule_text})",
            labels=[f"ch {c}: {maps[c].sum():.2g}" for c in shown],
            percentile=options.percentile,
        )
        files += [f"{stem}.png", f"{stem}.npy"]
    for tensor, index, unit_maps in neurons.values():
        index_text = ",".join(map(str, index))
        stem = f"{name}.{_neuron_stem(tensor, index)}"
        save_npy(out / f"{stem}.npy", unit_maps[i], force=True)
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


def _write_patch_tokens(
    out: Path,
    name: str,
    display: np.ndarray,
    relevance: np.ndarray,
    result: Mapping[str, np.ndarray],
    i: int,
    options: FolderOptions,
    title: str,
) -> list[str]:
    """``<name>.tokens.png``: input, pixel heatmap and patch-token relevance (summed over each
    token's channels); ``<name>.tokens.npy``: the patch-token map [h, w]."""
    tokens = heatmap.channel_sum(result[f"relevance:{options.patch_tokens}"][i])
    pixels = heatmap.channel_sum(relevance)
    save_npy(out / f"{name}.tokens.npy", tokens.astype(np.float32), force=True)  # claimed before
    heatmap.render_panels(
        out / f"{name}.tokens.png",
        [
            [
                ("image", display, "input"),
                ("heat", pixels, f"pixels (sum {pixels.sum():.3g})"),
                (
                    "heat",
                    tokens,
                    f"patch tokens {tokens.shape[0]}x{tokens.shape[1]} (sum {tokens.sum():.3g})",
                ),
            ]
        ],
        title,
        percentile=options.percentile,
    )
    return [f"{name}.tokens.png", f"{name}.tokens.npy"]


def write_text_explanations(
    handle: ModelHandle,
    inputs: TokenInputs,
    compile_kwargs: Mapping[str, Any],
    out: str | Path,
    target: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Explain token-id inputs into folder ``out``: per input ``<name>.html`` and ``<name>.png`` (the
    tokens coloured by relevance) and ``<name>.npy`` (relevance per token [seq]), and explain.json.
    A classifier is explained for ``target`` (default: its predicted class); a language model
    (logits [N, seq, vocab]) at the compile option ``position`` (default the last), its target being
    a vocabulary id (default: the predicted next token). Every file is claimed before any work: none
    may exist (unless ``force``) or be one of the inputs."""
    from onnxlrp import tokens

    out = output_folder(out)
    planned = [out / "explain.json"]
    for name in inputs.names:
        planned += [out / f"{name}{suffix}" for suffix in (".html", ".png", ".npy")]
    claim_outputs(planned, force, inputs.files)  # before any work
    rule_text = describe_rule(compile_kwargs)
    position = int(compile_kwargs.get("position", -1))
    session = compile_session(handle, compile_kwargs)
    summary: dict[str, Any] = {"model": handle.name, "rule": rule_text, "inputs": []}
    for ids, name, words in zip(inputs.ids, inputs.names, inputs.tokens, strict=True):
        result = session.run(token_feeds(handle, ids), target=target)
        logits = np.asarray(result[handle.output])[0]
        language_model = logits.ndim == 2
        if language_model:
            logits = logits[position]
        predicted = int(logits.argmax())
        t = predicted if target is None else int(target)
        relevance = np.asarray(result["relevance"][0], dtype=np.float64).reshape(-1)
        if language_model:
            where = len(ids) + position if position < 0 else position
            what = (
                f"next token after position {where} ({words[where]!r}): predicted "
                f"{inputs.token_name(predicted)}, target {inputs.token_name(t)}"
            )
        else:
            what = f"predicted {handle.class_name(predicted)}, target {handle.class_name(t)}"
        title = f"{handle.name}: {name} — {what} (logit {logits[t]:.3g})\nrule: {rule_text}"
        save_npy(out / f"{name}.npy", relevance.astype(np.float32), force=True)  # claimed above
        tokens.render_html(words, relevance, title, out / f"{name}.html", force=True)
        tokens.render_png(words, relevance, title, out / f"{name}.png", force=True)
        summary["inputs"].append(
            {
                "name": name,
                "tokens": words,
                "predicted": predicted,
                "target": t,
                "logit": float(logits[t]),
                "relevance": [float(v) for v in relevance],
                "relevance_sum": float(relevance.sum()),
                "files": [f"{name}.html", f"{name}.png", f"{name}.npy"],
            }
        )
    write_json(out / "explain.json", summary, force=True)  # claimed above
    return summary
