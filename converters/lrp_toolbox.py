"""Import the LRP toolbox's model files into ONNX: its plain-text format, and the .mat files of its
MATLAB half (a ``modules.Sequential`` classdef object, read with scipy by ``matlab_objects``). Its
Python half's .nn files are pickles, which are refused without being read: unpickling runs code.

The LRP toolbox (Lapuschkin et al., the seed paper's numpy tool) stores a ``Sequential`` network as
blocks of whitespace-separated lines::

    Linear m n                  # then one line of m*n weights (row-major W, shape (m, n))
                                # and one line of n biases; y = x @ W + b
                                # (the toolbox's legacy format, m lines of n weights, is read too)
    Convolution h w d n s0 s1   # then h*w*d*n weights (W of shape (h, w, d, n): NHWC filters)
                                # and n biases; stride (s0, s1); no padding
    SumPool h w s0 s1           # window sum times 1/sqrt(h*w); no padding
    MaxPool h w s0 s1
    Rect | Tanh | SoftMax | Flatten   # alone on a line

Inputs are NHWC (the toolbox's layout). The ONNX model this module writes has

- input ``input``: ``[N, H, W, D]`` (NHWC, dynamic ``N``) when the network starts with a spatial layer or
  an input shape is given, else ``[N, m]`` for an MLP whose first layer is ``Linear m n``;
- a ``Transpose`` to NCHW, then ``Conv`` / ``MaxPool`` / ``Gemm`` / ``Relu`` / ``Tanh`` nodes;
- ``Flatten`` (and a ``Linear`` that reads a spatial tensor, which is flattened implicitly) first
  transposes back to NHWC, so the flattened order is the toolbox's;
- output ``logits``: the last layer before ``SoftMax`` ([N, n] when it is a 1x1 spatial map, as in the
  toolbox's all-convolutional LeNet-5; NHWC if it is still larger); when the file
  ends in ``SoftMax`` a second output ``probabilities`` = ``Softmax(logits)`` over the last axis.
  ``logits`` is the first output, so ``onnxlrp.compile`` explains it by default.

``SumPool`` becomes a depthwise ``Conv`` with a kernel of ones (the *unscaled* window sum, a linear layer
the compiler explains with the active rule) followed by ``Mul`` by the constant ``1/sqrt(h*w)`` (relevance
passes through a Mul by a constant). The toolbox's LRP treats the layer exactly so: its rules divide by
the unscaled window sum. Hence the imported model gets the toolbox's relevance under simple (lrp0),
epsilon, alpha-beta, flat and ww (the toolbox's w^2, without a bias term; onnxlrp's wsquare adds
bias^2 as zennit does). Known difference from the toolbox: under its ``flat`` and ``ww`` rules the
toolbox spreads a MaxPool output's relevance uniformly over the window (onnxlrp: winner-take-all).

This module uses numpy, onnx and (for .mat files) scipy, no torch: it backs ``onnxlrp convert lrp-toolbox``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxlrp.errors import ModelLoadError, OnnxLrpError
from onnxlrp.loading import ensure_writable, read_bytes, save_model

from . import IR_VERSION, OPSET

__all__ = [
    "IR_VERSION",
    "OPSET",
    "ToolboxFormatError",
    "ToolboxLayer",
    "convert_file",
    "infer_input_shape",
    "load_toolbox_model",
    "parse_toolbox_text",
    "toolbox_to_onnx",
]

# layer name -> number of integer parameters on its header line
_HEADER_ARGS = {
    "Linear": 2,
    "Convolution": 6,
    "SumPool": 4,
    "MaxPool": 4,
    "Rect": 0,
    "Tanh": 0,
    "SoftMax": 0,
    "Flatten": 0,
}


class ToolboxFormatError(ModelLoadError):
    """A toolbox text model is malformed (the message names the file and line) or cannot be imported."""


@dataclass
class ToolboxLayer:
    """One layer of a toolbox model: ``kind`` is the toolbox class name, ``params`` the header integers.

    ``W``/``B`` are float32 arrays for Linear (W (m, n), B (n,)) and Convolution (W (h, w, d, n), B (n,)).
    ``line`` is the 1-based line number of the header (the module number in a .mat file).
    """

    kind: str
    params: tuple[int, ...] = ()
    W: np.ndarray | None = None
    B: np.ndarray | None = None
    line: int = 0
    extra: dict = field(default_factory=dict)
    unit: str = "line"  # what ``line`` counts: "line" (text files) or "module" (.mat files)

    @property
    def where(self) -> str:
        """Where the layer is in its file, for error messages ("line 3", "module 2")."""
        return f"{self.unit} {self.line}"

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """W and B as float32 (Linear and Convolution layers)."""
        if self.W is None or self.B is None:
            raise ToolboxFormatError(f"{self.where}: the {self.kind} layer has no weights")
        return self.W.astype(np.float32), self.B.astype(np.float32)


# ----------------------------------------------------------------------------------------------------
# parsing


def _where(source: str, lineno: int) -> str:
    return f"{source}: line {lineno}" if source else f"line {lineno}"


def parse_toolbox_text(text: str, source: str = "") -> list[ToolboxLayer]:
    """Parse the toolbox's plain-text format into layers; raise ToolboxFormatError naming the line."""
    lines = text.splitlines()
    # (line number, tokens) of the non-blank lines
    rows = [(i + 1, ln.split()) for i, ln in enumerate(lines) if ln.strip()]
    layers: list[ToolboxLayer] = []
    k = 0

    def numbers(kind: str, header_line: int, what: str, count: int) -> np.ndarray:
        nonlocal k
        if k >= len(rows):
            raise ToolboxFormatError(
                f"{_where(source, header_line)}: {kind} expects a line of {count} {what} after its header,"
                " but the file ends"
            )
        lineno, tokens = rows[k]
        if tokens[0] in _HEADER_ARGS:
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: expected a line of {count} {what} for the {kind} layer of line "
                f"{header_line}, found the layer header {tokens[0]!r}"
            )
        try:
            values = np.array([float(t) for t in tokens], dtype=np.float64)
        except ValueError as error:
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: {what} of the {kind} layer of line {header_line}: {error}"
            ) from None
        if values.size != count:
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: the {kind} layer of line {header_line} expects {count} {what}, "
                f"found {values.size}"
            )
        if not np.all(np.isfinite(values)):
            raise ToolboxFormatError(f"{_where(source, lineno)}: {what} contain inf or nan")
        k += 1
        return values

    while k < len(rows):
        lineno, tokens = rows[k]
        kind = tokens[0]
        if kind not in _HEADER_ARGS:
            known = ", ".join(_HEADER_ARGS)
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: unknown layer type {kind!r} (known: {known})"
                if not _looks_numeric(kind)
                else f"{_where(source, lineno)}: unexpected line of numbers; expected a layer header "
                f"({known}) - does the previous layer's weight count match its header?"
            )
        nargs = _HEADER_ARGS[kind]
        if len(tokens) - 1 != nargs:
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: {kind} takes {nargs} integer parameters, found {len(tokens) - 1}"
            )
        try:
            params = tuple(int(t) for t in tokens[1:])
        except ValueError:
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: {kind} parameters must be integers, got {' '.join(tokens[1:])!r}"
            ) from None
        if any(p <= 0 for p in params):
            raise ToolboxFormatError(
                f"{_where(source, lineno)}: {kind} parameters must be positive, got {params}"
            )
        k += 1
        layer = ToolboxLayer(kind, params, line=lineno)
        if kind == "Linear":
            m, n = params
            if m > 1 and k < len(rows) and len(rows[k][1]) == n and n != m * n:
                # the toolbox's legacy text format: m lines of n weights (one row of W per line)
                rows_w = [numbers(kind, lineno, f"weights (row {r + 1} of {m})", n) for r in range(m)]
                layer.W = np.stack(rows_w).astype(np.float32)
                layer.extra["legacy_rows"] = True
            else:
                layer.W = numbers(kind, lineno, "weights", m * n).reshape(m, n).astype(np.float32)
            layer.B = numbers(kind, lineno, "biases", n).astype(np.float32)
        elif kind == "Convolution":
            h, w, d, n, _, _ = params
            layer.W = numbers(kind, lineno, "weights", h * w * d * n).reshape(h, w, d, n).astype(np.float32)
            layer.B = numbers(kind, lineno, "biases", n).astype(np.float32)
        layers.append(layer)
    if not layers:
        raise ToolboxFormatError(f"{source or 'model text'}: no layers found")
    return layers


