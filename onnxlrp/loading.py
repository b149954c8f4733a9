"""Reading and writing models: clear errors for bad files, atomic writes that never clobber."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from onnxlrp.errors import ModelLoadError, OutputExistsError

ModelLike = str | os.PathLike | bytes | onnx.ModelProto


def load_model(model: ModelLike) -> onnx.ModelProto:
    """Load an ONNX model from a path, bytes or a ModelProto, with an error that says what is wrong."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return _parse(model, "<bytes>")
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    return _parse(path.read_bytes(), str(path))


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{where}: the file is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as error:
        raise ModelLoadError(
            f"{where}: not a valid ONNX file (truncated or another format): {error}"
        ) from None
    if not proto.HasField("graph") or len(proto.graph.node) == 0:
        raise ModelLoadError(f"{where}: not a valid ONNX model (no graph or an empty graph)")
    return proto


def ensure_writable(path: str | os.PathLike, force: bool = False) -> Path:
    """Refuse early when `path` exists (without force) or its folder is missing."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists; pass --force (force=True) to overwrite it")
    if not path.parent.exists():
        raise OutputExistsError(f"{path.parent}: the output folder does not exist")
    return path


def save_model(model: onnx.ModelProto, path: str | os.PathLike, force: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically; refuse to overwrite an existing file unless ``force``."""
    path = ensure_writable(path, force)
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
