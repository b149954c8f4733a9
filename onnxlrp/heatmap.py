"""Relevance heatmaps: colour mapping and figure rendering (matplotlib, Agg backend).

Colour convention (the seed paper's, and the LRP toolbox's "bwr"): red = positive relevance,
blue = negative relevance, white = zero. The scale is symmetric around zero: a heatmap with
``vmax`` maps ``+vmax`` to pure red (1, 0, 0), ``-vmax`` to pure blue (0, 0, 1) and 0 to pure
white (1, 1, 1), linearly in between; values beyond +-vmax are clipped. ``vmax`` defaults to the
largest |R| of the heatmap, or to a stated percentile of |R| (``percentile=99.5`` say) so that
a few extreme pixels do not wash the rest out.

For RGB inputs the relevance is summed over the channel axis (relevance is additive).

Every figure has a fixed size in pixels (no ``bbox_inches="tight"``), so callers and tests
can predict it: see :func:`explanation_figure_size` and :func:`grid_figure_size`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from onnxlrp.loading import writing

DPI = 100
TILE_INCH = 1.6  # size of one heatmap tile in grids
PANEL_INCH = 3.0  # size of one panel in the explanation figure
TITLE_INCH = 0.7  # room above the panels for the title lines
CELL_PX = round(TILE_INCH * DPI)  # one grid cell in pixels
LABEL_PX = 20  # room for a tile's label inside its cell
MARGIN_PX = 6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def channel_sum(relevance: np.ndarray) -> np.ndarray:
    """[C, H, W] (or [H, W]) relevance -> [H, W] heatmap, summed over channels; a vector of
    features [F] becomes a [1, F] strip."""
    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.ndim == 1:
        return relevance[None]
    if relevance.ndim == 2:
        return relevance
    if relevance.ndim == 3:
        return relevance.sum(axis=0)
    if relevance.ndim == 4 and relevance.shape[0] == 1:
        return relevance[0].sum(axis=0)
    raise ValueError(f"expected relevance shaped [C,H,W] or [H,W], got {relevance.shape}")


def symmetric_vmax(values: np.ndarray, percentile: float | None = None) -> float:
    """The colour scale's bound: max |values|, or that percentile of |values|; never 0."""
    magnitude = np.abs(np.asarray(values, dtype=np.float64))
    magnitude = magnitude[np.isfinite(magnitude)]
    if magnitude.size == 0:
        return 1.0
    vmax = float(np.percentile(magnitude, percentile)) if percentile is not None else float(magnitude.max())
    if not vmax > 0.0:
        vmax = float(magnitude.max())
    return vmax if vmax > 0.0 else 1.0


