"""onnxlrp.benchmarking: the benchmark runs and reports sane fields (no timing assertions: the
machine's speed is not under test)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import IR_VERSION
from onnx import TensorProto, helper, numpy_helper

from onnxlrp import OnnxLrpError
from onnxlrp.benchmarking import benchmark, interleaved, paired_ratio, steps
from onnxlrp.cli import main
from onnxlrp.profiling import kind_of


def dense_model() -> onnx.ModelProto:
    """x (batch fixed at 1) -> Gemm -> Relu -> Gemm -> y."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2"], ["y"]),
    ]
    weights = {"w1": rng.normal(size=(6, 5)), "b1": rng.normal(size=5), "w2": rng.normal(size=(5, 3))}
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    return model


def test_benchmark_reports_times_ratio_memory_and_sizes():
    ticks: list[str] = []
    result = benchmark(dense_model(), batch=4, rounds=3, threads=1, compile_repeats=1, progress=ticks.append)
    assert result.input_shape == (4, 6)  # the fixed batch 1 of the file freed to 4
    assert len(ticks) == steps(3, True, 1)
    assert ticks.count("round") == 3 and ticks.count("memory") == 2
    for timing in (result.forward, result.relevance):
        assert timing["n"] == 3 and 0 < timing["min"] <= timing["median"] <= timing["max"]
    assert result.ratio > 0 and result.compile_s > 0
    assert 0 < result.model_mib < result.graph_mib  # the relevance graph holds the forward too
    for name in ("forward", "relevance"):
        assert "error" not in result.memory[name], result.memory[name]
        assert result.memory[name]["total_mib"] >= result.memory[name]["run_mib"] >= 0
    text = result.report()
    for field in ("forward", "relevance", "ratio", "compile", "memory", "load average"):
        assert field in text


def test_benchmark_passes_compile_settings_and_skips_memory():
    result = benchmark(dense_model(), rounds=1, memory=False, compile_repeats=1, rule="zplus")
    assert result.settings == {"rule": "zplus"} and result.memory == {}
    assert "rule=zplus" in result.report()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rounds": 0}, "at least 1"), ({"providers": ["NoSuchExecutionProvider"]}, "NoSuchExecutionProvider")],
)
def test_benchmark_bad_settings_fail_with_one_line(kwargs, message):
    with pytest.raises(OnnxLrpError, match=message):
        benchmark(dense_model(), memory=False, **kwargs)


def test_interleaved_rotates_the_order_and_pairs_rounds():
    calls: list[str] = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = interleaved(fns, rounds=3, warmup=0)
    assert calls == list("abcbcacab")
    assert all(len(ts) == 3 for ts in times.values())
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == 3.0


def test_benchmark_command_prints_the_report(tmp_path, capsys):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(), str(path))
    assert main(["benchmark", str(path), "--batch", "3", "--rounds", "2", "--rule", "zplus", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "input 3x6 (rule=zplus" in out and "ratio" in out and "whole process" in out


def test_benchmark_command_refuses_a_missing_provider_in_one_line(tmp_path, capsys):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(), str(path))
    assert (
        main(["benchmark", str(path), "--providers", "NoSuchExecutionProvider", "--no-memory", "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NoSuchExecutionProvider" in err[0]


def test_profile_splits_the_ratio_into_kinds_of_work():
    result = benchmark(dense_model(), batch=2, rounds=1, memory=False, compile_repeats=1, profile_runs=3)
    profile = result.profile
    assert profile is not None

    def linear_calls(times):
        return sum(times.calls.get(op, 0) for op in ("Gemm", "MatMul", "FusedGemm"))

    assert linear_calls(profile.forward) == 2  # the two dense layers (one fused with its Relu), per run
    assert linear_calls(profile.relevance) >= 3  # the forward's two plus at least one transposed map
    assert sum(profile.shares().values()) == pytest.approx(profile.ratio)
    assert 0 < profile.linear_ratio < float("inf")  # a ratio of times: no bound on its value here
    assert "linear maps" in result.report() and "Gemm" in result.report()


def test_kind_of_sorts_operators():
    assert kind_of("Conv") == kind_of("MatMul") == "linear maps"
    assert kind_of("ReorderOutput") == kind_of("Transpose") == "layout"
    assert kind_of("MaxPool") == kind_of("ArgMax") == "pooling and reductions"
    assert kind_of("Div") == kind_of("Softmax") == "element-wise"


def test_benchmark_command_profiles_on_request(tmp_path, capsys):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(), str(path))
    assert main(["benchmark", str(path), "--rounds", "1", "--no-memory", "--profile", "2", "--quiet"]) == 0
    assert "relevance / forward" in capsys.readouterr().out
