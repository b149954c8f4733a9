"""Write MAT 5 files holding MATLAB classdef objects, as MATLAB's ``save`` does for the LRP toolbox's
models (for tests: the toolbox's own files may not be redistributed).

Written from the layout described in onnxlrp.converters.matlab_objects (version-2 FileWrapper__), with
the raw MAT 5 element encoding: tag (type, byte count), data, zero padding to 8 bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX = 1, 2, 5, 6, 9, 14
MX_CELL, MX_STRUCT, MX_DOUBLE, MX_UINT8, MX_UINT32, MX_OPAQUE = 1, 2, 6, 9, 13, 17
MCOS_MAGIC = 0xDD000000


class Obj:
    """A classdef object to write: class name with namespace, and its properties in order."""

    def __init__(self, classname: str, **properties):
        self.classname = classname
        self.properties = properties


def _element(kind: int, payload: bytes) -> bytes:
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _header(mx_class: int, dims: tuple[int, ...], name: str = "") -> bytes:
    flags = _element(MI_UINT32, struct.pack("<II", mx_class, 0))
    return flags + _element(MI_INT32, struct.pack(f"<{len(dims)}i", *dims)) + _element(MI_INT8, name.encode())


def _dims(array: np.ndarray) -> tuple[int, ...]:
    return array.shape if array.ndim >= 2 else (1, array.size)


def _numeric(array: np.ndarray, name: str = "") -> bytes:
    array = np.asarray(array)
    mx, mi, dtype = {
        "f": (MX_DOUBLE, MI_DOUBLE, "<f8"),
        "u1": (MX_UINT8, MI_UINT8, "u1"),
        "u4": (MX_UINT32, MI_UINT32, "<u4"),
    }["f" if array.dtype.kind == "f" else array.dtype.str[1:]]
    data = np.asarray(array, dtype).tobytes(order="F")  # MATLAB stores column-major
    return _element(MI_MATRIX, _header(mx, _dims(array), name) + _element(mi, data))


def _cell(items: list[bytes], dims: tuple[int, int]) -> bytes:
    return _element(MI_MATRIX, _header(MX_CELL, dims) + b"".join(items))


def _opaque(name: str, classname: str, content: bytes) -> bytes:
    flags = _element(MI_UINT32, struct.pack("<II", MX_OPAQUE, 0))
    strings = b"".join(_element(MI_INT8, s.encode()) for s in (name, "MCOS", classname))
    return _element(MI_MATRIX, flags + strings + content)


class _Registry:
    def __init__(self):
        self.names: list[str] = []
        self.classes: list[tuple[int, int]] = []
        self.objects: list[tuple[int, list[tuple[int, int, int]]]] = []  # class id, property records
        self.saved: list[bytes] = []

    def name(self, text: str) -> int:
        if text not in self.names:
            self.names.append(text)
        return self.names.index(text) + 1

    def class_id(self, classname: str) -> int:
        namespace, _, name = classname.rpartition(".")
        key = (self.name(namespace) if namespace else 0, self.name(name))
        if key not in self.classes:
            self.classes.append(key)
        return self.classes.index(key) + 1

    def reference(self, obj: Obj) -> np.ndarray:
        """Register the object (and the objects in its properties); its uint32 reference."""
        class_id = self.class_id(obj.classname)
        self.objects.append((class_id, []))
        object_id = len(self.objects)
        records = self.objects[-1][1]
        for prop, value in obj.properties.items():
            records.append((self.name(prop), 1, len(self.saved)))
            self.saved.append(b"")  # reserved: nested objects register first
            slot = len(self.saved) - 1
            if isinstance(value, list) and value and isinstance(value[0], Obj):  # a cell row of objects
                self.saved[slot] = _cell([_numeric(self.reference(v)) for v in value], (1, len(value)))
            elif isinstance(value, Obj):
                self.saved[slot] = _numeric(self.reference(value))
            else:
                self.saved[slot] = _numeric(np.asarray(value, np.float64))
        return np.array([[MCOS_MAGIC], [2], [1], [1], [object_id], [class_id]], np.uint32)

    def metadata(self) -> bytes:
        names = b"".join(n.encode() + b"\0" for n in self.names)
        names += b"\0" * (-(40 + len(names)) % 8)
        classes = struct.pack("<4i", 0, 0, 0, 0) + b"".join(
            struct.pack("<4i", ns, n, 0, 0) for ns, n in self.classes
        )
        objects = struct.pack("<6i", 0, 0, 0, 0, 0, 0) + b"".join(
            struct.pack("<6i", class_id, 0, 0, 0, i + 1, i + 1)
            for i, (class_id, _) in enumerate(self.objects)
        )
        properties = [0, 0]
        for _, records in self.objects:
            properties += [len(records)] + [v for record in records for v in record]
            properties += [0] * (len(properties) % 2)
        props = struct.pack(f"<{len(properties)}i", *properties)
        regions = [classes, b"", objects, props, b""]
        offsets = [40 + len(names)]  # where each region starts, then where the last one ends
        for region in regions:
            offsets.append(offsets[-1] + len(region))
        head = struct.pack("<2i", 2, len(self.names)) + struct.pack("<8i", *offsets, 0, 0)
        return head + names + b"".join(regions)


def save_objects(path: Path, name: str, obj: Obj) -> None:
    """Write one classdef object (with the objects it holds) as variable ``name``."""
    registry = _Registry()
    reference = registry.reference(obj)
    cells = [
        _numeric(np.frombuffer(registry.metadata(), np.uint8).reshape(-1, 1)),
        _numeric(np.zeros((0, 0))),
        *registry.saved,
        _cell(
            [_numeric(np.zeros((0, 0))) for _ in range(len(registry.classes) + 1)],
            (len(registry.classes) + 1, 1),
        ),
    ]
    wrapper = _opaque("", "FileWrapper__", _cell(cells, (len(cells), 1)))
    field = _element(MI_INT32, struct.pack("<i", 32)) + _element(MI_INT8, b"MCOS".ljust(32, b"\0"))
    subsystem = _element(MI_MATRIX, _header(MX_STRUCT, (1, 1)) + field + wrapper)
    workspace = struct.pack("<H2s", 0x0100, b"IM") + b"\0" * 4 + subsystem
    variable = _opaque(name, obj.classname, _numeric(reference))
    text = b"MATLAB 5.0 MAT-file, written by the onnxlrp tests".ljust(116, b" ")
    offset = 128 + len(variable)
    header = text + struct.pack("<Q", offset) + struct.pack("<H2s", 0x0100, b"IM")
    workspace_element = _element(
        MI_MATRIX, _header(MX_UINT8, (1, len(workspace))) + _element(MI_UINT8, workspace)
    )
    Path(path).write_bytes(header + variable + workspace_element)
