"""The data set runner: shards, resume after an interruption, local and Ray runs agree."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import onnxlrp
from onnxlrp.runtime import RelevanceSession
from onnxlrp.scan import ScanError, scan, shard_name

from .nets import export


@pytest.fixture(scope="module")
def relevance_bytes(tmp_path_factory) -> bytes:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)
    )
    model = export(net, (3, 8, 8), tmp_path_factory.mktemp("scan") / "net.onnx")
    return onnxlrp.compile(model, rule="epsilon").SerializeToString()


@dataclass
class Heatmaps:
    """Per image: the relevance map, its sum and the predicted class."""

    fail_at: int | None = None  # an input index at which to raise (simulates a crash)

    def __call__(self, session: RelevanceSession, x: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        if self.fail_at is not None and np.any(x[:, 0, 0, 0] == self.fail_at):
            raise KeyboardInterrupt("simulated crash")
        out = session.run(x, target=target)
        relevance = out["relevance"]
        return {
            "relevance": relevance,
            "total": relevance.reshape(len(x), -1).sum(1),
            "predicted": out["logits"].argmax(1),
        }


def _data(n: int = 50) -> np.ndarray:
    x = np.random.default_rng(1).normal(size=(n, 3, 8, 8)).astype(np.float32)
    x[:, 0, 0, 0] = np.arange(n)  # marks each image (to crash at a chosen one)
    return x


def _targets(n: int) -> np.ndarray:
    return np.where(np.arange(n) % 3 == 0, -1, np.arange(n) % 5)  # some predicted, some chosen


def test_scan_matches_direct_run_and_resumes_after_a_crash(relevance_bytes, tmp_path):
    x = _data()
    expected = RelevanceSession(relevance_bytes).run(x, target=_targets(50))["relevance"]
    options = {"batch_size": 4, "shard_size": 8, "threads": 1, "progress": False, "targets": _targets(50)}
    describe = "heatmaps"
    with pytest.raises(KeyboardInterrupt):
        scan(relevance_bytes, x, Heatmaps(fail_at=27), tmp_path, describe=describe, **options)
    done = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("shard-"))
    assert done == [shard_name(s) for s in range(3)]  # shards 0-2 complete, shard 3 (24..31) never was
    mtimes = {name: os.stat(tmp_path / name / "relevance.npy").st_mtime_ns for name in done}
    # a half-written shard (as a kill during the write leaves it) is redone, never read
    (tmp_path / (shard_name(3) + ".tmp")).mkdir()
    (tmp_path / (shard_name(3) + ".tmp") / "relevance.npy").write_bytes(b"garbage")

    result = scan(
        relevance_bytes, x, Heatmaps(), tmp_path, describe=describe, labels=x[:, 0, 0, 0], **options
    )
    assert {name: os.stat(tmp_path / name / "relevance.npy").st_mtime_ns for name in done} == mtimes
    assert result.shards == 7
    got = result.array("relevance")
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    table = result.table()
    assert table.column("index").to_pylist() == list(range(50))
    np.testing.assert_allclose(table.column("total").to_numpy(), got.reshape(50, -1).sum(1), rtol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))
    mapped = next(result.shard_arrays("relevance"))
    assert isinstance(mapped, np.memmap)


def test_scan_refuses_a_folder_of_another_run(relevance_bytes, tmp_path):
    x = _data(10)
    scan(relevance_bytes, x, Heatmaps(), tmp_path, shard_size=4, progress=False, describe="a")
    with pytest.raises(ScanError, match="other settings"):
        scan(relevance_bytes, x[:9], Heatmaps(), tmp_path, shard_size=4, progress=False, describe="a")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n"] == 10
    result = scan(relevance_bytes, x[:9], Heatmaps(), tmp_path, shard_size=4, progress=False, force=True)
    assert result.array("total").shape == (9,)


def test_batch_function_must_return_per_image_arrays(relevance_bytes, tmp_path):
    def bad(session, x, target):
        return {"mean": np.float32(1.0)}

    with pytest.raises(ScanError, match="first dimension must be the batch size"):
        scan(relevance_bytes, _data(4), bad, tmp_path, progress=False, describe="bad")


@pytest.mark.slow
def test_ray_run_equals_local_run(relevance_bytes, tmp_path):
    ray = pytest.importorskip("ray")
    x = _data(40)
    options = {"batch_size": 4, "shard_size": 8, "threads": 1, "progress": False, "describe": "heatmaps"}
    options["targets"] = _targets(40)
    local = scan(relevance_bytes, x, Heatmaps(), tmp_path / "local", **options)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed = scan(
            relevance_bytes, x, Heatmaps(), tmp_path / "ray", backend="ray", workers=2, **options
        )
    finally:
        ray.shutdown()
    for key in ("relevance", "total", "predicted"):
        np.testing.assert_array_equal(distributed.array(key), local.array(key))
    assert distributed.table().equals(local.table())


def test_evaluation_relevance_through_the_scan_is_kept_and_reused(tmp_path):
    from onnxlrp.evaluation.heatmaps import compute_relevance
    from onnxlrp.methods import parse_method

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    model = export(net, (3, 8, 8), tmp_path / "net.onnx")
    x, targets = _data(20), _targets(20)
    method = parse_method("alphabeta:2,1")
    direct = compute_relevance(model, x, targets, method)
    stored = compute_relevance(model, x, targets, method, store=tmp_path / "relevance", batch_size=8)
    np.testing.assert_allclose(stored, direct, rtol=0, atol=1e-6 * np.abs(direct).max())
    shard = tmp_path / "relevance" / "alphabeta_2_1" / shard_name(0) / "relevance.npy"
    before = os.stat(shard).st_mtime_ns
    again = compute_relevance(model, x, targets, method, store=tmp_path / "relevance", batch_size=8)
    assert os.stat(shard).st_mtime_ns == before
    np.testing.assert_array_equal(again, stored)
