"""The concept scan of CIFAR-10's test set with cifar10-resnet: onnxlrp against zennit-crp.

    python benchmarks/concepts_scan.py [--n 10000] [--crp-n 512] [--ray-n 2048] [--out FILE.json]

Per image, both compute the relevance every channel of one layer receives for the image's label
(its logit times a one-hot mask, zennit-crp's default) and the channel's activation: onnxlrp with
``onnxlrp.concepts.scan_channels`` (one onnxruntime session, the relevance graph pruned below the
layer), zennit-crp with ``FeatureVisualization.run`` (its relevance and activation maximisation
over the data set). It checks that the two agree on the per-channel relevance, times both (zennit-crp
on a subset, extrapolated), and times the scan on a local Ray cluster with 1 and 2 workers.

zennit-crp 0.6.0 needs zennit <= 0.4.6 and imports torchvision only for a Gaussian blur used when
drawing reference images; install both without dependencies (``pip install --no-deps zennit==0.4.6
zennit-crp==0.6.0``); the blur is stubbed here, since the scan never calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import models  # noqa: E402
from benchmarks.zennit_compat import make_composite  # noqa: E402
from onnxlrp.concepts import concept_graph, scan_channels  # noqa: E402
from onnxlrp.datasets import load_dataset  # noqa: E402
from onnxlrp.zoo import locate  # noqa: E402

LAYER_ONNX = "/features/features.6/features.6.0/Conv_output_0"  # conv 256 -> 384 at 8x8
LAYER_TORCH = "features.6.0"


def _stub_blur() -> None:
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.gaussian_blur = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stub"))
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    sys.modules["torchvision"].transforms = transforms
    sys.modules["torchvision.transforms"] = transforms
    sys.modules["torchvision.transforms.functional"] = functional


def onnxlrp_scan(x, labels, n, threads, backend="local", workers=1, shard_size=512):
    """(seconds, per-channel relevance [n, C]) of the onnxlrp concept scan."""
    graph = concept_graph(models.zoo_source("resnet9"), LAYER_ONNX, rule="epsilon")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = scan_channels(
            graph,
            x[:n],
            Path(tmp) / "scan",
            targets=labels[:n],
            batch_size=64,
            shard_size=shard_size,
            threads=threads,
            backend=backend,
            workers=workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
        return seconds, result.array("relevance")


def crp_scan(model, x, labels, n) -> tuple[float, np.ndarray]:
    """(seconds of FeatureVisualization.run over n images, per-channel relevance of the first 64)."""
    _stub_blur()
    from crp.attribution import CondAttribution
    from crp.concepts import ChannelConcept
    from crp.helper import get_layer_names  # noqa: F401
    from crp.visualization import FeatureVisualization

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return torch.from_numpy(x[i]), int(labels[i])

    composite = make_composite("epsilon", model)
    attribution = CondAttribution(model, no_param_grad=True)
    with tempfile.TemporaryDirectory() as tmp:
        fv = FeatureVisualization(attribution, Data(), {LAYER_TORCH: ChannelConcept()}, path=tmp)
        start = time.perf_counter()
        fv.run(composite, 0, n, batch_size=64, checkpoint=10**9)
        seconds = time.perf_counter() - start
    # the per-channel relevance itself, for the agreement check (first 64 images)
    sample = torch.from_numpy(x[:64]).requires_grad_(True)
    out = attribution(sample, [{"y": int(y)} for y in labels[:64]], composite, record_layer=[LAYER_TORCH])
    per_channel = out.relevances[LAYER_TORCH].sum((2, 3)).detach().numpy()
    return seconds, per_channel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--crp-n", type=int, default=512)
    parser.add_argument("--ray-n", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, _, _ = models.load_case("resnet9")
    x, labels, _ = load_dataset("cifar10", locate("cifar10-resnet")[1])
    report: dict = {"layer": LAYER_ONNX, "images": args.n, "cores": os.cpu_count()}

    seconds, relevance = onnxlrp_scan(x, labels, args.n, threads=2)
    report["onnxlrp_s"] = seconds
    report["onnxlrp_img_per_s"] = args.n / seconds
    print(f"onnxlrp scan, {args.n} images, 2 threads: {seconds:.1f} s ({args.n / seconds:.0f} img/s)")

    crp_seconds, crp_channels = crp_scan(model, x, labels, args.crp_n)
    scale = np.abs(relevance[:64]).max()
    report["agreement_max_abs_rel"] = float(np.abs(crp_channels - relevance[:64]).max() / scale)
    report["crp_s"] = crp_seconds
    report["crp_img_per_s"] = args.crp_n / crp_seconds
    report["crp_extrapolated_s"] = crp_seconds * args.n / args.crp_n
    print(
        f"zennit-crp FeatureVisualization.run, {args.crp_n} images: {crp_seconds:.1f} s "
        f"({args.crp_n / crp_seconds:.1f} img/s; {args.n} images: ~{report['crp_extrapolated_s']:.0f} s); "
        f"per-channel relevance agrees to {report['agreement_max_abs_rel']:.2g} of its scale"
    )

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    report["ray_init_s"] = time.perf_counter() - start
    for workers in (1, 2):
        seconds, _ = onnxlrp_scan(
            x, labels, args.ray_n, threads=1, backend="ray", workers=workers, shard_size=256
        )
        report[f"ray_{workers}_workers_s"] = seconds
        print(f"Ray, {workers} worker(s) x 1 thread, {args.ray_n} images: {seconds:.1f} s")
    seconds, _ = onnxlrp_scan(x, labels, args.ray_n, threads=1, shard_size=256)
    report["local_1_thread_ray_n_s"] = seconds
    print(f"local, 1 thread, {args.ray_n} images: {seconds:.1f} s")
    ray.shutdown()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
