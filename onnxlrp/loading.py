"""Reading and writing files: clear errors for bad models, atomic writes that never clobber.

Reading: only regular files are read (a FIFO, a device such as /dev/zero or a folder is refused
before any byte is read). Writing: every output goes through `writing` (a temporary file beside the
target, renamed over it when complete, with the mode the umask gives a new file); an output that
exists is replaced only with ``force``, an output that is one of the command's inputs never.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper

from onnxlrp.errors import ModelLoadError, OnnxLrpError, OutputExistsError

ModelLike = str | os.PathLike | bytes | onnx.ModelProto
PathLike = str | os.PathLike
PROTOBUF_LIMIT = 2**31 - 1  # bytes: larger models keep their weights in a separate file
# initializer types whose size is not one numpy item per value (strings, packed 2- and 4-bit numbers)
UNCOUNTED_TYPES = {
    getattr(onnx.TensorProto, name)
    for name in ("STRING", "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, name)
}


def regular_file(path: PathLike, what: str = "a file") -> Path:
    """``path`` if it is an existing regular file (symlinks followed); else an error naming it and
    ``what`` was expected there. Checked before reading, so that a FIFO never blocks and /dev/zero is
    never read."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise OnnxLrpError(f"{path}: no such file") from None
    except OSError as error:
        raise OnnxLrpError(f"{path}: cannot be read: {error.strerror}") from None
    kind = None
    if stat.S_ISDIR(mode):
        kind = "a directory"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif not stat.S_ISREG(mode):
        kind = "a special file"
    if kind is not None:
        raise OnnxLrpError(f"{path}: is {kind}, not {what}")
    return path


def read_bytes(path: PathLike, what: str = "a file") -> bytes:
    """The content of a regular file (see `regular_file`), with an error naming the file."""
    path = regular_file(path, what)
    try:
        return path.read_bytes()
    except OSError as error:
        raise OnnxLrpError(f"{path}: cannot be read: {error.strerror}") from None


def load_model(model: ModelLike, external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model from a path, bytes or a ModelProto, with an error that says what is wrong.
    ``external_data=False`` leaves weights stored beside the file unread (a check of the file only)."""
    if isinstance(model, onnx.ModelProto):
        check_model(model, "the model")
        return model
    if isinstance(model, bytes):
        proto = _parse(model, "<bytes>")
        check_model(proto, "<bytes>")
        return proto
    if not isinstance(model, str | os.PathLike):
        raise ModelLoadError(f"a model is a path, bytes or an onnx.ModelProto, not {type(model).__name__}")
    try:
        path = regular_file(model, "an ONNX file")
    except OnnxLrpError as error:
        raise ModelLoadError(str(error)) from None
    proto = _parse(read_bytes(path), str(path))
    if external_data and _has_external_data(proto):  # weights beside the file (models over 2 GB)
        try:
            _load_external_data(proto, str(path.parent))
        except Exception as error:  # OSError, or onnx's ValidationError for a missing/odd location
            raise ModelLoadError(f"{path}: its external weight data cannot be read: {error}") from None
    check_model(proto, str(path))
    return proto


def check_model(model: onnx.ModelProto, where: str) -> None:
    """Refuse a model that is structurally broken, naming what: no graph, nodes or outputs,
    initializers defined twice or whose data does not fill their dims. (onnx's checker is stricter
    than onnxruntime, e.g. about missing output shapes, and would refuse models that run.)"""
    graph = model.graph
    if not model.HasField("graph") or len(graph.node) == 0:
        raise ModelLoadError(f"{where}: not a valid ONNX model (no graph or an empty graph)")
    if len(graph.output) == 0:
        raise ModelLoadError(f"{where}: the model has no outputs")
    twice = [name for name, count in Counter(i.name for i in graph.initializer).items() if count > 1]
    if twice:
        raise ModelLoadError(f"{where}: initializer(s) defined more than once: {', '.join(twice)}")
    for init in graph.initializer:
        _check_initializer(init, where)


def _check_initializer(init: onnx.TensorProto, where: str) -> None:
    """The initializer's stored values fill its declared dims (a cheap count; no copy)."""
    if external_data_helper.uses_external_data(init) or init.data_type in UNCOUNTED_TYPES:
        return
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    except Exception:
        return  # a type numpy does not know (e.g. 4-bit): onnx's checker looks at it
    if any(d < 0 for d in init.dims):
        raise ModelLoadError(f"{where}: initializer '{init.name}' has negative dims {list(init.dims)}")
    count = math.prod(init.dims)
    if init.HasField("raw_data"):
        held, needed, unit = len(init.raw_data), count * itemsize, "bytes"
    else:  # typed fields hold one number per value (two for complex values)
        held, unit = len(getattr(init, helper.tensor_dtype_to_field(init.data_type))), "values"
        needed = count * (2 if np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).kind == "c" else 1)
    if held != needed:
        raise ModelLoadError(
            f"{where}: initializer '{init.name}' holds {held} {unit} but its dims {list(init.dims)} "
            f"need {needed}"
        )


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


