"""The onnxlrp model zoo: trained ONNX classifiers with their preprocessing, accuracy and samples.

    from onnxlrp import zoo
    zoo.list_models()                      # [{"name": "mnist-lenet5", "accuracy": 0.99.., ...}, ...]
    m = zoo.load("cifar10-resnet")         # ZooModel: .model (onnx.ModelProto), .classes, .low, .high
    x = m.preprocess("zoo/samples/cifar10_test07000_horse.png")   # float32 [1, 3, 32, 32]
    zoo.sample_paths("mnist-lenet5")       # labelled test images shipped with the zoo

Models live in ``zoo/`` at the repository root (next to the ``onnxlrp`` package) and are described
by ``zoo/manifest.json``; set ``$ONNXLRP_ZOO`` to use another folder. An installed wheel would need
the zoo shipped as package data (it is not, at present): this module finds it relative to the
source tree. This module needs only numpy, onnx and Pillow (no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxlrp.errors import OnnxLrpError
from onnxlrp.loading import load_model


def zoo_dir() -> Path:
    """The zoo folder: ``$ONNXLRP_ZOO``, else ``zoo/`` next to the ``onnxlrp`` package."""
    env = os.environ.get("ONNXLRP_ZOO")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "zoo"


ZOO_DIR = zoo_dir()
MANIFEST = ZOO_DIR / "manifest.json"


class ZooError(OnnxLrpError):
    """A zoo model or file that does not exist, or a broken manifest."""


def manifest() -> dict:
    """The parsed ``manifest.json`` of the zoo."""
    path = zoo_dir() / "manifest.json"
    if not path.is_file():
        raise ZooError(f"the model zoo's manifest {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as error:
        raise ZooError(f"the model zoo's manifest {path} is not readable JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ZooError(f'the model zoo\'s manifest {path} has no "models" table')
    return data


@dataclass
class ZooModel:
    """One zoo model: the ONNX graph plus what is needed to feed and read it."""

    name: str
    path: Path
    model: onnx.ModelProto
    classes: list[str]
    preprocessing: dict
    low: float
    high: float
    accuracy: float
    dataset: str = ""
    info: dict = field(default_factory=dict, repr=False)  # the manifest entry

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image."""
        c, h, w = self.preprocessing["input_shape"][1:]
        return int(c), int(h), int(w)

    def preprocess(self, image) -> np.ndarray:
        """An image -> float32 [1, C, H, W], exactly as the model was trained.

        ``image``: a PNG/JPEG path, a PIL image, or a uint8 array [H, W] / [H, W, C]; a batch of
        arrays [N, H, W] (grey) / [N, H, W, C] gives [N, C, H, W]. Images are converted to the
        model's colour mode (grey "L" or "RGB") and resized (bilinear) to the training image size if
        they differ, then scaled (``x * scale + offset``, i.e. ``x / 127.5 - 1``) and padded.
        """
        p = self.preprocessing
        height, width = p["image_size"]
        mode = p["color"]
        if isinstance(image, (str, os.PathLike)):
            from PIL import Image

            with Image.open(image) as im:
                batch = _pil_to_array(im, mode, width, height)[None]
        elif hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
            batch = _pil_to_array(image, mode, width, height)[None]
        else:
            batch = _array_batch(np.asarray(image), mode, width, height)
        x = batch.astype(np.float32) * np.float32(p["scale"]) + np.float32(p["offset"])
        # grey [N, H, W] -> [N, 1, H, W]; colour [N, H, W, C] -> [N, C, H, W]
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        pad = int(p.get("pad") or 0)
        if pad:
            x = np.pad(
                x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=np.float32(p["pad_value"])
            )
        return np.ascontiguousarray(x, dtype=np.float32)


def _pil_to_array(im, mode: str, width: int, height: int) -> np.ndarray:
    from PIL import Image

    im = im.convert(mode)
    if im.size != (width, height):
        im = im.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _array_batch(a: np.ndarray, mode: str, width: int, height: int) -> np.ndarray:
    """uint8-valued array(s) -> [N, H, W] (mode L) or [N, H, W, 3] (RGB), values 0..255."""
    from PIL import Image

    grey = mode == "L"
    if a.ndim == 2:
        items = [a]
    elif a.ndim == 3 and a.shape[-1] in (1, 3, 4) and (not grey or a.shape[:2] == (height, width)):
        items = [a]  # one colour image [H, W, C]
    elif a.ndim in (3, 4):
        items = list(a)  # a batch
    else:
        raise ZooError(f"expected an image [H, W] / [H, W, C] or a batch of them, got shape {a.shape}")
    out = []
    for item in items:
        item = np.asarray(item)
        if item.ndim == 3 and item.shape[-1] == 1:
            item = item[..., 0]
        if (grey and item.ndim == 3) or (not grey and (item.ndim == 2 or item.shape[-1] != 3)):
            item = np.asarray(Image.fromarray(np.clip(item, 0, 255).astype(np.uint8)).convert(mode))
        if item.shape[:2] != (height, width):
            pil = Image.fromarray(np.clip(item, 0, 255).astype(np.uint8))
            item = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        out.append(np.asarray(item))
    return np.stack(out)


