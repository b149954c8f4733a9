"""Concepts of a layer over a data set: relevance maximisation and conditional heatmaps (CRP).

One scan over the data keeps, per image, the relevance each channel of a layer receives for the
explained class and the channel's largest activation; the top images per channel by either are
its reference images ("what the channel detects"). Conditional heatmaps (the relevance flowing
through one channel only, see onnxlrp.conditioning) show where in those images the channel
matters; they are cropped to the receptive field of the channel's most relevant position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxlrp import heatmap
from onnxlrp.compiler import compile, exposed_name
from onnxlrp.conditioning import channel_relevance_name, mask_name, one_hot_masks
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import run_batched
from onnxlrp.loading import ModelLike, load_model
from onnxlrp.runtime import RelevanceSession, session_options
from onnxlrp.scan import ScanResult, scan


class ConceptError(OnnxLrpError):
    """A layer or channel that cannot be analysed, or data the model cannot read."""


@dataclass
class ConceptGraph:
    """A relevance graph conditioned on one layer, exposing its relevance and activation."""

    model: onnx.ModelProto
    tensor: str
    output: str  # the explained logits
    input_name: str
    input_shape: tuple[int, ...]  # one sample, without the batch axis
    shape: tuple[int, ...]  # the layer's shape for one sample: [C, ...]
    classes: int  # the explained output's width

    @property
    def channels(self) -> int:
        """The layer's channel count."""
        return self.shape[0]

    def pruned(self, outputs: Sequence[str]) -> bytes:
        """The graph with only ``outputs`` (and the nodes they need), serialised."""
        return prune(self.model, outputs).SerializeToString()


def concept_graph(model: ModelLike, layer: str, **compile_options) -> ConceptGraph:
    """Compile ``model`` conditioned on ``layer`` (a tensor or node name) with its relevance and
    activation as extra outputs."""
    model = load_model(model)
    tensor = layer_tensor(model, layer)
    compiled = compile(model, condition=[tensor], expose=[tensor], **compile_options)
    graph = compiled.graph
    graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = RelevanceSession(compiled)
    dims = next(i for i in graph.input if i.name == session.input_name).type.tensor_type.shape.dim
    input_shape = tuple(d.dim_value for d in dims[1:])
    probe = session.run(np.zeros((1, *input_shape), np.float32))
    output = next(o.name for o in graph.output if not o.name.startswith(("relevance", "channel_relevance")))
    return ConceptGraph(
        compiled,
        tensor,
        output,
        session.input_name,
        input_shape,
        tuple(probe[tensor].shape[1:]),
        probe[output].shape[1],
    )


def layer_tensor(model: onnx.ModelProto, layer: str) -> str:
    """``layer`` if it is a tensor of the model, else the first output of the node so named."""
    for node in model.graph.node:
        if layer in node.output:
            return layer
    for node in model.graph.node:
        if node.name == layer:
            return node.output[0]
    raise ConceptError(
        f"layer {layer!r} is neither a tensor nor a node of the model (`onnxlrp inspect MODEL` lists them)"
    )


