"""Micro-benchmarks of relevance-graph rewrites, measured and rejected or adopted (benchmarks/ANALYSIS.md).

    python benchmarks/rewrite_micro.py

- `concat`: z and z+ of one layer as one Conv over the output channels [W; W+] followed by a Split,
  against two Convs over the same input (the forward's Conv + Relu and z+'s denominator).
- `where`: the stabiliser d + eps * sign0(d) as Where(d < 0, d - eps, d + eps) against the compiler's
  Cast chain (GreaterOrEqual, Cast, Mul, Sub, Add); both exact. Rejected.
- `clip`: the stabiliser as d + Clip(2^127 d + eps, -eps, eps), the compiler's form since it replaced
  the Cast chain (here the "current" side); exact for every normal float when eps <= 1. Adopted.
Each pair runs interleaved in one thread and is timed in CPU seconds (steady on a busy machine);
prints the median per-round ratio (> 1: the rewrite is slower) and whether the outputs are equal.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from onnxlrp.benchmarking import interleaved, paired_ratio, session_options  # noqa: E402


def _model(nodes, inits: dict[str, np.ndarray], shape: list[int], outputs: list[str]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "micro",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def concat_pair(n: int, c_in: int, c_out: int, size: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.normal(size=c_out).astype(np.float32)
    wp, bp = np.maximum(w, 0), np.maximum(b, 0)
    shape, pads = [n, c_in, size, size], {"pads": [1, 1, 1, 1]}
    two = _model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["z"], **pads),
            helper.make_node("Relu", ["z"], ["r"]),
            helper.make_node("Conv", ["x", "wp", "bp"], ["zp"], **pads),
        ],
        {"w": w, "b": b, "wp": wp, "bp": bp},
        shape,
        ["r", "zp"],
    )
    one = _model(
        [
            helper.make_node("Conv", ["x", "wc", "bc"], ["zc"], **pads),
            helper.make_node("Split", ["zc", "halves"], ["z", "zp"], axis=1),
            helper.make_node("Relu", ["z"], ["r"]),
        ],
        {"wc": np.concatenate([w, wp]), "bc": np.concatenate([b, bp]), "halves": np.array([c_out, c_out])},
        shape,
        ["r", "zp"],
    )
    return two, one


def where_pair(shape: list[int], eps: float = 1.0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    consts = {"zero": np.float32(0), "eps": np.float32(eps), "eps2": np.float32(2 * eps)}
    cast = _model(
        [
            helper.make_node("GreaterOrEqual", ["x", "zero"], ["ge"]),
            helper.make_node("Cast", ["ge"], ["m"], to=1),
            helper.make_node("Mul", ["m", "eps2"], ["m2"]),
            helper.make_node("Sub", ["m2", "eps"], ["shift"]),
            helper.make_node("Add", ["x", "shift"], ["y"]),
        ],
        consts,
        shape,
        ["y"],
    )
    where = _model(
        [
            helper.make_node("Less", ["x", "zero"], ["lt"]),
            helper.make_node("Sub", ["x", "eps"], ["down"]),
            helper.make_node("Add", ["x", "eps"], ["up"]),
            helper.make_node("Where", ["lt", "down", "up"], ["y"]),
        ],
        {k: v for k, v in consts.items() if k != "eps2"},
        shape,
        ["y"],
    )
    return cast, where


def clip_pair(shape: list[int], eps: float = 1.0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    cast, _ = where_pair(shape, eps)
    clip = _model(
        [
            helper.make_node("Mul", ["x", "steep"], ["line"]),
            helper.make_node("Add", ["line", "eps"], ["shifted"]),
            helper.make_node("Clip", ["shifted", "neg_eps", "eps"], ["shift"]),
            helper.make_node("Add", ["x", "shift"], ["y"]),
        ],
        {"steep": np.float32(2.0**127), "eps": np.float32(eps), "neg_eps": np.float32(-eps)},
        shape,
        ["y"],
    )
    return cast, clip


def compare(label: str, before: onnx.ModelProto, after: onnx.ModelProto, x: np.ndarray, rounds: int) -> None:
    sessions = [
        ort.InferenceSession(m.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
        for m in (before, after)
    ]
    outputs = [s.run(None, {"x": x}) for s in sessions]
    equal = all(np.array_equal(a, b) for a, b in zip(*outputs, strict=True))
    fns = {
        "before": lambda: sessions[0].run(None, {"x": x}),
        "after": lambda: sessions[1].run(None, {"x": x}),
    }
    times = interleaved(fns, rounds, clock=time.process_time)
    ratio = paired_ratio(times["after"], times["before"])
    print(f"{label}: rewrite / current {ratio:.3f}, outputs equal: {equal}", flush=True)


def main() -> int:
    rng = np.random.default_rng(1)
    for n, c_in, c_out, size in [(1, 64, 128, 32), (64, 64, 128, 32), (1, 128, 256, 16), (64, 384, 384, 4)]:
        x = rng.uniform(0, 1, (n, c_in, size, size)).astype(np.float32)
        compare(
            f"concat {n}x{c_in}->{c_out} at {size}x{size}",
            *concat_pair(n, c_in, c_out, size),
            x,
            15 if n == 1 else 5,
        )
    for shape in ([1, 256, 56, 56], [8, 256, 56, 56], [1, 2048, 7, 7]):
        x = rng.normal(size=shape).astype(np.float32)
        x.flat[::97] = 0  # sign0(0) = +1 must hold
        compare(f"where {'x'.join(map(str, shape))}", *where_pair(shape), x, 40)
        with np.errstate(over="ignore"):
            compare(f"clip {'x'.join(map(str, shape))}", *clip_pair(shape), x, 40)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