def list_models() -> list[dict]:
    """One dict per zoo model: name, file, dataset, classes, accuracy, test_correct, test_total, path."""
    zoo = zoo_dir()
    rows = []
    for name, entry in manifest()["models"].items():
        acc = entry.get("accuracy", {})
        rows.append(
            {
                "name": name,
                "file": entry["file"],
                "path": str(zoo / entry["file"]),
                "dataset": entry.get("dataset", ""),
                "classes": list(entry.get("classes", [])),
                "accuracy": acc.get("test_accuracy"),
                "test_correct": acc.get("test_correct"),
                "test_total": acc.get("test_total"),
                "parameters": entry.get("parameters"),
                "bytes": entry.get("bytes"),
            }
        )
    return rows


def names() -> list[str]:
    return list(manifest()["models"])


def _models() -> dict:
    """The manifest's models, or none when the zoo has no manifest."""
    path = zoo_dir() / "manifest.json"
    return dict(manifest()["models"]) if path.is_file() else {}


def _entry(name: str) -> dict:
    models = manifest()["models"]
    if name not in models:
        raise ZooError(f"{name!r} is not a zoo model; the zoo has: {', '.join(models)}")
    return models[name]


def load(name: str) -> ZooModel:
    """The zoo model ``name`` (its ONNX file loaded)."""
    entry = _entry(name)
    path = zoo_dir() / entry["file"]
    if not path.is_file():
        raise ZooError(f"zoo model {name!r}: file {path} is missing")
    return ZooModel(
        name=name,
        path=path,
        model=load_model(path),
        classes=list(entry["classes"]),
        preprocessing=dict(entry["preprocessing"]),
        low=float(entry["low"]),
        high=float(entry["high"]),
        accuracy=float(entry["accuracy"]["test_accuracy"]),
        dataset=entry.get("dataset", ""),
        info=entry,
    )


def resolve_model(path_or_name: str | os.PathLike) -> Path:
    """The ONNX file of a model path or a zoo model name. An existing path, or one ending in .onnx,
    is returned as given (the loader reports a missing file)."""
    text = os.fspath(path_or_name)
    path = Path(text)
    if path.exists() or text.endswith(".onnx"):
        return path
    try:
        entry = _entry(text)
    except ZooError as error:
        raise ZooError(f"{text!r} is neither a file nor a zoo model ({error})") from None
    return zoo_dir() / entry["file"]


def zoo_name(path: str | os.PathLike) -> str | None:
    """The name of the zoo model whose file ``path`` is (the zoo's own file, or a copy of it: same
    size and sha256 as the manifest says), or None."""
    path = Path(path)
    if not path.is_file():
        return None
    models = _models()
    for name, entry in models.items():
        if (zoo_dir() / entry["file"]).resolve() == path.resolve():
            return name
    size = path.stat().st_size
    digest = None
    for name, entry in models.items():
        if entry.get("bytes") == size and entry.get("sha256"):
            digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
            if digest == entry["sha256"]:
                return name
    return None


def locate(spec: str | os.PathLike) -> tuple[Path, ZooModel | None]:
    """(the .onnx file, its zoo model or None) for a model path or a zoo name: what every command
    accepts as MODEL. A path to a zoo model's own file also gives its zoo entry (its preprocessing)."""
    path = resolve_model(spec)
    name = zoo_name(path)
    return path, (load(name) if name else None)


def sample_paths(name: str) -> list[Path]:
    """The labelled sample images of zoo model ``name``'s data set (test images, by stated rules).

    ``name`` may also be a data set name ("mnist", "cifar10"). Labels are in ``samples(name)``.
    """
    return [zoo_dir() / s["file"] for s in samples(name)]


def samples(name: str) -> list[dict]:
    """Manifest entries of the samples of model (or data set) ``name``: file, index, label, class, rule."""
    data = manifest()
    dataset = name if name in data.get("samples", {}) else _entry(name).get("dataset", "")
    return list(data.get("samples", {}).get(dataset, []))
