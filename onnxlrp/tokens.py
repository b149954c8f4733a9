"""Token relevance of text models: a local tokenizer and HTML / PNG renderings of the tokens.

Tokens are drawn as coloured boxes with the colour scale of the image heatmaps (``heatmap.colorize``:
red = positive relevance, blue = negative, white = 0, symmetric: the bound is max |R| over the
tokens). Tokenisation uses a local ``tokenizer.json`` through the ``tokenizers`` package (the
optional extra ``text``); nothing is downloaded.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxlrp import heatmap
from onnxlrp.errors import ModelLoadError, OnnxLrpError
from onnxlrp.graph import FLOAT_TYPES, data_input
from onnxlrp.loading import write_bytes, write_json

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
) -> str:
    """A self-contained HTML page of the tokens coloured by relevance (each token's value in its
    tooltip); written atomically to ``path`` when given. Returns the page."""
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
        write_atomically(Path(path), page.encode("utf-8"))
    return page


def render_png(
    tokens: Sequence[str],
    relevance: Sequence[float] | np.ndarray,
    title: str,
    path: str | os.PathLike,
    per_line: int = 12,
) -> None:
    """The tokens as coloured boxes in rows of ``per_line``, with a colour bar, as a PNG."""
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
    fig.savefig(os.fspath(path))


@dataclass
class TokenInput:
    """One sequence to explain: its name, ids [T] and the tokens' text (ids as text without a tokenizer)."""

    name: str
    ids: np.ndarray
    tokens: list[str]


def is_token_model(model: onnx.ModelProto) -> bool:
    """Whether the model's explained input is integer token ids."""
    return data_input(model).type.tensor_type.elem_type not in FLOAT_TYPES


def load_token_inputs(items: list[str], tokenizer: str | os.PathLike | None = None) -> list[TokenInput]:
    """Sequences from .npy files ([T] or [N, T] integer ids) or texts (tokenized by ``tokenizer``,
    a tokenizer.json file for the `tokenizers` package)."""
    decoder = None
    if tokenizer is not None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise OnnxLrpError("reading text needs the tokenizers package (pip install tokenizers)") from None
        try:
            decoder = Tokenizer.from_file(os.fspath(tokenizer))
        except Exception as error:
            raise ModelLoadError(f"{tokenizer}: not a tokenizer.json file ({error})") from None
    inputs = []
    for index, item in enumerate(items):
        if item.endswith(".npy"):
            ids = np.load(item)
            if ids.dtype.kind not in "iu" or ids.ndim not in (1, 2):
                raise ModelLoadError(
                    f"{item}: token ids must be an integer array [T] or [N, T], got {ids.dtype} {ids.shape}"
                )
            rows = ids.reshape(-1, ids.shape[-1]).astype(np.int64)
            stem = Path(item).stem
            for row_index, row in enumerate(rows):
                name = stem if len(rows) == 1 else f"{stem}_{row_index}"
                tokens = (
                    [decoder.id_to_token(int(t)) or str(t) for t in row] if decoder else [str(t) for t in row]
                )
                inputs.append(TokenInput(name, row, tokens))
        elif decoder is not None:
            encoding = decoder.encode(item)
            inputs.append(
                TokenInput(f"text{index:03d}", np.array(encoding.ids, np.int64), list(encoding.tokens))
            )
        else:
            raise OnnxLrpError(
                f"'{item}' is not an .npy file of token ids; to explain text pass --tokenizer tokenizer.json"
            )
    return inputs


def feed_for(model: onnx.ModelProto, ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every model input for a batch of ids [N, T]: masks all ones, token types all zeros."""
    explained = data_input(model).name
    initializers = {init.name for init in model.graph.initializer}
    feed = {explained: ids}
    for inp in model.graph.input:
        if inp.name in initializers or inp.name == explained:
            continue
        name = inp.name.lower()
        if "mask" in name:
            feed[inp.name] = np.ones_like(ids)
        elif "type" in name:
            feed[inp.name] = np.zeros_like(ids)
        else:
            raise OnnxLrpError(
                f"input '{inp.name}': do not know what to feed it (known: attention masks, token types)"
            )
    return feed


def _colour(value: float, scale: float) -> str:
    """Red for positive, blue for negative relevance, white for zero."""
    t = 0.0 if scale == 0 else max(-1.0, min(1.0, value / scale))
    fade = round(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def token_html(tokens: list[str], relevance: np.ndarray, title: str) -> str:
    """A page with the tokens coloured by relevance (symmetric scale: max |R|), each with its value."""
    scale = float(np.max(np.abs(relevance))) if relevance.size else 0.0
    spans = "".join(
        f'<span title="{r:.4g}" style="background:{_colour(float(r), scale)};padding:2px;margin:1px;'
        f'display:inline-block">{html.escape(token)}</span>'
        for token, r in zip(tokens, relevance, strict=True)
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:monospace'><h3>{html.escape(title)}</h3><p>{spans}</p>"
        f"<p>red: positive, blue: negative relevance; scale +-{scale:.4g}</p></body></html>\n"
    )


def write_token_explanations(
    model: onnx.ModelProto,
    inputs: list[TokenInput],
    compile_options: dict,
    out: str | os.PathLike,
    target: int | None = None,
    force: bool = False,
) -> list[dict]:
    """Per input: ``<name>.npy`` (relevance [T]) and ``<name>.html``; ``explain.json`` lists them.
    An existing file is replaced only with ``force``."""
    from onnxlrp.compiler import compile
    from onnxlrp.runtime import RelevanceSession

    session = RelevanceSession(compile(model, **compile_options))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for item in inputs:
        result = session.run(feed_for(model, item.ids[None]), target=target)
        relevance = result["relevance"][0]
        logits = np.asarray(result[session.output_names[1]])[0]
        row = logits[-1] if logits.ndim == 2 else logits  # a language model: the explained position
        chosen = int(np.argmax(row)) if target is None else int(target)
        title = f"{item.name}: target {chosen}, logit {row[chosen]:.4g}, relevance sum {relevance.sum():.4g}"
        buffer = io.BytesIO()
        np.save(buffer, relevance)
        write_bytes(folder / f"{item.name}.npy", buffer.getvalue(), force)
        write_bytes(folder / f"{item.name}.html", token_html(item.tokens, relevance, title).encode(), force)
        records.append(
            {
                "name": item.name,
                "target": chosen,
                "logit": float(row[chosen]),
                "relevance_sum": float(relevance.sum()),
                "tokens": item.tokens,
            }
        )
    write_json(folder / "explain.json", records, force)
    return records
