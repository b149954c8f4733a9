"""The LRP toolbox importer (onnxlrp.converters.lrp_toolbox, `onnxlrp convert lrp-toolbox`).

The oracle is tests/toolbox_reference.py, an independent numpy implementation of the toolbox's
forward pass and LRP rules (NHWC, loops over windows, float64).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import toolbox_reference as ref

from onnxlrp.converters import lrp_toolbox as lt
from onnxlrp.errors import OnnxLrpError, OutputExistsError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "toolbox"
# name -> --input-shape (None: inferred)
MODELS = {"mlp": None, "cnn": None, "cnn_strided": (11, 9, 1), "allconv": None, "xor_legacy": None}
INPUT_SHAPES = {
    "mlp": (12,),
    "cnn": (10, 10, 2),
    "cnn_strided": (11, 9, 1),
    "allconv": (14, 14, 1),
    "xor_legacy": (2,),
}
REL_TOL = 1e-5


def _onnxlrp():
    onnxlrp = pytest.importorskip("onnxlrp")
    if not hasattr(onnxlrp, "compile") or not hasattr(onnxlrp, "RelevanceSession"):
        pytest.skip("onnxlrp.compile / RelevanceSession not available yet")
    return onnxlrp


def _inputs(name: str, n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *INPUT_SHAPES[name])).astype(np.float32)


def _convert(name: str, zero_bias: bool = False) -> onnx.ModelProto:
    layers = lt.load_toolbox_model(DATA / f"{name}.txt")
    if zero_bias:
        for layer in layers:
            if layer.B is not None:
                layer.B = np.zeros_like(layer.B)
    return lt.toolbox_to_onnx(layers, MODELS[name])


def _ref_layers(name: str, zero_bias: bool = False) -> list[dict]:
    layers = ref.read_model(DATA / f"{name}.txt")
    if zero_bias:
        for layer in layers:
            if "B" in layer:
                layer["B"] = np.zeros_like(layer["B"])
    return layers


def _rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


# ----------------------------------------------------------------------------------------------------
# the converted model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_is_valid_onnx(name):
    model = _convert(name)
    assert model.ir_version == 10
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].name == "input"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
    assert tuple(d.dim_value for d in dims[1:]) == INPUT_SHAPES[name]
    assert model.graph.output[0].name == "logits"


def test_input_shape_inferred_for_square_cnn():
    layers = lt.load_toolbox_model(DATA / "cnn.txt")
    assert lt.infer_input_shape(layers) == (10, 10, 2)
    assert lt.infer_input_shape(lt.load_toolbox_model(DATA / "mlp.txt")) == (12,)
    assert lt.infer_input_shape(lt.load_toolbox_model(DATA / "allconv.txt")) == (14, 14, 1)
    with pytest.raises(lt.ToolboxFormatError, match="input-shape"):
        lt.infer_input_shape(lt.load_toolbox_model(DATA / "cnn_strided.txt"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_matches_reference(name):
    x = _inputs(name)
    session = ort.InferenceSession(_convert(name).SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x}), strict=True))
    logits, probs = ref.Net(_ref_layers(name)).forward(x)
    # a final 1x1 spatial output (all-conv nets) is flattened: the toolbox's is (N, 1, 1, n)
    assert _rel_err(outputs["logits"], logits.reshape(outputs["logits"].shape)) < REL_TOL
    if probs is not None:
        assert np.abs(outputs["probabilities"] - probs.reshape(outputs["probabilities"].shape)).max() < 1e-6
    else:
        assert "probabilities" not in outputs


def test_mlp_with_an_image_input_shape_flattens_nhwc():
    """--input-shape H W D on a Linear-first model: the NHWC input is flattened in the toolbox's order."""
    x = _inputs("mlp")
    flat = _run_logits(_convert("mlp"), x)
    image = _run_logits(
        lt.toolbox_to_onnx(lt.load_toolbox_model(DATA / "mlp.txt"), (2, 2, 3)), x.reshape(-1, 2, 2, 3)
    )
    np.testing.assert_allclose(image, flat, rtol=1e-6, atol=1e-6)