def colorize(heat: np.ndarray, vmax: float | None = None, percentile: float | None = None) -> np.ndarray:
    """Map a 2-D heatmap to RGB float in [0, 1] (shape [H, W, 3]): red +, blue -, white 0.

    The scale is symmetric: v = clip(heat / vmax, -1, 1); positive v gives (1, 1-v, 1-v),
    negative v gives (1+v, 1+v, 1) (i.e. (1-|v|, 1-|v|, 1)).
    """
    heat = np.asarray(heat, dtype=np.float64)
    if vmax is None:
        vmax = symmetric_vmax(heat, percentile)
    v = np.clip(np.nan_to_num(heat / vmax), -1.0, 1.0)
    pos = np.clip(v, 0.0, 1.0)
    neg = np.clip(-v, 0.0, 1.0)
    rgb = np.empty((*heat.shape, 3), dtype=np.float64)
    rgb[..., 0] = 1.0 - neg
    rgb[..., 1] = 1.0 - pos - neg
    rgb[..., 2] = 1.0 - pos
    return rgb


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def colormap():
    """A matplotlib colormap equal to :func:`colorize` (for colour bars)."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        "onnxlrp_bwr", [(0.0, (0, 0, 1)), (0.5, (1, 1, 1)), (1.0, (1, 0, 0))], N=511
    )


def save_heatmap_png(
    path: str | Path, heat: np.ndarray, vmax: float | None = None, scale: int = 1, percentile=None
) -> None:
    """The bare heatmap as a PNG of size (H*scale, W*scale), nearest-neighbour upscaled."""
    from PIL import Image

    rgb = to_uint8(colorize(heat, vmax, percentile))
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    with writing(path, force=True) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format=None if tmp.suffix else "PNG")


def display_image(x: np.ndarray, low=None, high=None) -> np.ndarray:
    """A model input [C, H, W] (or [F], shown as a [1, F] row) -> an image for display: [H, W, 3] or
    [H, W] floats in [0, 1].

    With ``low``/``high`` (the input's value bounds, scalars or per channel) the map is
    (x - low) / (high - low); without them, a min-max stretch of the whole image.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:  # a vector of features: one row
        x = x[None]
    if x.ndim == 2:
        x = x[None]
    if low is not None and high is not None:
        lo = np.asarray(low, dtype=np.float64).reshape(-1, 1, 1) if np.ndim(low) else float(low)
        hi = np.asarray(high, dtype=np.float64).reshape(-1, 1, 1) if np.ndim(high) else float(high)
        span = np.where(np.asarray(hi - lo) == 0, 1.0, hi - lo)
        img = (x - lo) / span
    else:
        lo, hi = float(x.min()), float(x.max())
        img = (x - lo) / (hi - lo if hi > lo else 1.0)
    img = np.clip(img, 0.0, 1.0)
    if img.shape[0] == 1:
        return img[0]
    if img.shape[0] == 3:
        return img.transpose(1, 2, 0)
    return img.mean(axis=0)


def explanation_figure_size(panels: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of :func:`render_explanation`'s PNG."""
    return round(panels * PANEL_INCH * DPI), round((PANEL_INCH + TITLE_INCH) * DPI)


def render_explanation(
    path: str | Path,
    image: np.ndarray,
    heat: np.ndarray,
    title: str,
    vmax: float | None = None,
    percentile: float | None = None,
) -> float:
    """Input (left) and its heatmap (right) side by side, with a colour bar; returns vmax used.

    ``image`` is a display image from :func:`display_image`; ``heat`` a 2-D heatmap.
    """
    plt = _pyplot()
    if vmax is None:
        vmax = symmetric_vmax(heat, percentile)
    width, height = explanation_figure_size(2)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    top = PANEL_INCH / (PANEL_INCH + TITLE_INCH)
    ax_img = fig.add_axes((0.01, 0.04, 0.42, top - 0.06))
    ax_map = fig.add_axes((0.46, 0.04, 0.42, top - 0.06))
    ax_bar = fig.add_axes((0.895, 0.08, 0.015, top - 0.14))
    ax_img.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax_img.set_title("input", fontsize=9)
    ax_map.imshow(colorize(heat, vmax), interpolation="nearest")
    ax_map.set_title(f"relevance (sum {float(np.sum(heat)):.3g}, scale ±{vmax:.3g})", fontsize=8)
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    _colorbar(fig, ax_bar, vmax)
    lines = wrap_title(title, int(width / 1.1))  # fontsize 8: a little narrower than 9
    fig.text(0.5, 0.985, "\n".join(lines[:4]), fontsize=8 if len(lines) > 2 else 9, ha="center", va="top")
    with writing(path, force=True) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return vmax


def _colorbar(fig, ax, vmax: float) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(-vmax, vmax), cmap=colormap())
    bar = fig.colorbar(mappable, cax=ax)
    bar.ax.tick_params(labelsize=6)


def grid_shape(count: int, ncols: int | None = None) -> tuple[int, int]:
    """(rows, cols) of a grid of ``count`` tiles: ``ncols`` or about square."""
    if count <= 0:
        return 0, 0
    cols = ncols if ncols else max(1, math.ceil(math.sqrt(count)))
    cols = min(cols, count)
    return math.ceil(count / cols), cols


def grid_figure_size(count: int, ncols: int | None = None, title: str = "") -> tuple[int, int]:
    """(width, height) in pixels of :func:`render_grid`'s PNG for ``count`` tiles."""
    rows, cols = grid_shape(count, ncols)
    full = f"{title}\nshared scale ±1.23e-45"  # the scale line is one short line
    return cols * CELL_PX, rows * CELL_PX + title_band_px(full, cols * CELL_PX)


TITLE_LINE_PX = 15  # one line of a mosaic title (fontsize 9)


def wrap_title(title: str, width_px: int) -> list[str]:
    """The title's lines, wrapped to the figure width (about 6 px per character at fontsize 9)."""
    import textwrap

    chars = max(30, int(width_px / 7.0))
    lines: list[str] = []
    for line in title.split("\n"):
        lines += textwrap.wrap(line, chars) or [""]
    return lines


def title_band_px(title: str, width_px: int) -> int:
    """Height in pixels of a mosaic's title band."""
    return 12 + TITLE_LINE_PX * len(wrap_title(title, width_px)) if title else 8


def _fit_tile(rgb: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an [h, w, 3] float tile into a white [size, size, 3] square."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    img = Image.fromarray(to_uint8(rgb), mode="RGB").resize((nw, nh), Image.Resampling.NEAREST)
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top : top + nh, left : left + nw] = np.asarray(img)
    return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def _render_mosaic(path, tiles: list[list[tuple[np.ndarray, str] | None]], title: str) -> None:
    """Rows of (rgb tile, label) cells drawn as one image (fast: one axes), title above."""
    plt = _pyplot()
    nrows = len(tiles)
    ncols = max((len(r) for r in tiles), default=1)
    lines = wrap_title(title, ncols * CELL_PX)
    width, height = ncols * CELL_PX, nrows * CELL_PX + title_band_px(title, ncols * CELL_PX)
    canvas = np.full((nrows * CELL_PX, ncols * CELL_PX, 3), 255, dtype=np.uint8)
    inner = CELL_PX - LABEL_PX - MARGIN_PX
    labels = []
    for r, row in enumerate(tiles):
        for c, cell in enumerate(row):
            if cell is None:
                continue
            rgb, label = cell
            top = r * CELL_PX + LABEL_PX
            left = c * CELL_PX + (CELL_PX - inner) // 2
            canvas[top : top + inner, left : left + inner] = _fit_tile(rgb, inner)
            labels.append((c * CELL_PX + CELL_PX / 2, r * CELL_PX + LABEL_PX - 3, label))
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    frac = nrows * CELL_PX / height
    ax = fig.add_axes((0.0, 0.0, 1.0, frac))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for x, y, label in labels:
        if label:
            fig.text(
                x / width,
                1.0 - (height - nrows * CELL_PX + y) / height,
                label,
                fontsize=7,
                ha="center",
                va="bottom",
            )
    fig.text(0.5, 1.0 - 4 / height, "\n".join(lines), fontsize=9, ha="center", va="top", linespacing=1.2)
    with writing(path, force=True) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)


