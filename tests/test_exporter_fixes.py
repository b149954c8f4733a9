"""Exporter patterns the CNN zoos produce: fixed-batch Reshapes that are not over the batch, Slices whose
bounds are computed from shapes (TorchScript's torch.chunk), errors that list every offending node,
and non-ReLU activations under the identity rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import IR_VERSION
from linearised import gradient_x_input
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxlrp
from onnxlrp.errors import OnnxLrpError


def _reshape_not_over_the_batch() -> onnx.ModelProto:
    """x [1, 6] -> Reshape [3, 2] -> Relu -> Reshape [1, 6] -> Gemm: the second target's leading 1 is
    not the batch (its input's first dimension is 3)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array([3, 2], np.int64), "to_3x2"),
        numpy_helper.from_array(np.array([1, 6], np.int64), "to_1x6"),
        numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "to_3x2"], ["r"], name="heads"),
        helper.make_node("Relu", ["r"], ["a"], name="relu"),
        helper.make_node("Reshape", ["a", "to_1x6"], ["f"], name="back"),
        helper.make_node("Gemm", ["f", "W", "b"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    return model


def test_a_reshape_target_not_over_the_batch_is_left_alone():
    model = _reshape_not_over_the_batch()
    x = np.array([[0.5, -1.0, 2.0, 0.25, -0.5, 1.5]], np.float32)
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(x, target=[2])
    want, logits = gradient_x_input(model, x, 2)
    np.testing.assert_allclose(out["y"], logits, rtol=1e-6)
    np.testing.assert_allclose(out["relevance"], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


class _Chunks(nn.Module):
    """torch.chunk and split with sizes computed from the tensor's shape, as ShuffleNet does."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, torch.relu(self.branch(right))], 1)
        half = x.shape[1] // 2
        x = torch.cat([x[:, half:], x[:, :half]], 1)
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_slices_bounded_by_shapes_are_constant_once_shapes_are_known(dynamic_batch, tmp_path):
    torch.manual_seed(0)
    module = _Chunks().eval()
    path = tmp_path / "chunks.onnx"
    axes = {"x": {0: "N"}} if dynamic_batch else None
    torch.onnx.export(
        module, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"], dynamic_axes=axes
    )
    model = onnx.load(str(path))
    assert any(n.op_type == "Shape" for n in model.graph.node)  # bounds computed from shapes
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(x, target=[1, 3])
    for i, target in enumerate((1, 3)):
        want, _ = gradient_x_input(model, x[i : i + 1], target)
        assert np.abs(out["relevance"][i : i + 1] - want).max() <= 1e-5 * np.abs(want).max()


def test_data_dependent_slices_are_refused_all_listed():
    """Slice bounds computed from the input's values (not its shape) are not constant: the error lists
    every such node, not the first."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], name="peak", keepdims=0),
        helper.make_node("Cast", ["m"], ["mi"], name="as_int", to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["mi", "zero"], ["end"], name="end_vector"),
        helper.make_node("Slice", ["x", "start", "end", "one"], ["s1"], name="first_slice"),
        helper.make_node("Slice", ["x", "start", "end", "one"], ["s2"], name="second_slice"),
        helper.make_node("Concat", ["s1", "s2"], ["y"], name="join", axis=1),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    with pytest.raises(OnnxLrpError) as error:
        onnxlrp.compile(model, rule="lrp0")
    assert "first_slice" in str(error.value) and "second_slice" in str(error.value)


# --- non-ReLU activations: the identity rule --------------------------------------------------------


class _Smooth(nn.Module):
    """Conv/Linear layers with SiLU, GELU, Hardswish, Tanh and a sigmoid gate; no biases when asked."""

    def __init__(self, bias: bool):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1, bias=bias)
        self.gate = nn.Conv2d(6, 6, 1, bias=bias)
        self.fc1 = nn.Linear(6 * 8 * 8, 16, bias=bias)
        self.fc2 = nn.Linear(16, 4, bias=bias)

    def forward(self, x):
        x = nn.functional.silu(self.c1(x))
        x = nn.functional.hardswish(self.c2(x))
        x = x * torch.sigmoid(self.gate(x))
        x = nn.functional.gelu(self.fc1(x.flatten(1)))
        return self.fc2(torch.tanh(x))


@pytest.mark.parametrize("dynamo", [False, True])
def test_identity_rule_for_smooth_activations(dynamo, tmp_path):
    """SiLU, GELU, Hardswish and Tanh pass relevance through unchanged (the LXT/AttnLRP identity rule)
    and a sigmoid gate acts as a weight: LRP-0 equals gradient x input of the network linearised at the
    sample (f(x) replaced by x * f(x)/x, the gate constant). Without biases every layer then conserves
    relevance, so the input relevance sums to the target logit, although plain gradient x input of the
    smooth network does not."""
    if dynamo:
        pytest.importorskip("onnxscript")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    for bias in (True, False):
        torch.manual_seed(0)
        module = _Smooth(bias).eval()
        path = tmp_path / f"smooth_{bias}.onnx"
        torch.onnx.export(module, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=dynamo, verbose=False)
        model = onnx.load(str(path))
        out = onnxlrp.RelevanceSession(onnxlrp.compile(model, rule="lrp0")).run(x, target=[0, 3])
        for i, target in enumerate((0, 3)):
            want, logits = gradient_x_input(model, x[i : i + 1], target)
            assert np.abs(out["relevance"][i : i + 1] - want).max() <= 1e-5 * np.abs(want).max()
            if not bias:
                total = out["relevance"][i].sum()
                np.testing.assert_allclose(total, logits.reshape(-1)[target], rtol=1e-4)
                plain = torch.from_numpy(x[i : i + 1]).requires_grad_(True)
                module(plain)[0, target].backward()
                gradient_x_input_sum = float((plain * plain.grad).sum())
                assert abs(gradient_x_input_sum - total) > 1e-2 * abs(total)
