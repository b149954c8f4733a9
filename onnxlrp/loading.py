"""Reading and writing models: clear errors for bad files, atomic writes that never clobber."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from onnxlrp.errors import ModelLoadError, OutputExistsError

ModelLike = str | os.PathLike | bytes | onnx.ModelProto
PROTOBUF_LIMIT = 2**31 - 1  # bytes: larger models keep their weights in a separate file


def load_model(model: ModelLike, external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model from a path, bytes or a ModelProto, with an error that says what is wrong.
    ``external_data=False`` leaves weights stored beside the file unread (a check of the file only)."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        return _parse(model, "<bytes>")
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    proto = _parse(path.read_bytes(), str(path))
    if external_data and _has_external_data(
        proto
    ):  # weights kept beside the file (models over 2 GB, some exporters)
        try:
            _load_external_data(proto, str(path.parent))
        except Exception as error:  # OSError, or onnx's ValidationError for a missing/odd location
            raise ModelLoadError(f"{path}: its external weight data cannot be read: {error}") from None
    return proto


def _load_external_data(model: onnx.ModelProto, folder: str) -> None:
    """Read external weights into the model, leaving tensors as if they had always been inline."""
    external_data_helper.load_external_data_for_model(model, folder)
    for tensor in model.graph.initializer:
        if tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.DEFAULT:
            tensor.ClearField("data_location")


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(t) for t in model.graph.initializer)


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
    """Write ``model`` to ``path`` atomically; refuse to overwrite an existing file unless ``force``.

    A model over protobuf's 2 GB limit is written with its weights in ``<path>.data`` beside it (ONNX
    external data; onnxruntime and `load_model` read it from there)."""
    path = ensure_writable(path, force)
    if model.ByteSize() < PROTOBUF_LIMIT:
        _write_atomically(path, model.SerializeToString())
        return path
    data_path = path.with_name(path.name + ".data")
    if data_path.exists() and not force:
        raise OutputExistsError(f"{data_path}: exists; pass --force (force=True) to overwrite it")
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        external_data_helper.convert_model_to_external_data(
            model, all_tensors_to_one_file=True, location=data_path.name, size_threshold=1024
        )
        try:
            onnx.save_model(model, os.path.join(folder, path.name))
        finally:  # the caller's model gets its weights back, as they were
            _load_external_data(model, folder)
        os.replace(os.path.join(folder, data_path.name), data_path)
        os.replace(os.path.join(folder, path.name), path)
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
