"""The concept atlas: one HTML page with, per channel of a layer, its reference images.

``build_atlas`` scans a data set (resumably), picks per channel the images where it receives the
most relevance (and, for comparison, where it is most active), computes their conditional
heatmaps, crops them to the receptive field of the channel's most relevant (most active) position
and writes ``atlas.html``, PNG strips under ``channels/`` (also read by ``explain --concepts``) and
``concepts.json`` with the numbers.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import heatmap
from onnxlrp.concepts import (
    ConceptError,
    ConceptGraph,
    ImageConcepts,
    class_shares,
    conditional_heatmaps,
    crop_box,
    overlay,
    prune,
    receptive_boxes,
    scan_channels,
    top_images,
)
from onnxlrp.errors import OutputExistsError
from onnxlrp.explaining import run_batched
from onnxlrp.loading import write_text, writing
from onnxlrp.runtime import RelevanceSession, session_options

THUMB = 64  # pixels per reference image in the strips
ATLAS = "atlas.html"


@dataclass
class AtlasData:
    """What the atlas shows: inputs, their labels and data set positions, display settings."""

    x: np.ndarray
    labels: np.ndarray | None
    indices: np.ndarray
    class_names: list[str]
    low: Any = None  # the input's value range for display, scalars or per channel (None: stretch)
    high: Any = None
    describe: dict = field(default_factory=dict)  # model, data, rule: shown in the header

    def display(self, row: int) -> np.ndarray:
        """Image ``row`` as [H, W, 3] floats in [0, 1]."""
        image = heatmap.display_image(self.x[row], self.low, self.high)
        return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def _crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    top, bottom, left, right = box
    return image[top : bottom if bottom > 0 else None, left : right if right > 0 else None]


def _thumb(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(heatmap.to_uint8(rgb), mode="RGB")
    return np.asarray(image.resize((THUMB, THUMB), Image.Resampling.NEAREST))


def _strip(path: Path, thumbs: Sequence[np.ndarray]) -> None:
    from PIL import Image

    gap = 2
    canvas = np.full((THUMB, len(thumbs) * (THUMB + gap) - gap, 3), 255, np.uint8)
    for k, thumb in enumerate(thumbs):
        canvas[:, k * (THUMB + gap) : k * (THUMB + gap) + THUMB] = thumb
    with writing(path, force=True) as tmp:  # build_atlas checked the folder
        Image.fromarray(canvas, mode="RGB").save(tmp, format="PNG")


def build_atlas(
    graph: ConceptGraph,
    data: AtlasData,
    out: str | os.PathLike,
    *,
    top: int = 8,
    channels: int | None = None,
    force: bool = False,
    batch_size: int = 64,
    threads: int | None = None,
    log=print,
    **scan_options,
) -> Path:
    """Scan ``data``, then write the atlas of the ``channels`` most relevant channels (all when None)
    under ``out``; returns the path of atlas.html."""
    folder = Path(out)
    page = folder / ATLAS
    if page.exists() and not force:
        raise OutputExistsError(f"{page}: exists; pass --force (force=True) to overwrite it")
    targets = data.labels if data.labels is not None else None
    result = scan_channels(
        graph,
        data.x,
        folder / "scan",
        targets=targets,
        indices=data.indices,
        labels=data.labels,
        batch_size=batch_size,
        threads=threads,
        force=force,
        **scan_options,
    )
    relevance, activation = result.array("relevance"), result.array("activation")
    explained = result.array("target")
    order = np.argsort(-relevance.sum(0), kind="stable")
    chosen = order[: channels or len(order)]
    by_relevance = top_images(relevance, top)[chosen]  # [C', k] rows of data.x
    by_activation = top_images(activation, top)[chosen]
    k = by_relevance.shape[1]
    log(f"conditional heatmaps for {len(chosen)} channels x {k} reference images")
    rows = by_relevance.reshape(-1)
    pair_channels = np.repeat(chosen, k)
    heats, layer_maps = conditional_heatmaps(
        graph, data.x[rows], explained[rows], pair_channels, batch_size=batch_size, threads=threads
    )
    forward = RelevanceSession(prune(graph.model, [graph.tensor]), options=session_options(threads))
    act_rows = by_activation.reshape(-1)
    act_maps = run_batched(forward.run, data.x[act_rows], batch_size=batch_size)[graph.tensor]
    act_maps = act_maps[np.arange(len(act_rows)), np.repeat(chosen, k)]
    boxes = receptive_boxes(graph) if len(graph.shape) == 3 else None

    (folder / "channels").mkdir(exist_ok=True)
    shares = class_shares(relevance, explained, len(data.class_names))
    positive = np.clip(relevance, 0, None).sum(0)
    layer_positive = positive.sum() or 1.0
    records = []
    for a, channel in enumerate(chosen):
        rel_thumbs, act_thumbs, centre = [], [], []
        for j in range(k):
            p = a * k + j
            row = int(by_relevance[a, j])
            box = crop_box(boxes, layer_maps[p]) if boxes is not None else (0, -1, 0, -1)
            heat = heatmap.channel_sum(heats[p])
            centre.append(centre_share(heat))
            rel_thumbs.append(_thumb(overlay(_crop(data.display(row), box), _crop(heat, box))))
            row = int(by_activation[a, j])
            box = crop_box(boxes, act_maps[p]) if boxes is not None else (0, -1, 0, -1)
            act_thumbs.append(_thumb(_crop(data.display(row), box)))
        _strip(folder / "channels" / f"c{channel:04d}_relevance.png", rel_thumbs)
        _strip(folder / "channels" / f"c{channel:04d}_activation.png", act_thumbs)
        records.append(
            _record(int(channel), data, relevance, activation, shares, by_relevance[a], by_activation[a])
        )
        records[-1]["share"] = float(positive[channel] / layer_positive)
        finite = [value for value in centre if np.isfinite(value)]  # none for a channel without relevance
        records[-1]["centre_share"] = float(np.mean(finite)) if finite else None
    summary = {
        **data.describe,
        "layer": graph.tensor,
        "layer_shape": list(graph.shape),
        "images": len(data.x),
        "top": k,
        "classes": data.class_names,
        "channels": records,
    }
    write_text(folder / "concepts.json", json.dumps(summary, indent=1, allow_nan=False), force=True)
    write_text(page, render_html(summary), force=True)
    return page


def centre_share(heat: np.ndarray) -> float:
    """The share of |heat| ([H, W]) in the central box (half the height and width): 0.25 for
    relevance spread evenly, near 1 on a centred object, near 0 on the background."""
    magnitude = np.abs(heat)
    h, w = magnitude.shape
    total = magnitude.sum()
    inside = magnitude[h // 4 : h - h // 4, w // 4 : w - w // 4].sum()
    return float(inside / total) if total > 0 else float("nan")


def _record(channel, data, relevance, activation, shares, rel_rows, act_rows) -> dict:
    def refs(rows, values):
        return [
            {
                "index": int(data.indices[r]),
                "label": data.class_names[int(data.labels[r])] if data.labels is not None else "",
                "value": float(values[r, channel]),
            }
            for r in rows
        ]

    return {
        "channel": channel,
        "relevance_sum": float(relevance[:, channel].sum()),
        "relevance_mean": float(relevance[:, channel].mean()),
        "activation_mean": float(activation[:, channel].mean()),
        "class_shares": [round(float(v), 4) for v in shares[channel]],
        "by_relevance": refs(rel_rows, relevance),
        "by_activation": refs(act_rows, activation),
    }


def render_html(summary: dict) -> str:
    """The atlas page: one card per channel, a search box and a sort menu (data inline as JSON)."""
    header = ", ".join(
        f"{key}: {html.escape(str(summary[key]))}" for key in ("model", "data", "rule") if key in summary
    )
    payload = json.dumps(summary, allow_nan=False).replace("</", "<\\/")  # NaN would break JSON.parse
    return (
        _PAGE.replace("%TITLE%", html.escape(f"concept atlas: {summary['layer']}"))
        .replace("%HEADER%", header)
        .replace("%LAYER%", html.escape(f"{summary['layer']} {summary['layer_shape']}"))
        .replace("%IMAGES%", str(summary["images"]))
        .replace("%DATA%", payload)
    )


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
body{font:13px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:18px;margin:0 0 4px} .sub{color:#555;margin-bottom:10px}
.bar{position:sticky;top:0;background:#fafafa;padding:6px 0;z-index:1}
input,select{font:inherit;padding:3px 6px;margin-right:8px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;width:fit-content;max-width:560px}
.card h2{font-size:14px;margin:0 0 4px} .meta{color:#555;font-size:12px;margin-bottom:4px}
.row{display:flex;align-items:center;gap:6px;margin:3px 0} .row span{width:70px;color:#555;font-size:11px}
.row img{image-rendering:pixelated;max-width:470px}
.shares{display:flex;gap:2px;align-items:flex-end;height:40px;margin-top:4px}
.shares div{width:44px;background:#c33;position:relative}
.names{display:flex;gap:2px;font-size:9px;color:#555} .names div{width:44px;overflow:hidden;text-align:center}
</style></head><body>
<h1>Concept atlas of %LAYER%</h1>
<div class="sub">%HEADER%; %IMAGES% images. Per channel: the images where it receives the most
relevance for the explained class, cropped to the receptive field of its most relevant position,
with the conditional heatmap (relevance through this channel only; red +, blue -) overlaid; below,
the images where it is most active (no heatmap), and its positive relevance per class. Centre share:
the mean share of |conditional relevance| in the central half-box of the reference images (0.25 if
spread evenly; high for object, low for background channels).</div>
<div class="bar"><input id="q" placeholder="search: channel number or class" size="30">
<select id="sort"><option value="share">sort: share of the layer's relevance</option>
<option value="activation">sort: mean activation</option>
<option value="centre">sort: centre share (object)</option>
<option value="edge">sort: centre share (background)</option><option value="channel">sort: channel</option>
</select><span id="count"></span></div>
<div class="grid" id="grid"></div>
<script id="data" type="application/json">%DATA%</script>
<script>
const D = JSON.parse(document.getElementById('data').textContent);
const pad = c => String(c).padStart(4, '0');
function card(ch) {
  const best = ch.class_shares.map((v, i) => [v, D.classes[i]]).sort((a, b) => b[0] - a[0]);
  const tops = best.slice(0, 3).filter(b => b[0] > 0).map(b => `${b[1]} ${(100 * b[0]).toFixed(0)}%`);
  const bar = (v, i) => `<div title="${D.classes[i]}: ${(100 * v).toFixed(1)}%"
    style="height:${Math.max(1, 40 * v)}px"></div>`;
  const bars = ch.class_shares.map(bar).join('');
  const names = D.classes.map(n => `<div>${n}</div>`).join('');
  const refs = rs => rs.map(r => `#${r.index}${r.label ? ' ' + r.label : ''}`).join(', ');
  return `<div class="card" data-c="${ch.channel}" data-text="${ch.channel} ${tops.join(' ')}">
  <h2>channel ${ch.channel}</h2>
  <div class="meta">${(100 * ch.share).toFixed(2)}% of the layer's positive relevance; mean relevance
  ${ch.relevance_mean.toPrecision(3)}; mean max activation ${ch.activation_mean.toPrecision(3)};
  centre share ${ch.centre_share === null ? '-' : ch.centre_share.toFixed(2)};
  top classes: ${tops.join(', ') || '-'}</div>
  <div class="row"><span>relevance</span><img src="channels/c${pad(ch.channel)}_relevance.png"
    title="${refs(ch.by_relevance)}"></div>
  <div class="row"><span>activation</span><img src="channels/c${pad(ch.channel)}_activation.png"
    title="${refs(ch.by_activation)}"></div>
  <div class="shares">${bars}</div><div class="names">${names}</div></div>`;
}
function draw() {
  const q = document.getElementById('q').value.trim().toLowerCase();
  const key = document.getElementById('sort').value;
  let list = D.channels.slice();
  if (key === 'share') list.sort((a, b) => b.share - a.share);
  if (key === 'activation') list.sort((a, b) => b.activation_mean - a.activation_mean);
  if (key === 'channel') list.sort((a, b) => a.channel - b.channel);
  const centre = (ch, missing) => ch.centre_share === null ? missing : ch.centre_share;
  if (key === 'centre') list.sort((a, b) => centre(b, -1) - centre(a, -1));
  if (key === 'edge') list.sort((a, b) => centre(a, 2) - centre(b, 2));
  const html = list.map(card).filter(h => {
    if (!q) return true;
    const t = h.match(/data-text="([^"]*)"/)[1].toLowerCase();
    return /^\\d+$/.test(q) ? t.split(' ')[0] === q : t.includes(q);
  });
  document.getElementById('grid').innerHTML = html.join('');
  document.getElementById('count').textContent = `${html.length} of ${D.channels.length} channels`;
}
document.getElementById('q').addEventListener('input', draw);
document.getElementById('sort').addEventListener('change', draw);
draw();
</script></body></html>
"""


