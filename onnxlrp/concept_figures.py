"""The seed paper's Figs. 7-9 from a concept atlas: "object" and "background" channels chosen from
all channels of a layer by relevance statistics over a data set.

The paper picked, from 24 candidate units of the last pooling layer, those whose input relevance
lies inside (object) or outside (background) the image's central box. Here every channel of the
layer is a candidate: the atlas scan gives each channel's share of the layer's relevance over the
whole data set and, over its reference images, the share of its conditional relevance in the
central box (``centre_share``). Among the channels with at least an average share of relevance,
those giving most of their relevance to a class and with the highest centre shares are that class's
object channels; the lowest centre share is the background channel. The figures show conditional
heatmaps (relevance through that channel only, for the image's class).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from onnxlrp import augment, heatmap
from onnxlrp.atlas import AtlasData, centre_share
from onnxlrp.concepts import ConceptError, ConceptGraph, conditional_heatmaps, prune
from onnxlrp.explaining import run_batched
from onnxlrp.runtime import RelevanceSession


def _candidates(summary: dict) -> list[dict]:
    """Channels with at least an average share of the layer's relevance (and a centre share)."""
    if len(summary["channels"]) < int(summary["layer_shape"][0]):
        raise ConceptError("the atlas covers only some channels; build it without --channels")
    average = 1.0 / len(summary["channels"])
    return [r for r in summary["channels"] if r["share"] >= average and r["centre_share"] is not None]


def object_channels(summary: dict, label: int, count: int = 3) -> list[int]:
    """The ``count`` channels with the highest centre share among those that give most of their
    relevance (at least half) to class ``label``."""
    chosen = [r for r in _candidates(summary) if r["class_shares"][label] >= 0.5]
    if not chosen:
        raise ConceptError(f"no channel gives most of its relevance to class {summary['classes'][label]}")
    return [r["channel"] for r in sorted(chosen, key=lambda r: -r["centre_share"])[:count]]


def background_channel(summary: dict) -> tuple[int, int]:
    """(the channel with the lowest centre share, the class it gives most relevance to)."""
    lowest = min(_candidates(summary), key=lambda r: r["centre_share"])
    return lowest["channel"], int(np.argmax(lowest["class_shares"]))


def rival_channel(summary: dict, background: int, label: int) -> int:
    """The object channel Fig. 9 sets against ``background``: the top object channel of class
    ``label``, or where no channel gives that class half of its relevance, the one with the highest
    centre share among the channels giving it their largest share."""
    try:
        return object_channels(summary, label, 1)[0]
    except ConceptError:
        served = [
            r
            for r in _candidates(summary)
            if r["channel"] != background and int(np.argmax(r["class_shares"])) == label
        ]
        if not served:
            raise ConceptError(
                f"no channel besides {background} gives most of its relevance to class "
                f"{summary['classes'][label]}"
            ) from None
        return max(served, key=lambda r: r["centre_share"])["channel"]


def _class_rows(data: AtlasData, predicted: np.ndarray, label: int, count: int) -> np.ndarray:
    """The first ``count`` images of class ``label`` that the model classifies correctly."""
    rows = np.flatnonzero((data.labels == label) & (predicted == label))[:count]
    if len(rows) == 0:
        raise ConceptError(f"no correctly classified image of class {data.class_names[label]}")
    return rows


def _heat_rows(graph: ConceptGraph, x: np.ndarray, target: np.ndarray, channels, names) -> list[list]:
    rows = []
    for channel in channels:
        heats, _ = conditional_heatmaps(graph, x, target, np.full(len(x), channel))
        rows.append(
            [
                (
                    "heat",
                    heatmap.channel_sum(h),
                    f"ch {channel}: centre {centre_share(heatmap.channel_sum(h)):.2f}",
                )
                for h in heats
            ]
        )
    return [
        [("image", heatmap.display_image(xi, -1.0, 1.0), name) for xi, name in zip(x, names, strict=True)],
        *rows,
    ]


def concept_figures(
    graph: ConceptGraph,
    data: AtlasData,
    atlas: str | os.PathLike,
    out: str | os.PathLike,
    classes: tuple[int, int] = (7, 1),
    images: int = 5,
) -> list[Path]:
    """Figs. 7-9 (PNG) under ``out`` from the atlas folder ``atlas`` of the same model, layer and
    data; ``classes``: the object classes of Figs. 7/8 (CIFAR-10: horse, automobile). Inputs are
    expected in [-1, 1] (the zoo's convention) for the hue shift."""
    if data.labels is None:
        raise ConceptError("Figs. 7-9 need labelled data (mnist or cifar10)")
    summary = json.loads((Path(atlas) / "concepts.json").read_text())
    if summary["layer"] != graph.tensor:
        raise ConceptError(f"the atlas is of layer {summary['layer']}, not {graph.tensor}")
    background, background_class = background_channel(summary)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    predicted = predictions(graph, data.x)
    name = data.class_names
    written = []

    first = classes[0]
    objects = object_channels(summary, first)
    row = int(_class_rows(data, predicted, first, 1)[0])
    image = (data.x[row].transpose(1, 2, 0) + 1) * 127.5
    variants = augment.augment(np.round(image).astype(np.uint8), ["flip", "hue"])
    x = np.stack([v.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1 for _, v in variants])
    target = np.full(len(x), first)
    path = folder / "fig7_concepts.png"
    heatmap.render_panels(
        path,
        _heat_rows(graph, x, target, objects, [f"#{data.indices[row]} {tag}" for tag, _ in variants]),
        f"Fig. 7: object channels {objects} of {graph.tensor} on a {name[first]}, mirrored and hue-shifted\n"
        f"relevance through one channel for class {name[first]}",
    )
    written.append(path)
    for label in classes:
        objects = object_channels(summary, label)
        rows = _class_rows(data, predicted, label, images)
        path = folder / f"fig8_concepts_{name[label]}.png"
        heatmap.render_panels(
            path,
            _heat_rows(
                graph, data.x[rows], data.labels[rows], objects, [f"#{data.indices[r]}" for r in rows]
            ),
            f"Fig. 8: object channels {objects} across {name[label]} images\n"
            "relevance through one channel for the image's class",
        )
        written.append(path)
    rows = _class_rows(data, predicted, background_class, images)
    rival = rival_channel(summary, background, background_class)
    path = folder / "fig9_concepts.png"
    heatmap.render_panels(
        path,
        _heat_rows(
            graph,
            data.x[rows],
            data.labels[rows],
            [background, rival],
            [f"#{data.indices[r]} {name[data.labels[r]]}" for r in rows],
        ),
        f"Fig. 9: background channel {background} (row 2) vs object channel {rival} (row 3) of class "
        f"{name[background_class]}\nrelevance through one channel for the image's class",
    )
    written.append(path)
    return written


def predictions(graph: ConceptGraph, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The model's predicted classes for ``x``."""
    session = RelevanceSession(prune(graph.model, [graph.output]))
    return run_batched(session.run, x, batch_size=batch_size)[graph.output].argmax(1)
