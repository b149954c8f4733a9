"""int8 models from onnxruntime's static quantizer, explained as deployed.

QDQ form (QuantizeLinear/DequantizeLinear around every Conv, Gemm, MaxPool, Add): the relevance graph's
forward part is the quantized model's own computation (its logits equal the quantized model's bit for
bit as onnxruntime runs the QDQ graph without graph optimisations, the ONNX semantics; with them it
fuses int8 kernels whose requantisation rounds differently now and then), the weights behind
DequantizeLinear are the layers' weights, an activation's Q -> DQ round trip passes relevance like an
activation, and relevance stays float32. The reference is float64 gradient x
input over the QDQ graph with onnxruntime's decisions pinned (linearised.py: the round trip is an
element-wise function y = x * DQ(Q(x)) / x, like the identity rule for activations), which LRP-0 must
equal; the float model's relevance must correlate closely with the quantized model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from architectures import build, export
from linearised import gradient_x_input

import onnxlrp
from onnxlrp.errors import OnnxLrpError

quantization = pytest.importorskip("onnxruntime.quantization")
ZOO = Path(__file__).resolve().parent.parent / "zoo"


class _Calibration(quantization.CalibrationDataReader):
    def __init__(self, name: str, shape: tuple[int, ...], count: int = 8):
        rng = np.random.default_rng(123)
        self.batches = iter(
            [{name: rng.uniform(-1, 1, (1, *shape)).astype(np.float32)} for _ in range(count)]
        )

    def get_next(self):
        return next(self.batches, None)


def quantize(path: Path, out: Path, operator_form: bool = False, per_channel: bool = False) -> Path:
    """Static int8 quantization with random calibration data (QDQ form unless operator_form)."""
    model = onnx.load(str(path))
    graph_input = model.graph.input[0]
    shape = tuple(d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim[1:])
    quantization.quantize_static(
        str(path),
        str(out),
        _Calibration(graph_input.name, shape),
        quant_format=quantization.QuantFormat.QOperator if operator_form else quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QUInt8 if operator_form else quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        per_channel=per_channel,
    )
    return out


def _ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's outputs sample by sample (a fixed-batch export), without graph optimisations."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def _float_models(tmp_path: Path) -> list[tuple[str, Path, bool]]:
    """(name, float model, trained): a random-weight torchvision ResNet-18 and the trained zoo models."""
    resnet = export(build("torchvision", "resnet18"), 32, tmp_path / "resnet18.onnx", False)
    models = [("resnet18", resnet, False)]
    manifest = ZOO / "manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text())["models"]
        models += [(name, ZOO / entries[name]["file"], True) for name in ("mnist-lenet5", "cifar10-resnet")]
    return models


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.reshape(-1), b.reshape(-1))[0, 1])


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_models_are_explained_as_deployed(per_channel, tmp_path):
    for name, float_path, trained in _float_models(tmp_path):
        qdq_path = quantize(float_path, tmp_path / f"{name}.qdq.onnx", per_channel=per_channel)
        dims = onnx.load(str(float_path)).graph.input[0].type.tensor_type.shape.dim[1:]
        x = np.random.default_rng(0).uniform(-1, 1, (3, *(d.dim_value for d in dims))).astype(np.float32)
        quantized_logits = _ort_logits(qdq_path, x)
        targets = quantized_logits.argmax(1)

        session = onnxlrp.RelevanceSession(onnxlrp.compile(qdq_path, rule="lrp0"))
        output_name = onnx.load(str(qdq_path)).graph.output[0].name
        # one sample at a time, as the quantized model runs: float accumulation order depends on the
        # batch size, and a requantisation can round the other way
        runs = [session.run(x[i : i + 1], target=targets[i : i + 1]) for i in range(len(x))]
        out = {key: np.concatenate([run[key] for run in runs]) for key in ("relevance", output_name)}
        np.testing.assert_array_equal(out[output_name], quantized_logits)  # the deployed computation
        assert out["relevance"].dtype == np.float32 and np.isfinite(out["relevance"]).all()

        exported = onnx.load(str(qdq_path))
        for i, target in enumerate(targets):
            want, _ = gradient_x_input(exported, x[i : i + 1], int(target))
            error = np.abs(out["relevance"][i : i + 1] - want).max() / np.abs(want).max()
            assert error <= 1e-5, f"{name} sample {i}: relative error {error:.2e}"

        float_relevance = onnxlrp.explain(float_path, x, target=targets, rule="lrp0")
        correlations = [_correlation(float_relevance[i], out["relevance"][i]) for i in range(len(x))]
        print(f"{name} per_channel={per_channel}: correlation with the float model {correlations}")
        if trained:  # random weights quantise badly (and calibrate on nothing like their data)
            assert min(correlations) > 0.95, correlations


def test_operator_form_is_refused_naming_the_qdq_form(tmp_path):
    float_path = _float_models(tmp_path)[0][1]
    path = quantize(float_path, tmp_path / "resnet18.qop.onnx", operator_form=True)
    with pytest.raises(OnnxLrpError, match="QDQ") as error:
        onnxlrp.compile(path, rule="lrp0")
    assert "QLinearConv" in str(error.value)