def prune(model: onnx.ModelProto, outputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` computing only ``outputs``: nodes and initializers nothing needs are
    dropped (onnxruntime computes every node of a graph, asked for or not)."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    needed = set(outputs)
    keep = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    kept_outputs = [o for o in graph.output if o.name in outputs]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    inputs = [i for i in graph.input if i.name in needed]
    del graph.input[:]
    graph.input.extend(inputs)
    return pruned


@dataclass(frozen=True)
class ChannelStats:
    """Batch function of the concept scan: per image and channel of ``tensor`` the relevance it
    receives (for the target class) and its largest activation; the class explained."""

    tensor: str
    output: str

    def __call__(self, session: RelevanceSession, x: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        out = session.run(x, target=target)
        logits = out[self.output]
        activation = out[self.tensor]
        return {
            "relevance": out[channel_relevance_name(self.tensor)],
            "activation": activation.reshape(len(x), activation.shape[1], -1).max(-1),
            "predicted": logits.argmax(1),
            "target": np.where(target < 0, logits.argmax(1), target),
        }


def scan_channels(
    graph: ConceptGraph,
    x: np.ndarray,
    out: str | os.PathLike,
    *,
    targets: np.ndarray | None = None,
    indices: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    **scan_options,
) -> ScanResult:
    """The concept scan of ``x`` (resumable; see onnxlrp.scan)."""
    if tuple(x.shape[1:]) != graph.input_shape:
        raise ConceptError(
            f"the data has inputs shaped {tuple(x.shape[1:])}; the model reads {graph.input_shape}"
        )
    model = graph.pruned([graph.output, channel_relevance_name(graph.tensor), graph.tensor])
    stats = ChannelStats(graph.tensor, graph.output)
    return scan(model, x, stats, out, targets=targets, indices=indices, labels=labels, **scan_options)


def top_images(scores: np.ndarray, k: int) -> np.ndarray:
    """[C, k] row numbers of the ``k`` highest ``scores`` ([N, C]) per channel, best first."""
    k = min(k, len(scores))
    return np.argsort(-scores, axis=0, kind="stable")[:k].T


def class_shares(relevance: np.ndarray, classes: np.ndarray, count: int) -> np.ndarray:
    """[C, count]: each channel's positive relevance per explained class, as a share of its total."""
    positive = np.clip(relevance, 0, None)
    per_class = np.zeros((relevance.shape[1], count))
    for k in range(count):
        per_class[:, k] = positive[classes == k].sum(0)
    total = per_class.sum(1, keepdims=True)
    return per_class / np.where(total > 0, total, 1.0)


def conditional_heatmaps(
    graph: ConceptGraph,
    x: np.ndarray,
    targets: np.ndarray,
    channels: Sequence[int] | np.ndarray,
    batch_size: int = 64,
    threads: int | None = None,
    session: RelevanceSession | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """For pairs (image x[i], channel channels[i]): the input relevance flowing through that channel
    only, and the relevance at the layer (that channel's map, [P, ...]), explaining targets[i]."""
    masks = one_hot_masks(graph.channels, channels)
    session = session or RelevanceSession(graph.model, options=session_options(threads))

    def run(xb: np.ndarray, target: np.ndarray, mask: np.ndarray, channel: np.ndarray) -> dict:
        out = session.run(xb, target=target, masks={mask_name(graph.tensor): mask})
        at_layer = out[exposed_name(graph.tensor)]
        return {"heat": out["relevance"], "layer": at_layer[np.arange(len(at_layer)), channel]}

    result = run_batched(
        run, x, batch_size=batch_size, target=np.asarray(targets), mask=masks, channel=np.asarray(channels)
    )
    return result["heat"], result["layer"]


def receptive_boxes(graph: ConceptGraph, trials: int = 2, seed: int = 0) -> np.ndarray:
    """[*layer spatial shape, 4]: per position of the layer, the input box (top, bottom, left, right;
    bottom/right exclusive) that changes it, found by perturbing each input pixel (all channels,
    by +-10 around ``trials`` random inputs) and seeing which positions of any channel move."""
    forward = RelevanceSession(prune(graph.model, [graph.tensor]))
    channels, height, width = graph.input_shape
    spatial = graph.shape[1:]
    if len(spatial) != 2:
        raise ConceptError(f"receptive fields need a layer shaped [C, H, W]; {graph.tensor} is {graph.shape}")
    rng = np.random.default_rng(seed)
    depends = np.zeros((height * width, *spatial), bool)
    for _ in range(trials):
        base = rng.normal(size=(1, channels, height, width)).astype(np.float32)
        reference = forward.run(base)[graph.tensor][0]
        for delta in (10.0, -10.0):
            for start in range(0, height * width, 256):
                pixels = np.arange(start, min(start + 256, height * width))
                batch = np.repeat(base, len(pixels), axis=0)
                batch[np.arange(len(pixels)), :, pixels // width, pixels % width] += delta
                moved = np.abs(forward.run(batch)[graph.tensor] - reference).max(1) > 1e-6
                depends[pixels] |= moved
    boxes = np.zeros((*spatial, 4), np.int64)
    rows, cols = np.divmod(np.arange(height * width), width)
    for i in range(spatial[0]):
        for j in range(spatial[1]):
            hit = depends[:, i, j]
            if not hit.any():
                boxes[i, j] = (0, height, 0, width)
                continue
            boxes[i, j] = (rows[hit].min(), rows[hit].max() + 1, cols[hit].min(), cols[hit].max() + 1)
    return boxes


def crop_box(boxes: np.ndarray, layer_map: np.ndarray) -> tuple[int, int, int, int]:
    """The receptive field of the position where ``layer_map`` (one channel, [H, W]) is largest."""
    if layer_map.ndim != 2:
        return (0, -1, 0, -1)
    i, j = np.unravel_index(int(np.argmax(layer_map)), layer_map.shape)
    top, bottom, left, right = (int(v) for v in boxes[i, j])
    return top, bottom, left, right


def overlay(image: np.ndarray, heat: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """An RGB [H, W, 3] display image with the heatmap (red +, blue -) blended in where |heat| is
    large (scale: that percentile of |heat|)."""
    rgb = np.asarray(image, np.float64)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    vmax = heatmap.symmetric_vmax(heat, percentile)
    alpha = np.sqrt(np.clip(np.abs(heat) / vmax, 0, 1))[..., None] * 0.8
    return (1 - alpha) * rgb + alpha * heatmap.colorize(heat, vmax)


@dataclass
class ImageConcepts:
    """The most relevant channels of a layer for one image, with their conditional heatmaps."""

    channels: np.ndarray  # [k], most relevant first
    relevance: np.ndarray  # [k], the relevance each receives
    total: float  # the relevance the whole layer receives
    heatmaps: np.ndarray  # [k, *input shape], relevance through that channel only
    heatmap: np.ndarray  # [*input shape], the unconditional heatmap
    target: int


def image_concepts(
    graph: ConceptGraph,
    x: np.ndarray,
    target: int = -1,
    top: int = 6,
    session: RelevanceSession | None = None,
) -> ImageConcepts:
    """The ``top`` channels of the layer receiving the most relevance for ``x`` ([1, ...]) and
    class ``target`` (-1: predicted), with their conditional heatmaps (``session``: one over
    ``graph.model``, to reuse)."""
    if x.ndim == len(graph.input_shape):
        x = x[None]
    session = session or RelevanceSession(graph.model)
    full = session.run(x, target=np.array([target]))
    per_channel = full[channel_relevance_name(graph.tensor)][0]
    chosen = np.argsort(-per_channel, kind="stable")[: min(top, graph.channels)]
    explained = int(full[graph.output][0].argmax()) if target < 0 else target
    heats, _ = conditional_heatmaps(
        graph, np.repeat(x, len(chosen), 0), np.full(len(chosen), explained), chosen, session=session
    )
    return ImageConcepts(
        chosen, per_channel[chosen], float(per_channel.sum()), heats, full["relevance"][0], explained
    )
