"""torchvision and timm architectures as their users export them, compiled with no flags beyond the
rule and compared with an independent reference.

Each architecture gets random weights and randomised BatchNorm statistics, is exported at 32-64 px
by torch's TorchScript and dynamo exporters, and compiled under LRP-0. The reference is float64 gradient
x input from torch autograd over the same ONNX graph with onnxruntime's float32 decisions pinned
(ReLU gates, max-pool winners; see linearised.py). For ReLU networks that is plain gradient x input
and LRP-0 must equal it; for SiLU/Hardswish/ReLU6/gated networks it is gradient x input of the network
linearised at the sample (each activation replaced by x * f(x)/x, gates held constant): the identity
rule, which LRP-0 must equal just as exactly. The target is the predicted class for one sample and
another class for the other.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from architectures import build, export
from linearised import gradient_x_input

import onnxlrp

pytest.importorskip("torch")

# (family, name, input size, ReLU-only)
ARCHITECTURES = [
    ("torchvision", "resnet18", 32, True),
    ("torchvision", "vgg11_bn", 32, True),
    ("torchvision", "alexnet", 64, True),
    ("torchvision", "squeezenet1_1", 64, True),
    ("torchvision", "densenet121", 32, True),
    ("torchvision", "mnasnet0_5", 32, True),
    ("torchvision", "googlenet", 32, True),
    ("torchvision", "shufflenet_v2_x0_5", 32, True),
    ("torchvision", "regnet_x_400mf", 32, True),
    ("torchvision", "mobilenet_v2", 32, False),
    ("torchvision", "mobilenet_v3_small", 32, False),
    ("torchvision", "efficientnet_b0", 32, False),
    ("torchvision", "regnet_y_400mf", 32, False),
    ("timm", "resnet18d", 32, True),
    ("timm", "efficientnet_lite0", 32, False),
    ("timm", "rexnet_100", 32, False),
    ("timm", "ghostnet_100", 32, False),
]
CASES = [
    pytest.param(family, name, size, dynamo, id=f"{name}-{'dynamo' if dynamo else 'torchscript'}")
    for family, name, size, _ in ARCHITECTURES
    for dynamo in (False, True)
]


@pytest.mark.slow
@pytest.mark.parametrize(("family", "name", "size", "dynamo"), CASES)
def test_architecture_lrp0_equals_linearised_gradient_x_input(family, name, size, dynamo, tmp_path):
    if dynamo:
        pytest.importorskip("onnxscript")
    path = export(build(family, name), size, tmp_path / f"{name}.onnx", dynamo)
    exported = onnx.load(str(path))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)

    session = onnxlrp.RelevanceSession(onnxlrp.compile(path, rule="lrp0"))
    logits = session.run(x)[exported.graph.output[0].name]
    predicted = int(logits[0].argmax())
    targets = np.array([predicted, (int(logits[1].argmax()) + 3) % logits.shape[1]])
    out = session.run(x, target=targets)
    got = out["relevance"]
    assert got.shape == x.shape
    assert np.isfinite(got).all()

    for i, target in enumerate(targets):
        want, want_logits = gradient_x_input(exported, x[i : i + 1], int(target))
        # the forward part is the model's own: its logits are onnxruntime's run of the export
        np.testing.assert_allclose(
            out[exported.graph.output[0].name][i],
            want_logits.reshape(-1),
            rtol=1e-4,
            atol=1e-4 * np.abs(want_logits).max(),
        )
        error = np.abs(got[i : i + 1] - want).max() / np.abs(want).max()
        assert error <= 1e-5, f"{name} sample {i}: relative error {error:.2e}"
