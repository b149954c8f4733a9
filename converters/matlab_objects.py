"""Read MATLAB classdef objects (MCOS) from a MAT 5 file with scipy.

``scipy.io.loadmat`` returns a classdef object as an opaque reference (``MatlabOpaque``: a uint32
array of object ids) and the objects' contents as the raw ``__function_workspace__`` bytes. The
workspace is itself a MAT 5 stream holding one struct whose ``MCOS`` field is a ``FileWrapper__``
cell array: cell 0 is metadata, the next cells the saved property values, the last cell the class
defaults. The metadata (little-endian int32) is: version, number of names, eight region offsets,
the null-terminated class and property names, then regions of class records (namespace index, name
index, 0, 0), of object records (class id, 0, 0, saveobj id, object id, dependency id) and of property
records (per object: count, then (name index, kind, value) triples, padded to an even count; kind 1:
value indexes the saved cells, kind 2: value is the integer itself, kind 0: value names an enumeration).

This is the part of the format the LRP toolbox's model files use (objects whose properties are
numbers, cells of objects and other objects); anything else is reported, never guessed.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

__all__ = ["MatFormatError", "MatObject", "load_objects"]

MCOS_MAGIC = 0xDD000000
_PROPERTY_CELL, _PROPERTY_INTEGER = 1, 2


class MatFormatError(ValueError):
    """The MAT file is not one this reader understands (the message says what)."""


class MatObject(dict):
    """A classdef object: its properties by name, and ``classname`` (with its namespace)."""

    def __init__(self, classname: str, properties: dict[str, Any]) -> None:
        super().__init__(properties)
        self.classname = classname


def _workspace_wrapper(workspace: np.ndarray) -> np.ndarray:
    """The FileWrapper__ cell array inside the raw ``__function_workspace__`` bytes."""
    from scipy.io.matlab._mio5 import MatFile5Reader

    data = workspace.tobytes()
    # the workspace lacks the 116-byte text and 8-byte subsystem offset of a file header, and has 4
    # padding bytes after its version and endianness marker
    reader = MatFile5Reader(io.BytesIO(b" " * 116 + b"\0" * 8 + data[:4] + data[8:]))
    reader.initialize_read()
    reader.mat_stream.seek(128)
    header, _ = reader.read_var_header()
    subsystem = reader.read_var_array(header, process=False)
    try:
        return subsystem[0, 0]["MCOS"][0]["arr"]
    except (IndexError, KeyError, ValueError, TypeError):
        raise MatFormatError("the MAT file's object workspace has no MCOS FileWrapper__") from None


class _Objects:
    """The decoded metadata of one file's objects."""

    def __init__(self, workspace: np.ndarray) -> None:
        cells = _workspace_wrapper(workspace)[:, 0]
        meta = np.asarray(cells[0]).reshape(-1).tobytes()
        ints = np.frombuffer(meta[: len(meta) // 4 * 4], "<i4")
        version, count = int(ints[0]), int(ints[1])
        if not 2 <= version <= 4:
            raise MatFormatError(f"MCOS FileWrapper__ version {version} is not supported (2 to 4 are)")
        offsets = [int(o) // 4 for o in ints[2:10]]
        self.names = [s.decode("ascii") for s in meta[40 : offsets[0] * 4].split(b"\0") if s][:count]
        self.classes = ints[offsets[0] : offsets[1]].reshape(-1, 4)
        self.saveobj_properties = ints[offsets[1] : offsets[2]]
        self.objects = ints[offsets[2] : offsets[3]].reshape(-1, 6)
        self.properties = ints[offsets[3] : offsets[4]]
        trailing = {2: 1, 3: 2, 4: 3}[version]  # class defaults (and, later versions, aliases)
        self.saved = cells[2:-trailing]
        self.defaults = cells[-1]

    def _property_records(self, region: np.ndarray, index: int) -> np.ndarray:
        offset = 0
        for _ in range(index):
            offset += 1 + 3 * int(region[offset])
            offset += offset % 2
        return region[offset + 1 : offset + 1 + 3 * int(region[offset])].reshape(-1, 3)

    def classname(self, class_id: int) -> str:
        namespace, name = (int(i) for i in self.classes[class_id][:2])
        return (self.names[namespace - 1] + "." if namespace else "") + self.names[name - 1]

    def object(self, object_id: int) -> MatObject:
        class_id, _, _, saveobj_id, plain_id, _ = (int(i) for i in self.objects[object_id])
        properties: dict[str, Any] = {}
        defaults = self.defaults.reshape(-1)[class_id] if self.defaults.size > class_id else None
        if isinstance(defaults, np.ndarray) and defaults.dtype.names:
            properties = {n: self.value(defaults[n].reshape(-1)[0]) for n in defaults.dtype.names}
        region, index = (self.saveobj_properties, saveobj_id) if saveobj_id else (self.properties, plain_id)
        for name, kind, value in self._property_records(region, index):
            prop = self.names[int(name) - 1]
            if kind == _PROPERTY_CELL:
                properties[prop] = self.value(self.saved[int(value)])
            elif kind == _PROPERTY_INTEGER:
                properties[prop] = int(value)
            else:
                raise MatFormatError(f"property {prop!r} of a {self.classname(class_id)} has kind {kind}")
        return MatObject(self.classname(class_id), properties)

    def value(self, value: Any) -> Any:
        """A property value with object references resolved (also inside cell arrays)."""
        if not isinstance(value, np.ndarray):
            return value
        if (
            value.dtype == np.uint32
            and value.ndim == 2
            and value.size >= 3
            and value.reshape(-1)[0] == MCOS_MAGIC
        ):
            return self.reference(value.reshape(-1))
        if value.dtype == object and not value.dtype.names:
            resolved = np.empty(value.shape, dtype=object)
            for index in np.ndindex(value.shape):
                resolved[index] = self.value(value[index])
            return resolved
        return value

    def reference(self, reference: np.ndarray) -> MatObject | list[MatObject]:
        """The objects an opaque reference [magic, ndims, dims..., ids..., class id] points to."""
        ndims = int(reference[1])
        count = int(np.prod(reference[2 : 2 + ndims]))
        objects = [self.object(int(i)) for i in reference[2 + ndims : 2 + ndims + count]]
        return objects[0] if count == 1 else objects


def load_objects(path: str | os.PathLike) -> dict[str, Any]:
    """The variables of a MAT 5 file, classdef objects decoded into ``MatObject``s."""
    try:
        import scipy.io
    except ImportError:
        raise MatFormatError("reading .mat files needs scipy (pip install scipy)") from None
    try:
        raw = scipy.io.loadmat(os.fspath(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as error:
        raise MatFormatError(f"scipy cannot read it as a MAT 5 file: {error}") from None
    variables = {k: v for k, v in raw.items() if not k.startswith("__")}
    opaque = {k: v for k, v in variables.items() if isinstance(v, scipy.io.matlab.MatlabOpaque)}
    if not opaque:
        return variables
    if "__function_workspace__" not in raw:
        raise MatFormatError("the file has MATLAB objects but no object workspace")
    objects = _Objects(raw["__function_workspace__"])
    for key, value in opaque.items():
        record = value.reshape(-1)[0]
        if record["s1"] != b"MCOS":
            raise MatFormatError(f"variable {key!r} is a {record['s1']!r} object, not a MATLAB classdef one")
        name = record["s0"].decode() if isinstance(record["s0"], bytes) and record["s0"] else key
        variables.pop(key)
        variables[name] = objects.reference(np.asarray(record["arr"]).reshape(-1))
    return variables
