"""The portable relevance graph (the default) against the onnxruntime-only form (`runtime="onnxruntime"`:
MaxPool's Indices with MaxUnpool/ScatterElements), as the ratio to the forward pass in onnxruntime.

    python benchmarks/runtime_forms.py [--batches 1 32] [--rounds 20] [--threads 1]

Cases: the zoo's CIFAR-10 nets (2x2 and 4x4 tiling max pools) and ResNet-50's stem max pool alone
(3x3, stride 2, pad 1 on 64x112x112: overlapping windows). Sessions are timed interleaved, best of
`rounds`; prints a Markdown table. The two forms are checked to agree before timing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import helper  # noqa: E402

import onnxlrp  # noqa: E402
from onnxlrp import zoo  # noqa: E402

FORMS = ("portable", "onnxruntime")


def _stem_pool() -> onnx.ModelProto:
    """ResNet-50's stem max pool, with a Flatten so that it has logits."""
    nodes = [
        helper.make_node(
            "MaxPool", ["input"], ["y"], name="pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4
        ),
        helper.make_node("Flatten", ["y"], ["logits"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "stem_pool",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 64, 112, 112])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 64 * 56 * 56])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _cases() -> dict:
    return {
        "cifar10-paper": (onnx.load(zoo.resolve_model("cifar10-paper")), (3, 32, 32)),
        "cifar10-resnet": (onnx.load(zoo.resolve_model("cifar10-resnet")), (3, 32, 32)),
        "resnet50 stem max pool": (_stem_pool(), (64, 112, 112)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    providers = ["CPUExecutionProvider"]
    print(
        f"onnxruntime {ort.__version__}, {args.threads} thread(s), best of {args.rounds} interleaved rounds\n"
    )
    print("| case | batch | forward (ms) | portable / forward | onnxruntime form / forward |")
    print("| --- | --- | --- | --- | --- |")
    for name, (model, shape) in _cases().items():
        graphs = {form: onnxlrp.compile(model, rule="epsilon", runtime=form) for form in FORMS}
        for batch in args.batches:
            x = np.random.default_rng(0).uniform(-1, 1, (batch, *shape)).astype(np.float32)
            sessions = {
                "forward": ort.InferenceSession(model.SerializeToString(), options, providers=providers)
            }
            for form, graph in graphs.items():
                sessions[form] = onnxlrp.RelevanceSession(graph, options=options).session
            feeds = {"forward": {"input": x}}
            feeds.update({form: {"input": x, "target": np.full(batch, -1, np.int64)} for form in FORMS})
            maps = [sessions[form].run(["relevance"], feeds[form])[0] for form in FORMS]
            scale = np.abs(maps[0]).max()
            assert np.abs(maps[0] - maps[1]).max() <= 1e-5 * scale, f"{name}: the two forms disagree"
            best = {key: float("inf") for key in sessions}
            rounds = args.rounds if batch == 1 else max(3, args.rounds // 4)
            for _ in range(rounds):
                for key, session in sessions.items():
                    start = time.perf_counter()
                    session.run(None, feeds[key])
                    best[key] = min(best[key], time.perf_counter() - start)
            forward = best["forward"]
            ratios = " | ".join(f"{best[form] / forward:.2f}x" for form in FORMS)
            print(f"| {name} | {batch} | {forward * 1e3:.2f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
