"""Token relevance of text models: a local tokenizer and HTML / PNG renderings of the tokens.

Tokens are drawn as coloured boxes with the colour scale of the image heatmaps (``heatmap.colorize``:
red = positive relevance, blue = negative, white = 0, symmetric: the bound is max |R| over the
tokens). Tokenisation uses a local ``tokenizer.json`` through the ``tokenizers`` package (the
optional extra ``text``); nothing is downloaded.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import heatmap
from onnxlrp.errors import OnnxLrpError
from onnxlrp.loading import write_bytes, writing

__all__ = [
    "Tokenized",
    "TokenizerError",
    "load_tokenizer",
    "render_html",
    "render_png",
    "token_colours",
    "tokenize",
]


class TokenizerError(OnnxLrpError):
    """A tokenizer file that is missing or unreadable, or the ``tokenizers`` package not installed."""


@dataclass(frozen=True)
class Tokenized:
    """A text as the model sees it: token ids [seq] and the token strings."""

    ids: np.ndarray
    tokens: list[str]


def load_tokenizer(path: str | os.PathLike) -> Any:
    """A ``tokenizers.Tokenizer`` from a local ``tokenizer.json``."""
    try:
        from tokenizers import Tokenizer
    except ImportError as error:
        raise TokenizerError(
            "reading a tokenizer needs the 'tokenizers' package: pip install 'onnxlrp[text]'"
        ) from error
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{path}: not a tokenizer.json ({error})") from error


def tokenize(tokenizer: Any, text: str) -> Tokenized:
    """``text`` -> token ids and strings (with the tokenizer's special tokens, as the model was fed)."""
    encoding = tokenizer.encode(text)
    return Tokenized(np.asarray(encoding.ids, dtype=np.int64), list(encoding.tokens))


def token_colours(relevance: Sequence[float] | np.ndarray, vmax: float | None = None) -> list[str]:
    """One ``#rrggbb`` colour per token: red +, blue -, white 0 on the symmetric scale of the heatmaps."""
    values = np.asarray(relevance, dtype=np.float64).reshape(1, -1)
    rgb = heatmap.to_uint8(heatmap.colorize(values, vmax))[0]
    return ["#{:02x}{:02x}{:02x}".format(*(int(c) for c in colour)) for colour in rgb]


def _check(tokens: Sequence[str], relevance: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(relevance, dtype=np.float64).reshape(-1)
    if len(tokens) != values.size:
        raise ValueError(f"{len(tokens)} tokens but {values.size} relevance values")
    return values


def render_html(
    tokens: Sequence[str],
    relevance: Sequence[float] | np.ndarray,
    title: str,
    path: str | os.PathLike | None = None,
    force: bool = False,
) -> str:
    """A self-contained HTML page of the tokens coloured by relevance (each token's value in its
    tooltip); written atomically to ``path`` when given (an existing file only with ``force``).
    Returns the page."""
    values = _check(tokens, relevance)
    vmax = heatmap.symmetric_vmax(values)
    spans = "".join(
        f'<span class="t" style="background:{colour}" title="{html.escape(token)}: {value:.4g}">'
        f"{html.escape(token)}</span>"
        for token, value, colour in zip(tokens, values, token_colours(values, vmax), strict=True)
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>\n<style>"
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        ".t{display:inline-block;padding:2px 3px;margin:2px 1px;border:1px solid #ddd;"
        "font-family:monospace;white-space:pre}</style></head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{spans}</p>\n"
        f"<p>red: positive relevance, blue: negative; colour scale &plusmn;{vmax:.4g} (max |R|); "
        f"sum of relevance {values.sum():.4g}</p>\n</body></html>\n"
    )
    if path is not None:
        write_bytes(path, page.encode("utf-8"), force)
    return page


def render_png(
    tokens: Sequence[str],
    relevance: Sequence[float] | np.ndarray,
    title: str,
    path: str | os.PathLike,
    per_line: int = 12,
    force: bool = False,
) -> None:
    """The tokens as coloured boxes in rows of ``per_line``, with a colour bar, as a PNG written
    atomically (an existing file only with ``force``)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    values = _check(tokens, relevance)
    vmax = heatmap.symmetric_vmax(values)
    colours = token_colours(values, vmax)
    rows = max(1, -(-len(tokens) // per_line))
    fig = Figure(figsize=(per_line * 0.9 + 1.2, rows * 0.45 + 1.0), dpi=heatmap.DPI)
    ax = fig.add_axes((0.01, 0.02, 0.86, 0.98 - 0.8 / (rows * 0.45 + 1.0)))
    ax.set_xlim(0, per_line)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for k, (token, colour) in enumerate(zip(tokens, colours, strict=True)):
        row, col = divmod(k, per_line)
        ax.add_patch(Rectangle((col + 0.03, row + 0.08), 0.94, 0.84, facecolor=colour, edgecolor="#ccc"))
        text = token if len(token) <= 10 else token[:9] + "…"
        ax.text(col + 0.5, row + 0.5, text, ha="center", va="center", fontsize=8, family="monospace")
    fig.suptitle(title, fontsize=9)

    bar = fig.add_axes((0.9, 0.1, 0.02, 0.6))
    fig.colorbar(ScalarMappable(norm=Normalize(-vmax, vmax), cmap=heatmap.colormap()), cax=bar)
    with writing(path, force) as tmp:
        fig.savefig(tmp)
