"""Figs. 7-9 from the concept atlas: object and background channels chosen from all channels of the
last pooling layer by relevance statistics over the test images (onnxlrp.concept_figures), beside
the paper's 24-candidate criterion (cifar.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from onnxlrp.atlas import AtlasData, build_atlas
from onnxlrp.concept_figures import background_channel, concept_figures, object_channels, rival_channel
from onnxlrp.concepts import ConceptError, concept_graph
from onnxlrp.datasets import select_indices
from onnxlrp.explaining import ModelHandle, describe_rule
from onnxlrp.inputs import preprocess_all
from onnxlrp.reproduce.common import AUTOMOBILE, HORSE, CifarSource, Figure, Settings, last_pool_output

CAPTIONS = {
    "fig7": "the object channels of class {first} on a {first}, mirrored and hue-shifted",
    "fig8": "the object channels of each class across correctly classified test images of it",
    "fig9": "the background channel {background} against the object channel {rival} of its class "
    "(the top one; where none gives that class half of its relevance, the highest centre share among "
    "those giving it their largest share), on correctly classified test images of that class",
}


def _channel_text(records: dict, channel: int, label: int) -> str:
    r = records[channel]
    return (
        f"{channel} (layer share {r['share']:.3f}, {r['class_shares'][label]:.2f} to its class, "
        f"centre {r['centre_share']:.2f})"
    )


def crp_figures(out: Path, st: Settings, source: CifarSource, handle: ModelHandle) -> dict[str, Any]:
    """Scan ``st.crp_images`` test images (all when None; resumable, under out/concepts/<model>),
    build the atlas of the last pooling layer and draw Figs. 7-9 from it; returns what the page
    shows (the chosen channels, or why no figures were drawn)."""
    model = handle.name
    layer = last_pool_output(handle)
    folder = out / "concepts" / model
    idx = select_indices(len(source), st.crp_images)
    names = list(handle.classes) or [str(k) for k in range(10)]
    data = AtlasData(
        preprocess_all(handle, [source.image(int(i)) for i in idx]),
        source.labels[idx],
        idx,
        names,
        handle.low,
        handle.high,
        {"model": model, "data": f"{source.name} ({len(idx)} images)", "rule": describe_rule(st.neuron_rule)},
    )
    graph = concept_graph(handle.model, layer, **st.neuron_rule)
    build_atlas(
        graph, data, folder, top=st.crp_top, force=True, log=st.log, progress=False
    )  # force: reproduce checked the folder; a scan with the same settings resumes
    info: dict[str, Any] = {
        "model": model,
        "layer": layer,
        "images": len(idx),
        "source": source.name,
        "atlas": f"concepts/{model}/atlas.html",
    }
    summary = json.loads((folder / "concepts.json").read_text())
    try:
        background, background_class = background_channel(summary)
        objects = {label: object_channels(summary, label) for label in (HORSE, AUTOMOBILE)}
        rival = rival_channel(summary, background, background_class)
        paths = concept_figures(graph, data, folder, folder / "figures", (HORSE, AUTOMOBILE), st.class_images)
    except ConceptError as error:
        shutil.rmtree(folder / "figures", ignore_errors=True)  # none drawn, none left half-drawn
        info["skipped"] = str(error)
        st.log(f"{model}: no concept figures: {error}")
        return info
    records = {r["channel"]: r for r in summary["channels"]}
    chosen = (
        f"Channels of {layer} ({graph.channels}) chosen over {len(idx)} {source.name} images, explained "
        f"for their label ({describe_rule(st.neuron_rule)}): among the channels with at least an average "
        "share of the layer's positive relevance, a class's object channels give at least half of theirs "
        "to that class and have the highest centre share (|conditional relevance| in the central half-box "
        f"of their top-{summary['top']} reference images); the background channel has the lowest. "
        "Heatmaps: relevance through that channel only, for the image's class. "
    )
    picked = "; ".join(
        f"{names[label]}: " + ", ".join(_channel_text(records, c, label) for c in objects[label])
        for label in (HORSE, AUTOMOBILE)
    )
    picked += (
        f"; background: {_channel_text(records, background, background_class)} against "
        f"{_channel_text(records, rival, background_class)}"
    )
    info.update(objects={names[k]: v for k, v in objects.items()}, background=background)
    for path in paths:
        key = path.name.split("_")[0]
        caption = CAPTIONS[key].format(first=names[HORSE], background=background, rival=rival)
        st.figures.append(
            Figure(
                f"{key} (concept atlas)",
                path.relative_to(out).as_posix(),
                f"{model}: {caption}. {chosen}Chosen: {picked}.",
            )
        )
    st.log(f"{model}: concept object channels {info['objects']}, background channel {background}")
    return info
