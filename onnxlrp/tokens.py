"""Explaining token models: token ids from .npy files or text (a local tokenizer.json), one
relevance per token, and an HTML page of the tokens coloured by it.

A token model is one whose explained input is integer token ids (graph.data_input); its other
integer inputs are fed as their names say: "mask" all ones, "type" all zeros.
"""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxlrp.errors import ModelLoadError, OnnxLrpError
from onnxlrp.graph import FLOAT_TYPES, data_input
from onnxlrp.loading import write_bytes, write_json


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
            from tokenizers import Tokenizer  # type: ignore[import-untyped]
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
