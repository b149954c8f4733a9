"""An adversarial corpus: malformed or unusual models, files and parameters, built on the fly.

Every builder returns bytes (the content of a file) or an onnx.ModelProto; `write_corpus(folder)`
writes all of them into one folder under fixed names, which tests/test_corpus.py refers to.
Nothing here imports onnxlrp.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 10
CLASSES = 3
SHAPE = (1, 8, 8)  # [C, H, W] of the small net's input


def _model(nodes, inputs, outputs, inits=(), opset: int = 17, ir: int = IR_VERSION) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _value(name: str, shape, elem_type: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def small_net_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.standard_normal((2, 1, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal(2).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((18, CLASSES)).astype(np.float32),
        "b2": rng.standard_normal(CLASSES).astype(np.float32) * 0.1,
    }


def small_net(
    dtype=np.float32, weights: dict[str, np.ndarray] | None = None, opset: int = 17
) -> onnx.ModelProto:
    """x [N, 1, 8, 8] -> Conv 3x3 (2 ch) -> Relu -> AveragePool 2 -> Flatten -> Gemm -> y [N, 3]."""
    weights = weights or small_net_weights()
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inits = [numpy_helper.from_array(v.astype(dtype), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], name="fc"),
    ]
    return _model(
        nodes, [_value("x", ["N", *SHAPE], elem)], [_value("y", ["N", CLASSES], elem)], inits, opset
    )


def pruned_net() -> onnx.ModelProto:
    """The small net with its first layer pruned to zero weights and bias."""
    weights = small_net_weights()
    weights["w1"] = np.zeros_like(weights["w1"])
    weights["b1"] = np.zeros_like(weights["b1"])
    return small_net(weights=weights)


def ir3_net() -> onnx.ModelProto:
    """Opset 9, IR version 3, every initializer also listed as a graph input (old exporters)."""
    model = small_net(opset=9)
    model.ir_version = 3
    for init in model.graph.initializer:
        model.graph.input.append(_value(init.name, list(init.dims)))
    return model


def two_input_net() -> onnx.ModelProto:
    """Two float inputs: y = Gemm(a, wa) + Gemm(b, wb)."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, CLASSES)).astype(np.float32), "wa"),
        numpy_helper.from_array(rng.standard_normal((5, CLASSES)).astype(np.float32), "wb"),
    ]
    nodes = [
        helper.make_node("Gemm", ["a", "wa"], ["ya"], name="fca"),
        helper.make_node("Gemm", ["b", "wb"], ["yb"], name="fcb"),
        helper.make_node("Add", ["ya", "yb"], ["y"], name="add"),
    ]
    return _model(nodes, [_value("a", ["N", 4]), _value("b", ["N", 5])], [_value("y", ["N", CLASSES])], inits)


def no_outputs() -> onnx.ModelProto:
    model = small_net()
    del model.graph.output[:]
    return model


def mismatched_initializer() -> onnx.ModelProto:
    """w2 declares dims [18, 3] but holds 8 floats."""
    model = small_net()
    w2 = next(init for init in model.graph.initializer if init.name == "w2")
    w2.raw_data = np.ones(8, np.float32).tobytes()
    return model


def duplicate_initializer() -> onnx.ModelProto:
    model = small_net()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((18, CLASSES), np.float32), "w2"))
    return model


def if_outer_scope() -> onnx.ModelProto:
    """An If whose branches read the activation 'r' from the outer graph (implicit inputs)."""
    model = small_net()
    graph = model.graph
    then_graph = helper.make_graph(
        [helper.make_node("Identity", ["r"], ["t_out"], name="then_id")], "then", [], [_value("t_out", None)]
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["r"], ["e_out"], name="else_neg")], "else", [], [_value("e_out", None)]
    )
    graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    for node in graph.node:
        if node.op_type == "AveragePool":
            node.input[0] = "branch"
    index = next(i for i, n in enumerate(graph.node) if n.op_type == "AveragePool")
    graph.node.insert(
        index,
        helper.make_node(
            "If", ["cond"], ["branch"], name="if", then_branch=then_graph, else_branch=else_graph
        ),
    )
    return model