# ----------------------------------------------------------------------------- writing
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def ensure_writable(path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Refuse early (before any work) an output that may not be written: one of ``inputs`` (never,
    even with force), a folder or other non-regular file, one in a missing folder, or an existing
    file without ``force``."""
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputExistsError(
                f"{path}: the output would replace the input {source}; choose another output"
            )
    if path.is_dir():
        raise OutputExistsError(f"{path}: is a directory; give a file name for the output")
    if path.exists() and not path.is_file():
        raise OutputExistsError(f"{path}: exists and is not a regular file")
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: exists; pass --force (force=True) to overwrite it")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise OutputExistsError(f"{path.parent}: the output folder {what}")
    return path


def output_folder(folder: PathLike) -> Path:
    """``folder``, created (with its parents) if missing; an error if it, or a parent, is a file."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputExistsError(f"{folder}: cannot be an output folder: it or a parent is a file") from None
    except OSError as error:
        raise OutputExistsError(f"{folder}: cannot create the output folder: {error.strerror}") from None
    return folder


def claim_outputs(
    paths: Iterable[PathLike], force: bool = False, inputs: Iterable[PathLike] = ()
) -> list[Path]:
    """`ensure_writable` for every file a command will write, all checked before it starts."""
    sources = list(inputs)
    claimed = [Path(p) for p in paths]
    seen: set[Path] = set()
    for path in claimed:
        ensure_writable(path, force, sources)
        key = path.resolve()
        if key in seen:
            raise OutputExistsError(f"{path}: two outputs would have this name")
        seen.add(key)
    return claimed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def writing(path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) for a writer to fill; when the block ends
    without error it replaces ``path`` in one rename, with the mode a new file gets under the umask;
    on an error it is removed and ``path`` is untouched. Refuses what `ensure_writable` refuses."""
    path = ensure_writable(path, force, inputs)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if not force and path.exists():  # appeared meanwhile
            raise OutputExistsError(f"{path}: exists; pass --force (force=True) to overwrite it")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: PathLike, data: bytes, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` atomically (see `writing`)."""
    with writing(path, force, inputs) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: PathLike, text: str, force: bool = False) -> Path:
    return write_bytes(path, text.encode(), force)


def write_json(path: PathLike, document: Any, force: bool = False) -> Path:
    """Strict JSON (a non-finite number becomes null, never a bare NaN), written atomically."""
    return write_text(path, json.dumps(_finite(document), indent=1, allow_nan=False), force)


def save_npy(path: PathLike, array: np.ndarray, force: bool = False) -> Path:
    """``np.save`` atomically (no pickles)."""
    with writing(path, force) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)
    return Path(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def save_model(
    model: onnx.ModelProto, path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()
) -> Path:
    """Write ``model`` to ``path`` atomically; refuse to overwrite an existing file unless ``force``
    and an input (``inputs``) ever.

    A model over protobuf's 2 GB limit is written with its weights in ``<path>.data`` beside it (ONNX
    external data; onnxruntime and `load_model` read it from there)."""
    inputs = list(inputs)
    path = ensure_writable(path, force, inputs)
    if model.ByteSize() < PROTOBUF_LIMIT:
        return write_bytes(path, model.SerializeToString(), force, inputs)
    data_path = ensure_writable(path.with_name(path.name + ".data"), force, inputs)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        external_data_helper.convert_model_to_external_data(
            model, all_tensors_to_one_file=True, location=data_path.name, size_threshold=1024
        )
        try:
            onnx.save_model(model, os.path.join(folder, path.name))
        finally:  # the caller's model gets its weights back, as they were
            _load_external_data(model, folder)
        mode = 0o666 & ~_umask()
        for name, target in ((data_path.name, data_path), (path.name, path)):
            os.chmod(os.path.join(folder, name), mode)
            os.replace(os.path.join(folder, name), target)
    return path