def _run_logits(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def test_sumpool_is_a_ones_conv_then_constant_mul():
    model = _convert("cnn")
    ops = [n.op_type for n in model.graph.node]
    assert ops == [
        "Transpose",
        "Conv",
        "Relu",
        "Conv",
        "Mul",
        "Conv",
        "Relu",
        "MaxPool",
        "Transpose",
        "Flatten",
        "Gemm",
        "Softmax",
    ]
    pool = model.graph.node[3]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in pool.attribute}["group"] == 4
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert np.all(inits[pool.input[1]] == 1) and len(pool.input) == 2
    assert float(inits[model.graph.node[4].input[1]]) == pytest.approx(0.5)


def test_reference_lrp0_is_gradient_times_input_without_bias():
    """Oracle check: for a bias-free ReLU network LRP-0 equals gradient x input (finite differences)."""
    layers = _ref_layers("cnn", zero_bias=True)
    x = _inputs("cnn", n=1, seed=3).astype(np.float64)
    net = ref.Net(layers)
    logits, _ = net.forward(x)
    target = int(logits.argmax())
    relevance = net.lrp(net.seed(target), "simple")
    grad = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        grad[idx] = (
            ref.Net(layers).forward(xp)[0][0, target] - ref.Net(layers).forward(xm)[0][0, target]
        ) / (2 * h)
    assert _rel_err(relevance, grad * x) < 1e-6
    assert relevance.sum() == pytest.approx(logits[0, target], rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# relevance: onnxlrp on the imported model == the toolbox reference


# (onnxlrp rule, compile kwargs, toolbox rule, toolbox param, reference options, zero the biases)
def _rules(onnxlrp):
    rules = onnxlrp.rules
    winner = {"maxpool_flat": "winner", "maxpool_ties": "first"}
    return {
        "lrp0": ({"rule": "lrp0"}, "simple", None, {}, False),
        "epsilon": ({"rule": "epsilon", "epsilon": 0.1}, "epsilon", 0.1, {}, False),
        "epsilon1": ({"rule": "epsilon", "epsilon": 1.0}, "epsilon", 1.0, {}, False),
        "alphabeta": (
            {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0},
            "alphabeta",
            2.0,
            {"stab": 1e-6},
            False,
        ),
        "alphabeta-toolbox-stab": (
            {"rule": rules.AlphaBeta(2.0, 1.0, stabilizer=1e-16)},
            "alphabeta",
            2.0,
            {},
            False,
        ),
        "alphabeta3": (
            {"rule": "alphabeta", "alpha": 3.0, "beta": 2.0},
            "alphabeta",
            3.0,
            {"stab": 1e-6},
            False,
        ),
        # flat / w^2: the toolbox spreads MaxPool relevance uniformly under these rules; onnxlrp keeps
        # winner-take-all (first maximum). Compare against the reference in that MaxPool mode.
        "flat": ({"rule": "flat"}, "flat", None, winner, False),
        # onnxlrp's wsquare puts bias^2 in the denominator (zennit); the toolbox has no bias term:
        # WSquare(bias=False) is the toolbox's rule ...
        "wsquare-nobias": ({"rule": rules.WSquare(stabilizer=1e-16, bias=False)}, "ww", None, winner, False),
        # ... and the default wsquare equals it on a bias-free model
        "wsquare-biasfree-model": ({"rule": "wsquare"}, "ww", None, winner, True),
    }


RULE_IDS = [
    "lrp0",
    "epsilon",
    "epsilon1",
    "alphabeta",
    "alphabeta-toolbox-stab",
    "alphabeta3",
    "flat",
    "wsquare-nobias",
    "wsquare-biasfree-model",
]


@pytest.mark.parametrize("rule_id", RULE_IDS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_relevance_matches_toolbox_reference(name, rule_id):
    onnxlrp = _onnxlrp()
    kwargs, tb_rule, tb_param, options, zero_bias = _rules(onnxlrp)[rule_id]
    x = _inputs(name, seed=1)
    compiled = onnxlrp.compile(_convert(name, zero_bias=zero_bias), **kwargs)
    result = onnxlrp.RelevanceSession(compiled).run(x)
    net = ref.Net(_ref_layers(name, zero_bias=zero_bias), **options)
    logits, _ = net.forward(x)
    expected = net.lrp(net.seed(), tb_rule, tb_param)
    assert result["relevance"].shape == x.shape
    assert _rel_err(result["logits"], logits.reshape(result["logits"].shape)) < REL_TOL
    err = _rel_err(result["relevance"], expected)
    assert err < REL_TOL, f"{name} {rule_id}: max |diff| / max |R| = {err:.2e}"


@pytest.mark.parametrize("name", ["cnn", "mlp"])
def test_relevance_for_a_chosen_target(name):
    onnxlrp = _onnxlrp()
    x = _inputs(name, seed=2)
    target = np.array([1, 0, 2, 1, 0, 2], dtype=np.int64)
    result = onnxlrp.RelevanceSession(onnxlrp.compile(_convert(name), rule="epsilon", epsilon=0.1)).run(
        x, target=target
    )
    net = ref.Net(_ref_layers(name))
    net.forward(x)
    expected = net.lrp(net.seed(target), "epsilon", 0.1)
    assert _rel_err(result["relevance"], expected) < REL_TOL


def test_flat_maxpool_differs_from_toolbox_as_documented():
    """The toolbox's flat rule spreads MaxPool relevance uniformly; onnxlrp keeps winner-take-all."""
    onnxlrp = _onnxlrp()
    x = _inputs("cnn", seed=1)
    result = onnxlrp.RelevanceSession(onnxlrp.compile(_convert("cnn"), rule="flat")).run(x)
    net = ref.Net(_ref_layers("cnn"))  # maxpool_flat="uniform": the toolbox's own behaviour
    net.forward(x)
    expected = net.lrp(net.seed(), "flat")
    assert _rel_err(result["relevance"], expected) > 1e-3
    np.testing.assert_allclose(
        result["relevance"].sum(axis=(1, 2, 3)), expected.sum(axis=(1, 2, 3)), rtol=1e-5
    )


# ----------------------------------------------------------------------------------------------------
# malformed files

MALFORMED = {
    "unknown layer": ("Linear 2 1\n1 2\n0\nPool 2 2 2 2\n", r"line 4: unknown layer type 'Pool'"),
    "too few weights": (
        "Linear 2 2\n1 2 3\n0 0\n",
        r"line 2: the Linear layer of line 1 expects 4 weights, found 3",
    ),
    "too many biases": (
        "Linear 2 1\n1 2\n0 0\n",
        r"line 3: the Linear layer of line 1 expects 1 biases, found 2",
    ),
    "missing biases": ("Rect\nLinear 2 1\n1 2\n", r"line 2: Linear expects a line of 1 biases.*file ends"),
    "bias line is a header": ("Linear 2 1\n1 2\nRect\n", r"line 3: expected a line of 1 biases.*'Rect'"),
    "bad number": ("Linear 2 1\n1 x\n0\n", r"line 2: weights of the Linear layer of line 1"),
    "non-integer parameter": (
        "Convolution 3 3 1 2 1 one\n",
        r"line 1: Convolution parameters must be integers",
    ),
    "parameter count": ("MaxPool 2 2 2\n", r"line 1: MaxPool takes 4 integer parameters, found 3"),
    "extra tokens": ("Rect 1\n", r"line 1: Rect takes 0 integer parameters, found 1"),
    "stray numbers": ("Linear 1 1\n1\n0\n5 6\n", r"line 4: unexpected line of numbers"),
    "empty": ("\n\n", r"no layers"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_names_the_line(case, tmp_path):
    text, message = MALFORMED[case]
    path = tmp_path / "model.txt"
    path.write_text(text)
    with pytest.raises(lt.ToolboxFormatError, match=message) as info:
        lt.load_toolbox_model(path)
    assert isinstance(info.value, OnnxLrpError)
    if case != "empty":
        assert str(path) in str(info.value)


def test_legacy_linear_rows_format():
    """The toolbox also reads an older format: Linear m n, then m lines of n weights, then the biases."""
    new = lt.parse_toolbox_text("Linear 3 2\n1 2 3 4 5 6\n7 8\nRect\n")
    old = lt.parse_toolbox_text("Linear 3 2\n1 2\n3 4\n5 6\n7 8\nRect\n")
    assert [ly.kind for ly in old] == ["Linear", "Rect"]
    np.testing.assert_array_equal(old[0].W, new[0].W)
    np.testing.assert_array_equal(old[0].B, [7, 8])
    with pytest.raises(
        lt.ToolboxFormatError,
        match=r"line 4: the Linear layer of line 1 expects 2 weights \(row 3 of 3\), found 1",
    ):
        lt.parse_toolbox_text("Linear 3 2\n1 2\n3 4\n5\n7 8\n")


@pytest.mark.parametrize(
    ("text", "shape", "message"),
    [
        (
            "Linear 3 2\n1 2 3 4 5 6\n0 0\nLinear 3 1\n1 2 3\n0\n",
            None,
            r"line 4: Linear 3 1 reads 3 features",
        ),
        ("Convolution 2 2 3 1 1 1\n" + "1 " * 12 + "\n0\n", (4, 4, 2), r"line 1: .*depth 3.*2 channels"),
        ("Linear 4 1\n1 2 3 4\n0\nMaxPool 2 2 1 1\n", None, r"line 4: MaxPool needs a spatial"),
        ("MaxPool 5 5 1 1\nFlatten\n", (4, 4, 1), r"line 1: MaxPool window 5x5 is larger"),
        ("Linear 1 1\n1\n0\nSoftMax\nRect\n", None, r"line 4: SoftMax is supported only as the last layer"),
    ],
)
def test_inconsistent_shapes_name_the_line(text, shape, message):
    with pytest.raises(lt.ToolboxFormatError, match=message):
        lt.toolbox_to_onnx(lt.parse_toolbox_text(text), shape)


# ----------------------------------------------------------------------------------------------------
# the CLI


def _cli(args):
    from onnxlrp.cli import main

    return main([str(a) for a in args])


def test_cli_convert_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cnn.onnx"
    assert _cli(["convert", "lrp-toolbox", DATA / "cnn.txt", "-o", out]) == 0
    first = out.read_bytes()
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert "wrote" in capsys.readouterr().out

    out.write_bytes(b"keep me")
    assert _cli(["convert", "lrp-toolbox", DATA / "cnn.txt", "-o", out]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"

    assert _cli(["convert", "lrp-toolbox", DATA / "cnn.txt", "-o", out, "--force"]) == 0
    assert out.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx"]  # no temp files left


def test_cli_convert_input_shape_and_default_output(tmp_path, capsys):
    src = tmp_path / "strided.txt"
    src.write_bytes((DATA / "cnn_strided.txt").read_bytes())
    assert _cli(["convert", "lrp-toolbox", src]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert _cli(["convert", "lrp-toolbox", src, "--input-shape", 11, 9, 1]) == 0
    model = onnx.load(tmp_path / "strided.onnx")
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [11, 9, 1]


def test_cli_convert_malformed_file(tmp_path, capsys):
    src = tmp_path / "bad.txt"
    src.write_text("Linear 2 2\n1 2 3\n0 0\n")
    assert _cli(["convert", "lrp-toolbox", src, "-o", tmp_path / "bad.onnx"]) == 2
    err = capsys.readouterr().err
    assert f"{src}: line 2:" in err and "expects 4 weights, found 3" in err
    assert not (tmp_path / "bad.onnx").exists()


def test_save_refuses_existing_output(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_text("x")
    with pytest.raises(OutputExistsError):
        lt.convert_file(DATA / "mlp.txt", out)


def test_converter_does_not_import_torch():
    import subprocess

    code = (
        "import sys, onnxlrp.converters.lrp_toolbox, onnxlrp.cli.convert_cmd; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inspect_lists_every_node_as_supported(name, tmp_path, capsys):
    _onnxlrp()
    from onnxlrp.cli import COMMANDS

    if "inspect" not in COMMANDS:
        pytest.skip("no inspect command")
    path = tmp_path / f"{name}.onnx"
    onnx.save(_convert(name), path)
    code = _cli(["inspect", path])
    out = capsys.readouterr().out
    assert code == 0, out
    model = onnx.load(path)
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for node in model.graph.node:
        assert node.name in rows, f"{node.name} missing from inspect output:\n{out}"
        assert " yes" in rows[node.name], rows[node.name]
    assert "0 unsupported" in out