def huge_expand() -> onnx.ModelProto:
    """A few hundred bytes whose constant subgraph Expand(1, [20000, 20000]) would take 1.6 GB."""
    inits = [
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([20000, 20000], np.int64), "big"),
        numpy_helper.from_array(np.ones((4, CLASSES), np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Expand", ["one", "big"], ["huge"], name="expand"),
        helper.make_node("ReduceSum", ["huge"], ["total"], name="sum", keepdims=0),
        helper.make_node("Gemm", ["x", "w"], ["g"], name="fc"),
        helper.make_node("Mul", ["g", "total"], ["y"], name="scale"),
    ]
    return _model(nodes, [_value("x", ["N", 4])], [_value("y", ["N", CLASSES])], inits)


def huge_input() -> onnx.ModelProto:
    """An input declared [N, 3, 100000, 100000]: 112 GiB at batch size 1."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
    ]
    return _model(nodes, [_value("x", ["N", 3, 100000, 100000])], [_value("y", ["N", 3])])


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def grey_gradient() -> np.ndarray:
    """An 8x8 uint8 image whose values are all distinct."""
    return (np.arange(64, dtype=np.uint16).reshape(8, 8) * 4).astype(np.uint8)


def png16_of(image8: np.ndarray) -> bytes:
    """The same picture as a 16-bit greyscale PNG (v * 257, so v16 / 65535 == v8 / 255 exactly)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image8.astype(np.uint16) * 257).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height grey pixels, with no pixel data (a decompression
    bomb's first bytes: nothing is allocated unless a reader believes the header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def toolbox_mlp() -> str:
    """A valid LRP toolbox text model: Linear 4 -> 3."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, CLASSES))
    b = rng.standard_normal(CLASSES)
    return (
        "Linear 4 3\n"
        + " ".join(f"{v:.6f}" for v in w.ravel())
        + "\n"
        + " ".join(f"{v:.6f}" for v in b)
        + "\n"
    )


def files() -> dict[str, bytes]:
    """Every corpus file by name."""
    good = small_net()
    good_bytes = good.SerializeToString()
    x = np.random.default_rng(3).standard_normal((2, *SHAPE)).astype(np.float32)
    png = _png(grey_gradient())
    out = {
        "good.onnx": good_bytes,
        "empty.onnx": b"",
        "truncated.onnx": good_bytes[: len(good_bytes) // 2],
        "text.onnx": b"this is not a model\n",
        "no_outputs.onnx": no_outputs().SerializeToString(),
        "mismatched.onnx": mismatched_initializer().SerializeToString(),
        "duplicate.onnx": duplicate_initializer().SerializeToString(),
        "if_outer.onnx": if_outer_scope().SerializeToString(),
        "huge_expand.onnx": huge_expand().SerializeToString(),
        "huge_input.onnx": huge_input().SerializeToString(),
        "ir3.onnx": ir3_net().SerializeToString(),
        "fp16.onnx": small_net(np.float16).SerializeToString(),
        "fp64.onnx": small_net(np.float64).SerializeToString(),
        "two_inputs.onnx": two_input_net().SerializeToString(),
        "pruned.onnx": pruned_net().SerializeToString(),
        "digit.png": png,
        "grey16.png": png16_of(grey_gradient()),
        "corrupt.png": png[:16] + bytes(range(256)) * 4,
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "text.png": b"not an image\n",
        "bomb.png": png_header_only(10000, 10000),  # Pillow only warns at this size
        "bigger_bomb.png": png_header_only(30000, 30000),
        "x.npy": _npy(x),
        "x4.npy": _npy(x.reshape(2, -1)[:, :4].copy()),
        "ab.npz": _npz(a=x.reshape(2, -1)[:, :4].copy(), b=x.reshape(2, -1)[:, 4:9].copy()),
        "ab_uneven.npz": _npz(a=x.reshape(2, -1)[:, :4].copy(), b=x.reshape(1, -1)[:, :5].copy()),
        "a_only.npz": _npz(a=x.reshape(2, -1)[:, :4].copy()),
        "x_nan.npy": _npy(np.full((1, *SHAPE), np.nan, np.float32)),
        "x_huge.npy": _npy(np.full((1, *SHAPE), 1e300)),  # finite float64, infinite as float32
        "x_wrong_shape.npy": _npy(np.zeros((2, 3, 5, 5), np.float32)),
        "x_2d.npy": _npy(np.zeros((2, 2), np.float32)),
        "x_batch0.npy": _npy(np.zeros((0, *SHAPE), np.float32)),
        "x_object.npy": _npy(np.array([{"a": 1}, None], dtype=object)),
        "x_text.npy": b"not numpy\n",
        "mlp.txt": toolbox_mlp().encode(),
        "garbage.txt": b"Linear 4 3\n1 2 3\n",
        "precious.txt": b"do not touch\n",
    }
    return out


def write_corpus(folder: str | os.PathLike) -> Path:
    """Write every corpus file into ``folder`` (plus a folder named like a model, and a FIFO)."""
    folder = Path(folder)
    for name, data in files().items():
        (folder / name).write_bytes(data)
    (folder / "folder.onnx").mkdir()
    (folder / "datasets").mkdir()
    (folder / "datasets" / "mnist.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    (folder / "results").mkdir()
    os.mkfifo(folder / "fifo.onnx")
    os.mkfifo(folder / "fifo.png")
    os.mkfifo(folder / "fifo.npy")
    os.mkfifo(folder / "fifo.txt")
    return folder
