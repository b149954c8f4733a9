"""The MNIST and CIFAR-10 test splits as shipped in the datasets folder, and model inputs from them.

The folder is ``$ONNXLRP_DATASETS``, else ``../shared/datasets`` next to the project root. It holds
``mnist.npz`` (``x_test`` uint8 [N, 28, 28], ``y_test``) and ``cifar10_jpeg.npz`` (the test images as
concatenated JPEG bytes ``test_jpeg`` cut at ``test_offsets``, and ``test_labels``).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp.errors import OnnxLrpError
from onnxlrp.loading import regular_file

__all__ = [
    "CifarJpeg",
    "DatasetError",
    "default_datasets_dir",
    "load_dataset",
    "raw_test_split",
    "select_indices",
]

FILES = {"mnist": "mnist.npz", "cifar10": "cifar10_jpeg.npz"}


class DatasetError(OnnxLrpError):
    """A data set is missing, unreadable or does not fit the model."""


def default_datasets_dir() -> Path:
    """``$ONNXLRP_DATASETS``, else ``../shared/datasets`` next to the project root, else beside cwd."""
    env = os.environ.get("ONNXLRP_DATASETS")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parent.parent
    for candidate in (root.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets"):
        if candidate.is_dir():
            return candidate
    return root.parent / "shared" / "datasets"


def decode_jpeg(data: bytes) -> np.ndarray:
    """One JPEG -> uint8 RGB [H, W, 3]."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class CifarJpeg:
    """The CIFAR-10 test split of ``cifar10_jpeg.npz``: labels read at once, images decoded on demand."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.jpeg = data["test_jpeg"]
            self.offsets = data["test_offsets"]
            self.labels = data["test_labels"].astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Test image ``i``, uint8 RGB [32, 32, 3]."""
        return decode_jpeg(self.jpeg[self.offsets[i] : self.offsets[i + 1]].tobytes())

    def images(self) -> np.ndarray:
        """Every test image, [N, 32, 32, 3]."""
        return np.stack([self.image(i) for i in range(len(self))])


def dataset_file(name: str, datasets_dir: Path | None = None) -> Path:
    """The file of data set ``name`` ("mnist" or "cifar10"), whether or not it exists."""
    return (datasets_dir or default_datasets_dir()) / FILES[name]


def raw_test_split(name: str, datasets_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 test images ([N, 28, 28] for MNIST, [N, 32, 32, 3] RGB for CIFAR-10) and labels."""
    path = dataset_file(name, datasets_dir)
    if not path.is_file():
        raise DatasetError(
            f"data set {name!r} needs {path}, which does not exist; set ONNXLRP_DATASETS to the folder "
            "holding mnist.npz / cifar10_jpeg.npz, or pass a .npy of preprocessed inputs [N, C, H, W]"
        )
    regular_file(path, "a data set file")
    try:
        if name == "cifar10":
            cifar = CifarJpeg(path)
            return cifar.images(), cifar.labels
        with np.load(path) as data:
            return data["x_test"], data["y_test"].astype(np.int64)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(f"{path}: not a readable {name} data set file ({error})") from None


def select_indices(total: int, n: int | None) -> np.ndarray:
    """The ``n`` test images evaluated: evenly spaced over the split (CIFAR-10's copy is grouped by
    class, so the first n would all be airplanes); all of them when n is None or >= total."""
    if n is None or n >= total:
        return np.arange(total)
    return np.floor(np.arange(n) * (total / n)).astype(np.int64)


def _preprocess(zoo_model: Any, raw: np.ndarray) -> np.ndarray:
    pre = getattr(zoo_model, "preprocess", None)
    if pre is None:
        raise DatasetError(f"zoo model {getattr(zoo_model, 'name', zoo_model)!r} has no preprocess")
    out = np.asarray(pre(raw), dtype=np.float32)
    if out.ndim == 3:
        out = out[:, None]
    if out.ndim == 5 and out.shape[1] == 1:
        out = out[:, 0]
    return out


def load_dataset(
    data: str | os.PathLike,
    zoo_model: Any = None,
    n: int | None = None,
    datasets_dir: str | os.PathLike | None = None,
    input_shape: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Inputs [n, C, H, W] float32, labels (None for a .npy) and the indices taken.

    ``data``: "mnist" / "cifar10" (the test split, preprocessed with ``zoo_model.preprocess``), or a
    path to a .npy holding already preprocessed inputs [N, C, H, W] (checked against ``input_shape``,
    the model input's, when given).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1):
        raise DatasetError(f"--n must be a whole number >= 1 (the number of inputs), got {n!r}")
    text = os.fspath(data)
    if text.lower() in ("mnist", "cifar10", "cifar-10"):
        name = "cifar10" if text.lower().startswith("cifar") else "mnist"
        folder = Path(datasets_dir) if datasets_dir else default_datasets_dir()
        if not folder.is_dir():
            raise DatasetError(
                f"data set {name!r}: the datasets folder {folder} does not exist; set ONNXLRP_DATASETS "
                "to the folder holding mnist.npz / cifar10_jpeg.npz, or pass a .npy of preprocessed inputs"
            )
        if zoo_model is None:
            raise DatasetError(f"data set {name!r} needs a zoo model (for its preprocessing)")
        raw, labels = raw_test_split(name, folder)
        idx = select_indices(len(raw), n)
        return _preprocess(zoo_model, raw[idx]), labels[idx], idx
    path = Path(text)
    if not path.exists():
        raise DatasetError(f"data {text!r} is neither a data set name (mnist, cifar10) nor a .npy file")
    from onnxlrp.inputs import read_npy_batch  # inputs reads data sets through this module

    try:
        x = read_npy_batch(path, input_shape)
    except OnnxLrpError as error:
        raise DatasetError(str(error)) from None
    idx = np.arange(len(x) if n is None else min(n, len(x)))  # a .npy: its first n inputs
    return x[idx], None, idx
