"""Model inputs from files: image files (PNG/JPEG, preprocessed for the model) or .npy batches.

An image is preprocessed as its zoo model says, or for a plain .onnx file resized to the model's
input size and scaled to [0, 1]; a .npy holds inputs already preprocessed ([N, C, H, W] or [C, H, W]).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import augment as aug
from onnxlrp.datasets import load_dataset
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import ModelHandle
from onnxlrp.loading import regular_file

__all__ = [
    "IMAGE_SUFFIXES",
    "InputError",
    "Inputs",
    "TokenInputs",
    "data_set_inputs",
    "load_inputs",
    "load_token_inputs",
    "preprocess",
    "read_image",
    "read_npy_batch",
    "read_npz_inputs",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class InputError(OnnxLrpError):
    """An input file that is missing, of an unknown kind or of the wrong shape."""


@dataclass
class Inputs:
    """Preprocessed inputs with a name per input and, for images, the uint8 image they came from."""

    x: np.ndarray  # [N, C, H, W] float32, preprocessed
    names: list[str]
    raw: list[np.ndarray | None]  # uint8 images before preprocessing (None for .npy inputs)
    files: list[Path] = field(default_factory=list)  # the files read (never to be written)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # the model's other inputs, by name


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 [H, W] (grey modes) or [H, W, 3] (RGB). 16-bit and 32-bit grey images
    (16-bit PNGs) are scaled to 8 bits (v / 257), not clipped; float images in [0, 1] are scaled by 255."""
    from PIL import Image

    path = regular_file(path, "an image")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im.load()
            if im.mode.startswith("I") or im.mode == "F":
                return _grey_to_uint8(np.asarray(im), im.mode)
            if im.mode in ("1", "L", "LA"):
                return np.asarray(im.convert("L"))
            return np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{path}: too many pixels to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None