def render_grid(
    path: str | Path,
    heats: Sequence[np.ndarray] | np.ndarray,
    title: str,
    labels: Sequence[str] | None = None,
    ncols: int | None = None,
    vmax: float | None = None,
    percentile: float | None = None,
) -> float:
    """One tile per 2-D heatmap, all with one shared symmetric colour scale; returns vmax.

    The PNG is :func:`grid_figure_size` pixels: ``grid_shape(len(heats), ncols)`` cells of
    CELL_PX square, plus a title band.
    """
    heats = [np.asarray(h, dtype=np.float64) for h in heats]
    if vmax is None:
        vmax = symmetric_vmax(
            np.concatenate([h.ravel() for h in heats]) if heats else np.zeros(1), percentile
        )
    rows, cols = grid_shape(len(heats), ncols)
    cells: list[list] = [[None] * cols for _ in range(rows)]
    for k, heat in enumerate(heats):
        r, c = divmod(k, cols)
        cells[r][c] = (colorize(heat, vmax), labels[k] if labels is not None else "")
    _render_mosaic(path, cells, f"{title}\nshared scale ±{vmax:.3g}")
    return vmax


def render_panels(
    path: str | Path,
    rows: Sequence[Sequence[tuple[str, np.ndarray, str]]],
    title: str,
    percentile: float | None = None,
    share_scale: bool = False,
) -> None:
    """A figure of rows of tiles; each tile is (kind, array, label) with kind "image" or "heat".

    Each heatmap gets its own symmetric scale (max |R|, or the percentile) unless
    ``share_scale`` (one scale for the whole figure). Size: panels_figure_size(rows).
    """
    shared = None
    if share_scale:
        pool = [a.ravel() for r in rows for kind, a, _ in r if kind == "heat"]
        shared = symmetric_vmax(np.concatenate(pool), percentile) if pool else 1.0
    cells: list[list[tuple[np.ndarray, str] | None]] = [
        [
            (_as_rgb(a) if kind == "image" else colorize(a, shared, percentile), label)
            for kind, a, label in row
        ]
        for row in rows
    ]
    _render_mosaic(path, cells, title)


def panels_figure_size(nrows: int, ncols: int, title: str = "") -> tuple[int, int]:
    """(width, height) in pixels of :func:`render_panels`'s PNG."""
    return ncols * CELL_PX, nrows * CELL_PX + title_band_px(title, ncols * CELL_PX)