def check_atlas(atlas: str | os.PathLike, tensor: str) -> None:
    """Refuse a folder that is not an atlas of layer ``tensor``."""
    path = Path(atlas) / "concepts.json"
    if not path.is_file():
        raise ConceptError(f"{atlas}: not an `onnxlrp concepts` folder (no concepts.json)")
    layer = json.loads(path.read_text()).get("layer")
    if layer != tensor:
        raise ConceptError(f"{atlas}: an atlas of layer {layer!r}, not of {tensor!r}")


def reference_tiles(atlas: str | os.PathLike, channel: int) -> list[np.ndarray]:
    """The reference images of ``channel`` from an atlas folder (its relevance strip, split)."""
    from PIL import Image

    path = Path(atlas) / "channels" / f"c{channel:04d}_relevance.png"
    if not path.is_file():
        return []
    strip = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0
    return [
        strip[:, k * (THUMB + 2) : k * (THUMB + 2) + THUMB]
        for k in range((strip.shape[1] + 2) // (THUMB + 2))
    ]


def render_image_concepts(
    path: str | os.PathLike,
    image: np.ndarray,
    found: ImageConcepts,
    layer: str,
    class_names: Sequence[str],
    atlas: str | os.PathLike | None = None,
    references: int = 4,
) -> None:
    """One row per channel: its conditional heatmap over the image, then its reference images from
    ``atlas`` (a `onnxlrp concepts` folder of the same model and layer); the first row is the
    image and its unconditional heatmap."""
    name = class_names[found.target] if found.target < len(class_names) else str(found.target)
    rows = [
        [
            ("image", image, "input"),
            ("heat", heatmap.channel_sum(found.heatmap), f"class {name}"),
        ]
    ]
    for channel, value, heat in zip(found.channels, found.relevance, found.heatmaps, strict=True):
        share = value / found.total if found.total else float("nan")
        row = [("image", overlay(image, heatmap.channel_sum(heat)), f"ch {channel}: {100 * share:.0f}%")]
        if atlas is not None:
            row += [
                ("image", tile, f"ref {k + 1}")
                for k, tile in enumerate(reference_tiles(atlas, int(channel))[:references])
            ]
        rows.append(row)
    heatmap.render_panels(
        Path(path),
        rows,
        f"the {len(found.channels)} most relevant channels of {layer} for class {name}\n"
        "each: relevance through that channel only (share of the layer's relevance)"
        + ("; right: its reference images from the atlas" if atlas is not None else ""),
    )
