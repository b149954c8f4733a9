"""Micro-benchmark: the transpose of each stride-1 Conv of the benchmark nets, as onnxruntime
ConvTranspose(s, W) versus Conv(s, flipped W) with pads k-1-p (the compiler's stride-1 rewrite).

    python benchmarks/transpose_micro.py [--batches 1 64] [--cases lenet cifar-paper resnet9]

For each layer and batch it builds both one-node graphs, checks they agree, and times them
interleaved (2 threads). Prints one line per layer: shapes, the Conv's extra multiply-adds over the
ConvTranspose (the zero padding of k-1-p makes the Conv compute output positions whose window
is partly outside the map), and the time ratio Conv / ConvTranspose (< 1: Conv is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from benchmarks import models  # noqa: E402


def _session(node, weight, name, in_shape, threads):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, name)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def layers(case: str):
    """(name, weight [out, in, kh, kw], pads, group, output spatial) of each stride-1 Conv."""
    _, path, _ = models.load_case(case)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        if any(s != 1 for s in a.get("strides", [1, 1])) or any(d != 1 for d in a.get("dilations", [1, 1])):
            continue
        w = inits[node.input[1]]
        yield node.name, w, list(a.get("pads", [0, 0, 0, 0])), a.get("group", 1), shapes[node.output[0]][2:]


def measure(w, pads, group, out_hw, batch, threads, rounds=15):
    c_out, c_in_g, kh, kw = w.shape
    in_h, in_w = out_hw[0] - 1 + kh - pads[0] - pads[2], out_hw[1] - 1 + kw - pads[1] - pads[3]
    s_shape = [batch, c_out, *out_hw]
    ct = helper.make_node("ConvTranspose", ["s", "w"], ["y"], pads=pads, group=group, kernel_shape=[kh, kw])
    swapped = w.reshape(group, c_out // group, c_in_g, kh, kw).swapaxes(1, 2)
    swapped = swapped.reshape(c_in_g * group, c_out // group, kh, kw)
    flipped = np.ascontiguousarray(np.flip(swapped, axis=(2, 3)))
    conv_pads = [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]]
    cv = helper.make_node("Conv", ["s", "w"], ["y"], pads=conv_pads, group=group, kernel_shape=[kh, kw])
    sessions = {
        "ConvTranspose": _session(ct, w, "w", s_shape, threads),
        "Conv": _session(cv, flipped, "w", s_shape, threads),
    }
    s = np.random.default_rng(0).standard_normal(s_shape).astype(np.float32)
    outs = {k: v.run(None, {"s": s})[0] for k, v in sessions.items()}
    diff = float(np.abs(outs["Conv"] - outs["ConvTranspose"]).max() / np.abs(outs["ConvTranspose"]).max())
    times = {k: [] for k in sessions}
    for r in range(rounds):
        for k in list(sessions) if r % 2 else list(sessions)[::-1]:
            t0 = time.perf_counter()
            sessions[k].run(None, {"s": s})
            times[k].append(time.perf_counter() - t0)
    ratio = statistics.median(a / b for a, b in zip(times["Conv"], times["ConvTranspose"], strict=True))
    exact_macs = c_out * c_in_g * kh * kw * out_hw[0] * out_hw[1]
    conv_macs = c_out * c_in_g * kh * kw * in_h * in_w
    return {
        "in": (in_h, in_w),
        "diff": diff,
        "ct_ms": statistics.median(times["ConvTranspose"]) * 1e3,
        "conv_ms": statistics.median(times["Conv"]) * 1e3,
        "ratio": ratio,
        "mac_ratio": conv_macs / exact_macs,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    parser.add_argument("--cases", nargs="*", default=["lenet", "cifar-paper", "resnet9"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(
        "| case | layer | W [out,in,k,k] | map in->out of the transpose | batch | Conv MACs / exact | "
        "ConvTranspose ms | Conv ms | Conv / ConvTranspose |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        for name, w, pads, group, out_hw in layers(case):
            for batch in args.batches:
                m = measure(w, pads, group, out_hw, batch, args.threads)
                print(
                    f"| {case} | {name} | {list(w.shape)} | {tuple(out_hw)}->{m['in']} | {batch} | "
                    f"{m['mac_ratio']:.2f} | {m['ct_ms']:.2f} | {m['conv_ms']:.2f} | {m['ratio']:.2f} |",
                    flush=True,
                )
                assert m["diff"] < 1e-5, m
    return 0


if __name__ == "__main__":
    sys.exit(main())