def _looks_numeric(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


PICKLE_SUFFIXES = (".nn", ".pickle", ".pickled", ".pkl")


def load_toolbox_model(path: str | os.PathLike) -> list[ToolboxLayer]:
    """Read a toolbox model file: the text format (.txt) or the MATLAB toolbox's .mat files. The
    Python toolbox's .nn files are pickles and are refused: unpickling runs arbitrary code."""
    path = Path(path)
    try:
        data = read_bytes(path, "a toolbox model file")
    except OnnxLrpError as error:
        raise ToolboxFormatError(str(error)) from None
    if path.suffix.lower() in PICKLE_SUFFIXES or data[:1] == b"\x80":
        raise ToolboxFormatError(
            f"{path}: a Python pickle (the toolbox's .nn format); onnxlrp never unpickles files, since "
            "unpickling runs whatever code the file names: convert the model's .txt or .mat file instead"
        )
    if path.suffix.lower() == ".mat" or data[:10] == b"MATLAB 5.0":
        return load_toolbox_mat(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ToolboxFormatError(f"{path}: cannot read a text model: {error}") from None
    return parse_toolbox_text(text, source=str(path))


def load_toolbox_mat(path: str | os.PathLike) -> list[ToolboxLayer]:
    """The layers of a MATLAB toolbox model (a modules.Sequential object saved with ``save``)."""
    from .matlab_objects import MatFormatError, MatObject, load_objects

    try:
        variables = load_objects(path)
    except MatFormatError as error:
        raise ToolboxFormatError(f"{path}: {error}") from None
    network = next(
        (v for v in variables.values() if isinstance(v, MatObject) and v.classname == "modules.Sequential"),
        None,
    )
    if network is None:
        found = ", ".join(f"{k} ({getattr(v, 'classname', type(v).__name__)})" for k, v in variables.items())
        raise ToolboxFormatError(
            f"{path}: no modules.Sequential model in the file (found: {found or 'nothing'})"
        )
    modules = network.get("modules")
    modules = [] if modules is None else list(np.asarray(modules, dtype=object).reshape(-1, order="F"))
    if not modules:
        raise ToolboxFormatError(f"{path}: the model has no modules")
    return [_mat_layer(Path(path), number, module) for number, module in enumerate(modules, start=1)]


def _mat_layer(path: Path, number: int, module: object) -> ToolboxLayer:
    where = f"{path}: module {number}"
    kind = str(getattr(module, "classname", "")).rpartition(".")[2]
    if kind not in _HEADER_ARGS or not isinstance(module, dict):
        raise ToolboxFormatError(f"{where}: unknown layer type {kind or type(module).__name__!r}")

    def integers(name: str, count: int) -> tuple[int, ...]:
        values = np.asarray(module.get(name, []), dtype=np.float64).reshape(-1)
        if values.size != count or np.any(values != np.round(values)) or np.any(values <= 0):
            raise ToolboxFormatError(
                f"{where}: {kind}.{name} must be {count} positive integers, got {values}"
            )
        return tuple(int(v) for v in values)

    layer = ToolboxLayer(kind, line=number, unit="module")
    if kind in ("Linear", "Convolution"):
        weight = np.asarray(module.get("W", []), dtype=np.float64)
        bias = np.asarray(module.get("B", []), dtype=np.float64).reshape(-1)
        shape = weight.shape[:2] if kind == "Linear" else integers("filtersize", 4)
        if (kind == "Linear" and weight.ndim != 2) or weight.size != np.prod(shape) or bias.size != shape[-1]:
            raise ToolboxFormatError(
                f"{where}: {kind} weights {weight.shape} and biases {bias.shape} do not fit {tuple(shape)}"
            )
        if not (np.all(np.isfinite(weight)) and np.all(np.isfinite(bias))):
            raise ToolboxFormatError(f"{where}: {kind} weights contain inf or nan")
        layer.W = weight.reshape(shape).astype(np.float32)  # MATLAB drops trailing singleton dimensions
        layer.B = bias.astype(np.float32)
        layer.params = tuple(shape) if kind == "Linear" else (*shape, *integers("stride", 2))
    elif kind in ("SumPool", "MaxPool"):
        layer.params = (*integers("pool", 2), *integers("stride", 2))
    return layer


# ----------------------------------------------------------------------------------------------------
# shapes


def _propagate(layers: list[ToolboxLayer], shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Per-layer output shapes (without N): (H, W, D) spatial or (m,) flat. Raises ToolboxFormatError."""
    shapes = []
    for layer in layers:
        kind, p = layer.kind, layer.params
        if kind == "Linear":
            m, n = p
            size = int(np.prod(shape))
            if size != m:
                raise ToolboxFormatError(
                    f"{layer.where}: Linear {m} {n} reads {m} features, but its input has shape "
                    f"{_fmt(shape)} ({size} features)"
                )
            shape = (n,)
        elif kind in ("Convolution", "SumPool", "MaxPool"):
            if len(shape) != 3:
                raise ToolboxFormatError(
                    f"{layer.where}: {kind} needs a spatial (H, W, D) input, got flat shape {_fmt(shape)}"
                )
            H, W, D = shape
            if kind == "Convolution":
                h, w, d, n, s0, s1 = p
                if d != D:
                    raise ToolboxFormatError(
                        f"{layer.where}: Convolution filters have depth {d}, but the input has {D} channels"
                    )
            else:
                h, w, s0, s1 = p
                n = D
            if h > H or w > W:
                raise ToolboxFormatError(
                    f"{layer.where}: {kind} window {h}x{w} is larger than its input {H}x{W}"
                )
            shape = ((H - h) // s0 + 1, (W - w) // s1 + 1, n)
        elif kind == "Flatten":
            shape = (int(np.prod(shape)),)
        shapes.append(shape)
    return shapes


def _fmt(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _first_spatial_depth(layers: list[ToolboxLayer]) -> int | None:
    for layer in layers:
        if layer.kind == "Convolution":
            return layer.params[2]
        if layer.kind == "Linear":
            return None
    return None


def infer_input_shape(layers: list[ToolboxLayer]) -> tuple[int, ...]:
    """The input shape without N: (m,) for a Linear-first model, else a square (H, H, D) that fits.

    A square input is inferred only when the size is pinned - by a Linear layer, or, in an all-conv
    network, by a last spatial output (before a final Flatten) of 1x1 - and exactly one H fits with
    windows that tile the input exactly; otherwise pass the shape explicitly.
    """
    first = next((ly for ly in layers if ly.kind not in ("Rect", "Tanh", "Flatten")), None)
    if first is None:
        raise ToolboxFormatError("cannot infer the input shape of a model without Linear/Convolution layers")
    if first.kind == "Linear":
        return (first.params[0],)
    depth = _first_spatial_depth(layers)
    hint = "; pass the input shape (--input-shape H W D)"
    if depth is None:
        raise ToolboxFormatError(f"cannot infer the input depth (the model starts with {first.kind}){hint}")
    has_linear = any(ly.kind == "Linear" for ly in layers)
    fits = []
    for size in range(1, 1025):
        try:
            shapes = _propagate(layers, (size, size, depth))
        except ToolboxFormatError:
            continue
        last_spatial = [shape for shape in shapes if len(shape) == 3][-1]  # before a final Flatten
        if not has_linear and last_spatial[:2] != (1, 1):
            continue
        if _tiles_exactly(layers, (size, size, depth)):
            fits.append(size)
    if len(fits) != 1:
        found = "no square input fits" if not fits else f"several square inputs fit ({fits[:5]})"
        raise ToolboxFormatError(f"cannot infer the input shape: {found}{hint}")
    return (fits[0], fits[0], depth)


def _tiles_exactly(layers: list[ToolboxLayer], shape: tuple[int, ...]) -> bool:
    for layer in layers:
        if layer.kind in ("Convolution", "SumPool", "MaxPool") and len(shape) == 3:
            h, w = layer.params[0], layer.params[1]
            s0, s1 = layer.params[-2], layer.params[-1]
            if (shape[0] - h) % s0 or (shape[1] - w) % s1:
                return False
        shape = _propagate([layer], shape)[0]
    return True


# ----------------------------------------------------------------------------------------------------
# ONNX emission


def toolbox_to_onnx(
    layers: list[ToolboxLayer],
    input_shape: tuple[int, ...] | None = None,
    graph_name: str = "lrp_toolbox_model",
) -> onnx.ModelProto:
    """Build the ONNX model (see the module docstring) and check it with onnx.checker (full_check).

    ``input_shape`` excludes the batch: (H, W, D) NHWC or (m,) flat; inferred when None.
    """
    if input_shape is None:
        input_shape = infer_input_shape(layers)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (1, 3) or any(s <= 0 for s in input_shape):
        raise ToolboxFormatError(f"input shape must be (H, W, D) or (m,), got {input_shape}")
    softmax_at = [i for i, ly in enumerate(layers) if ly.kind == "SoftMax"]
    if softmax_at and softmax_at != [len(layers) - 1]:
        where = layers[softmax_at[0]].where
        raise ToolboxFormatError(f"{where}: SoftMax is supported only as the last layer")
    body = layers[:-1] if softmax_at else layers
    if not body:
        raise ToolboxFormatError("the model has no layers before SoftMax")
    shapes = _propagate(body, input_shape)

    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    counter = {"n": 0}

    def fresh(prefix: str) -> str:
        counter["n"] += 1
        return f"{prefix}_{counter['n']}"

    def init(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    # current tensor: name and logical toolbox shape (no N); a 3-D shape is held as NCHW in the graph
    cur = "input"
    shape = input_shape
    if len(shape) == 3:
        t = fresh("to_nchw")
        nodes.append(helper.make_node("Transpose", [cur], [t], name=t, perm=[0, 3, 1, 2]))
        cur = t

    def to_flat() -> None:
        nonlocal cur
        if len(shape) == 3:
            t = fresh("to_nhwc")
            nodes.append(helper.make_node("Transpose", [cur], [t], name=t, perm=[0, 2, 3, 1]))
            f = fresh("flatten")
            nodes.append(helper.make_node("Flatten", [t], [f], name=f, axis=1))
            cur = f

    for layer, out_shape in zip(body, shapes, strict=True):
        kind, p = layer.kind, layer.params
        i = len(nodes)
        if kind == "Linear":
            to_flat()
            name = fresh("linear")
            W, B = layer.weights()
            w = init(f"{name}.W", W)
            b = init(f"{name}.B", B)
            nodes.append(helper.make_node("Gemm", [cur, w, b], [name], name=name))
            cur = name
        elif kind == "Convolution":
            h, wd, _, _, s0, s1 = p
            name = fresh("conv")
            W, B = layer.weights()
            w = init(f"{name}.W", np.transpose(W, (3, 2, 0, 1)))
            b = init(f"{name}.B", B)
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, w, b],
                    [name],
                    name=name,
                    kernel_shape=[h, wd],
                    strides=[s0, s1],
                    pads=[0, 0, 0, 0],
                )
            )
            cur = name
        elif kind == "SumPool":
            h, wd, s0, s1 = p
            depth = shape[2]
            name = fresh("sumpool")
            w = init(f"{name}.ones", np.ones((depth, 1, h, wd), dtype=np.float32))
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, w],
                    [name],
                    name=name,
                    kernel_shape=[h, wd],
                    strides=[s0, s1],
                    pads=[0, 0, 0, 0],
                    group=depth,
                )
            )
            scaled = fresh("sumpool_scale")
            c = init(f"{scaled}.factor", np.array(1.0 / math.sqrt(h * wd), dtype=np.float32))
            nodes.append(helper.make_node("Mul", [name, c], [scaled], name=scaled))
            cur = scaled
        elif kind == "MaxPool":
            h, wd, s0, s1 = p
            name = fresh("maxpool")
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [cur],
                    [name],
                    name=name,
                    kernel_shape=[h, wd],
                    strides=[s0, s1],
                    pads=[0, 0, 0, 0],
                )
            )
            cur = name
        elif kind in ("Rect", "Tanh"):
            name = fresh("relu" if kind == "Rect" else "tanh")
            nodes.append(helper.make_node("Relu" if kind == "Rect" else "Tanh", [cur], [name], name=name))
            cur = name
        elif kind == "Flatten":
            to_flat()
        else:  # pragma: no cover - parse_toolbox_text rejects unknown kinds
            raise ToolboxFormatError(f"{layer.where}: unsupported layer {kind}")
        for node in nodes[i:]:
            node.doc_string = f"toolbox {layer.where}: {kind} {' '.join(map(str, p))}".strip()
        shape = out_shape

    # the output: a final 1x1 spatial map (an all-conv classifier) is flattened to [N, n]; a larger
    # spatial output is returned in NHWC
    if len(shape) == 3 and shape[:2] == (1, 1):
        f = fresh("flatten")
        nodes.append(helper.make_node("Flatten", [cur], [f], name=f, axis=1))
        cur, shape = f, (shape[2],)
    elif len(shape) == 3:
        t = fresh("to_nhwc")
        nodes.append(helper.make_node("Transpose", [cur], [t], name=t, perm=[0, 2, 3, 1]))
        cur = t
    if nodes and nodes[-1].output[0] == cur:
        nodes[-1].output[0] = "logits"  # the last node writes the output directly (no Identity)
    else:
        nodes.append(helper.make_node("Identity", [cur], ["logits"], name="logits"))
    out_dims: list[str | int] = ["N", *shape]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims)]
    if softmax_at:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, out_dims))

    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="onnxlrp.converters.lrp_toolbox",
        doc_string="Imported from an LRP toolbox text model; input NHWC, output 'logits'.",
    )
    model.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:  # pragma: no cover - would be a converter bug
        raise ToolboxFormatError(f"the converted model does not pass onnx.checker: {error}") from None
    return model


# ----------------------------------------------------------------------------------------------------
# files


def convert_file(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    input_shape: tuple[int, ...] | None = None,
    force: bool = False,
) -> onnx.ModelProto:
    """Convert a toolbox text model file to an ONNX file (atomically; refuses to overwrite unless force)."""
    ensure_writable(output, force, inputs=[model_path])  # before the work
    layers = load_toolbox_model(model_path)
    model = toolbox_to_onnx(layers, input_shape, graph_name=Path(model_path).stem or "lrp_toolbox_model")
    save_model(model, output, force=force, inputs=[model_path])
    return model