def _grey_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image as uint8 (Pillow's "L" conversion clips at 255)."""
    values = values.astype(np.float64)
    if mode == "F":
        scale = 255.0 if values.max(initial=0) <= 1 else 1.0
    else:  # "I;16*" or "I": a 16-bit image unless its values need more bits
        scale = 255.0 / max(65535.0, values.max(initial=0))
    return np.clip(np.round(values * scale), 0, 255).astype(np.uint8)


def preprocess(handle: ModelHandle, image: np.ndarray) -> np.ndarray:
    """uint8 image -> [1, C, H, W] float32: the zoo's preprocessing, or resize + scale to [0, 1]."""
    from PIL import Image

    _, c, h, w = (list(handle.input_shape) + [-1] * 4)[:4]
    image = np.asarray(image)
    if c == 1 and image.ndim == 3:  # an RGB file for a grey model
        image = np.asarray(Image.fromarray(image[..., :3]).convert("L"))
    elif c == 3 and image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if handle.zoo is not None:
        out = np.asarray(handle.zoo.preprocess(image), dtype=np.float32)
        return out.reshape((1, *out.shape[-3:])) if out.ndim != 4 else out
    pil = Image.fromarray(image)
    pil = pil.convert("L" if c == 1 else "RGB")
    if h > 0 and w > 0 and pil.size != (w, h):
        pil = pil.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(pil, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return arr[None]


def preprocess_all(handle: ModelHandle, images: Iterable[np.ndarray]) -> np.ndarray:
    """uint8 images -> [N, C, H, W] float32 (``preprocess`` of each)."""
    return np.concatenate([preprocess(handle, np.asarray(img)) for img in images], axis=0).astype(np.float32)


def read_npy_batch(path: str | os.PathLike, input_shape: Sequence[int] = ()) -> np.ndarray:
    """A .npy batch [N, ...] (or one input, without N) of finite numbers, N >= 1, whose per-input
    sizes match ``input_shape`` (the model input's, -1 where free; default images [N, C, H, W]);
    never unpickles."""
    path, x = _read_npy(path, "numbers")
    return checked_batch(x, str(path), input_shape).astype(np.float32)


def _read_npy(path: str | os.PathLike, holding: str) -> tuple[Path, np.ndarray]:
    """(the path, its array) for a .npy file of ``holding`` (in errors); never unpickles."""
    path = regular_file(path, "a .npy file")
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{path}: not a readable .npy file of {holding} ({error})") from None
    if not isinstance(x, np.ndarray):
        raise InputError(f"{path}: holds {type(x).__name__}, not one array")
    return path, x


def checked_batch(x: np.ndarray, where: str, input_shape: Sequence[int] = ()) -> np.ndarray:
    """``x`` as a batch [N, ...] (a leading axis added to one input) of N >= 1 finite numbers whose
    per-input sizes match ``input_shape`` (-1 where free; default images [C, H, W]); else an error
    naming ``where``."""
    if x.dtype.kind not in "biuf":
        raise InputError(f"{where}: holds {x.dtype}, not numbers")
    wanted = list(input_shape)[1:] or [-1, -1, -1]  # unknown: images [C, H, W]
    if x.ndim == len(wanted):
        x = x[None]
    if x.ndim != len(wanted) + 1 or any(w > 0 and w != h for w, h in zip(wanted, x.shape[1:], strict=True)):
        expected = ", ".join(str(w) if w > 0 else "?" for w in wanted) if input_shape else "C, H, W"
        raise InputError(f"{where}: expected [N, {expected}] or [{expected}], got shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise InputError(f"{where}: holds no inputs (batch 0)")
    if x.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(x.astype(np.float32)).all()
        if not finite:
            raise InputError(f"{where}: holds NaN or infinite values (or values beyond float32's range)")
    return x


def read_npz_inputs(path: str | os.PathLike, handle: ModelHandle) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(the explained input, the model's other inputs by name) from a .npz of arrays named like the
    model's inputs, each a batch of the same size; never unpickles."""
    path = regular_file(path, "a .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, AttributeError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: not a readable .npz file of arrays ({error})") from None
    shapes = handle.input_shapes
    unknown = sorted(set(arrays) - set(shapes))
    missing = sorted(set(shapes) - set(arrays))
    if unknown or missing:
        raise InputError(
            f"{path}: holds {', '.join(sorted(arrays)) or 'nothing'}; the model's inputs are "
            f"{', '.join(shapes)}" + (f" (missing: {', '.join(missing)})" if missing else "")
        )
    batches = {name: checked_batch(a, f"{path}[{name}]", shapes[name]) for name, a in arrays.items()}
    if len({len(b) for b in batches.values()}) > 1:
        sizes = ", ".join(f"{name}: {len(b)}" for name, b in batches.items())
        raise InputError(f"{path}: the arrays hold different numbers of inputs ({sizes})")
    x = batches.pop(handle.input_name).astype(np.float32)
    return x, batches


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeated ones numbered (the same stem in two folders, one file given twice)."""
    dup = {n for n in names if names.count(n) > 1}
    return [f"{n}_{i}" if n in dup else n for i, n in enumerate(names)]


def data_set_inputs(
    handle: ModelHandle, data: str | os.PathLike, n: int | None = None, datasets_dir=None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(inputs [N, C, H, W], labels or None, indices) of a data set: "mnist" / "cifar10" (the
    test split, ``n`` evenly spaced images), a .npy of preprocessed inputs, or a folder of images
    (sorted by name; its first ``n``)."""
    folder = Path(data)
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:n]
        if not files:
            raise InputError(f"{folder}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return load_inputs(handle, files).x, None, np.arange(len(files))
    return load_dataset(data, handle.zoo, n=n, datasets_dir=datasets_dir)


def load_inputs(
    handle: ModelHandle | None,
    paths: Sequence[str | os.PathLike] | str | os.PathLike,
    augmentations: Sequence[str] = (),
    hue: float = aug.DEFAULT_HUE_SHIFT,
) -> Inputs:
    """Inputs from image files or .npy batches (not both), with ``augmentations`` ("flip", "hue")
    added as extra inputs ``<name>_flip``, ``<name>_hue``. Images need ``handle`` (the model whose
    preprocessing they get); .npy inputs are named ``<stem>_0000``, ``<stem>_0001``, ..."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not math.isfinite(hue):
        raise InputError(f"the hue shift must be a finite fraction of the colour circle, got {hue}")
    files = [Path(p) for p in paths]
    if not files:
        raise InputError("no input files given")
    for path in files:
        regular_file(path, "an input file")
    if any(p.suffix.lower() == ".npz" for p in files):
        if len(files) != 1 or handle is None or augmentations:
            raise InputError("a .npz of model inputs comes alone, with a model and without --augment")
        x, extra = read_npz_inputs(files[0], handle)
        names = [f"{files[0].stem}_{i:04d}" for i in range(len(x))]
        return Inputs(x=x, names=names, raw=[None] * len(names), files=files, extra=extra)
    if handle is not None and len(handle.input_shapes) > 1:
        raise InputError(
            f"the model has inputs {', '.join(handle.input_shapes)}: give one .npz holding a batch per "
            "input name (--input names the one explained)"
        )
    npys = [p for p in files if p.suffix.lower() == ".npy"]
    if npys:
        if len(npys) != len(files):
            raise InputError("give either image files or .npy batches, not both")
        if "hue" in augmentations:
            raise InputError("--augment hue needs image files (it works on the uint8 image), not .npy")
        arrays = [read_npy_batch(p, handle.input_shape if handle is not None else ()) for p in files]
        x = np.concatenate(arrays, axis=0)
        names = _unique(
            [f"{p.stem}_{i:04d}" for p, a in zip(files, arrays, strict=True) for i in range(len(a))]
        )
        out_x, out_names = [x], list(names)
        if "flip" in augmentations:
            out_x.append(x[..., ::-1])
            out_names += [f"{n}_flip" for n in names]
        x = np.ascontiguousarray(np.concatenate(out_x, axis=0))
        return Inputs(x=x, names=out_names, raw=[None] * len(out_names), files=files)
    if handle is None:
        raise InputError(f"{files[0]}: image files need a model for their preprocessing")
    xs, names = [], []
    raws: list[np.ndarray | None] = []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{path}: not an image (PNG/JPEG) or .npy file")
        image = read_image(path)
        for tag, variant in aug.augment(image, list(augmentations), hue):
            xs.append(preprocess(handle, variant))
            names.append(path.stem if tag == "orig" else f"{path.stem}_{tag}")
            raws.append(variant)
    x = np.concatenate(xs, axis=0).astype(np.float32)
    return Inputs(x=x, names=_unique(names), raw=raws, files=files)


@dataclass
class TokenInputs:
    """Token-id inputs of a text model, one sequence per input (lengths may differ)."""

    ids: list[np.ndarray]  # int64 [seq] each
    names: list[str]
    tokens: list[list[str]]  # the token strings drawn (the tokenizer's, else "#id")
    tokenizer: Any = None  # a tokenizers.Tokenizer when one was given (names target tokens)
    files: list[Path] = field(default_factory=list)  # the files read (never to be written)

    def token_name(self, token_id: int) -> str:
        """A vocabulary id as its token string (the id itself without a tokenizer)."""
        text = self.tokenizer.id_to_token(int(token_id)) if self.tokenizer is not None else None
        return f"{token_id} {text!r}" if text is not None else str(token_id)


def load_token_inputs(
    texts: Sequence[str] = (),
    paths: Sequence[str | os.PathLike] = (),
    tokenizer: str | os.PathLike | None = None,
) -> TokenInputs:
    """Token-id inputs from texts (tokenised with a local ``tokenizer.json``) and/or .npy files of
    integer token ids ([seq] or [N, seq]; named ``<stem>_0000``, ...)."""
    from onnxlrp import tokens

    tk = tokens.load_tokenizer(tokenizer) if tokenizer is not None else None
    if texts and tk is None:
        raise InputError("--text needs --tokenizer tokenizer.json (a local tokenizers file)")
    if not texts and not paths:
        raise InputError("no input given: pass --text TEXT or .npy files of token ids")
    found = TokenInputs(ids=[], names=[], tokens=[], tokenizer=tk)
    for k, text in enumerate(texts):
        encoded = tokens.tokenize(tk, text)
        found.ids.append(encoded.ids)
        found.names.append(f"text_{k:04d}")
        found.tokens.append(encoded.tokens)
    for path in map(Path, paths):
        if path.suffix.lower() != ".npy":
            raise InputError(f"{path}: not a .npy file of token ids")
        path, ids = _read_npy(path, "token ids")
        if not np.issubdtype(ids.dtype, np.integer) or ids.ndim not in (1, 2) or ids.size == 0:
            raise InputError(
                f"{path}: expected integer token ids [seq] or [N, seq], got {ids.dtype} {ids.shape}"
            )
        found.files.append(path)
        for i, row in enumerate(ids.reshape(-1, ids.shape[-1])):
            found.ids.append(row.astype(np.int64))
            found.names.append(f"{path.stem}_{i:04d}")
            found.tokens.append(
                [tk.id_to_token(int(t)) or f"#{t}" for t in row] if tk is not None else [f"#{t}" for t in row]
            )
    found.names = _unique(found.names)  # one file given twice
    return found
