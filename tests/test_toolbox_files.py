"""Every model file the LRP toolbox ships, in the formats it ships them, converted with no flags.

The toolbox's model files are "free for academic use only" (its top-level licence), so they are not
copied into this repository: equivalent files are generated here with the same layer structure and
format - the text format of models/MNIST/LeNet-5.txt and models/XOR/xor_net_small.txt, and MATLAB
classdef .mat files like models/MNIST/{long,short}-{rect,tanh}.mat (smaller hidden layers, random
weights). Set LRP_TOOLBOX_MODELS to the toolbox's models/ folder to also run on the real files.
The reference is toolbox_reference.py (the toolbox's formulas in numpy), fed from the generated
arrays, not from the converter.
"""

from __future__ import annotations

import itertools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import toolbox_reference as ref
from matlab_writer import Obj, save_objects

import onnxlrp
from onnxlrp.converters import lrp_toolbox as lt
from onnxlrp.errors import OnnxLrpError

# the real LeNet-5's layers (models/MNIST/LeNet-5.txt)
LENET5 = [
    ("Convolution", (5, 5, 1, 10, 1, 1)),
    ("Rect", ()),
    ("SumPool", (2, 2, 2, 2)),
    ("Convolution", (5, 5, 10, 25, 1, 1)),
    ("Rect", ()),
    ("SumPool", (2, 2, 2, 2)),
    ("Convolution", (4, 4, 25, 100, 1, 1)),
    ("Rect", ()),
    ("SumPool", (2, 2, 2, 2)),
    ("Convolution", (1, 1, 100, 10, 1, 1)),
    ("Flatten", ()),
    ("SoftMax", ()),
]
# models/XOR/xor_net_small.txt
XOR = [
    ("Linear", (2, 3)),
    ("Tanh", ()),
    ("Linear", (3, 3)),
    ("Tanh", ()),
    ("Linear", (3, 2)),
    ("SoftMax", ()),
]


def _mlp(hidden: list[int], activation: str) -> list[tuple[str, tuple]]:
    sizes = [784, *hidden, 10]
    layers: list[tuple[str, tuple]] = []
    for m, n in itertools.pairwise(sizes):
        layers += [("Linear", (m, n)), (activation, ())]
    return [*layers[:-1], ("SoftMax", ())]


# long/short x rect/tanh: the MNIST MLPs (here with 3 or 1 hidden layers of 64 units)
MLPS = {
    f"{length}-{act.lower()}": _mlp([64] * (3 if length == "long" else 1), act)
    for length in ("long", "short")
    for act in ("Rect", "Tanh")
}

# (onnxlrp options, toolbox rule, parameter, reference options)
RULES = {
    "simple": ({"rule": "simple"}, "simple", None, {}),
    "epsilon": ({"rule": "epsilon", "epsilon": 0.01}, "epsilon", 0.01, {}),
    "alphabeta2": ({"rule": "alphabeta", "alpha": 2.0, "beta": 1.0}, "alphabeta", 2.0, {"stab": 1e-6}),
    "alphabeta3": ({"rule": "alphabeta", "alpha": 3.0, "beta": 2.0}, "alphabeta", 3.0, {"stab": 1e-6}),
    "flat": ({"rule": "flat"}, "flat", None, {}),
    "ww": ({"rule": "ww"}, "ww", None, {}),
}


def _layers(spec: list[tuple[str, tuple]], seed: int) -> list[dict]:
    """Reference layers with random weights, rounded to 3 decimals as the toolbox's files are."""
    rng = np.random.default_rng(seed)
    layers = []
    for kind, params in spec:
        layer: dict = {"kind": kind, "params": list(params)}
        if kind in ("Linear", "Convolution"):
            shape = params[:2] if kind == "Linear" else params[:4]
            fan_in = int(np.prod(shape[:-1]))
            layer["W"] = np.round(rng.normal(0, 1 / np.sqrt(fan_in), shape), 3)
            layer["B"] = np.round(rng.normal(0, 0.05, shape[-1]), 3)
        layers.append(layer)
    return layers


def _write_txt(layers: list[dict], path: Path) -> Path:
    lines = []
    for layer in layers:
        lines.append(" ".join([layer["kind"], *map(str, layer["params"])]))
        if "W" in layer:
            lines += [
                " ".join(f"{v:.3f}" for v in layer["W"].ravel()),
                " ".join(f"{v:.3f}" for v in layer["B"]),
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_mat(layers: list[dict], path: Path) -> Path:
    """The toolbox's MATLAB Sequential of module objects (their properties as modules/*.m declare)."""
    modules = []
    for layer in layers:
        kind, params = layer["kind"], layer["params"]
        empty = np.zeros((0, 0))
        if kind == "Linear":
            modules.append(
                Obj("modules.Linear", m=params[0], n=params[1], B=layer["B"][None], W=layer["W"], X=empty)
            )
        elif kind == "Convolution":
            modules.append(
                Obj(
                    "modules.Convolution",
                    filtersize=params[:4],
                    stride=params[4:],
                    W=layer["W"],
                    B=layer["B"][None],
                )
            )
        elif kind in ("SumPool", "MaxPool"):
            modules.append(Obj(f"modules.{kind}", stride=params[2:], pool=params[:2], Y=empty))
        else:
            modules.append(Obj(f"modules.{kind}", Y=empty))
    save_objects(path, "model", Obj("modules.Sequential", modules=modules))
    return path


def _check(path: Path, layers: list[dict], shape: tuple, tmp_path: Path, rules=RULES) -> dict[str, float]:
    output = tmp_path / f"{path.stem}.onnx"
    lt.convert_file(path, output)  # no input shape: inferred
    x = np.random.default_rng(1).uniform(0, 1, (4, *shape)).astype(np.float32)
    errors = {}
    for rule_id, (options, tb_rule, param, ref_options) in rules.items():
        for target in (None, np.array([1, 0, 1, 0])):
            result = onnxlrp.RelevanceSession(onnxlrp.compile(output, **options)).run(x, target=target)
            net = ref.Net(layers, **ref_options)
            logits, _ = net.forward(x)
            np.testing.assert_allclose(result["logits"], logits.reshape(len(x), -1), rtol=1e-5, atol=1e-5)
            want = net.lrp(net.seed(target), tb_rule, param)
            error = float(np.abs(result["relevance"] - want).max() / np.abs(want).max())
            errors[f"{rule_id}{'' if target is None else '-counterfactual'}"] = error
            assert error < 1e-5, f"{path.name} {rule_id} target {target}: relative error {error:.2e}"
    return errors


def test_lenet5_text_file_converts_without_an_input_shape(tmp_path):
    layers = _layers(LENET5, seed=5)
    _check(_write_txt(layers, tmp_path / "LeNet-5.txt"), layers, (32, 32, 1), tmp_path)


def test_lenet5_mat_file_equals_its_text_file(tmp_path):
    layers = _layers(LENET5, seed=5)
    text = lt.load_toolbox_model(_write_txt(layers, tmp_path / "LeNet-5.txt"))
    mat = lt.load_toolbox_model(_write_mat(layers, tmp_path / "LeNet-5.mat"))
    assert [(a.kind, a.params) for a in text] == [(b.kind, b.params) for b in mat]
    for a, b in zip(text, mat, strict=True):
        if a.W is not None:
            np.testing.assert_array_equal(a.W, b.W)
            np.testing.assert_array_equal(a.B, b.B)
    _check(tmp_path / "LeNet-5.mat", layers, (32, 32, 1), tmp_path, {"simple": RULES["simple"]})


def test_xor_text_file(tmp_path):
    layers = _layers(XOR, seed=2)
    _check(_write_txt(layers, tmp_path / "xor_net_small.txt"), layers, (2,), tmp_path)


@pytest.mark.parametrize("name", sorted(MLPS))
def test_mnist_mlp_mat_files(name, tmp_path):
    layers = _layers(MLPS[name], seed=len(name))
    _check(_write_mat(layers, tmp_path / f"{name}.mat"), layers, (784,), tmp_path)


def test_ww_is_the_toolbox_rule_and_wsquare_zennits(tmp_path):
    """ww has no bias term (the toolbox's w^2); wsquare/w2 add the squared bias (zennit's)."""
    layers = _layers(XOR, seed=3)
    path = _write_txt(layers, tmp_path / "xor.txt")
    model = lt.toolbox_to_onnx(lt.load_toolbox_model(path))
    x = np.random.default_rng(0).uniform(0, 1, (3, 2)).astype(np.float32)
    ww = onnxlrp.explain(model, x, rule="ww")
    wsquare = onnxlrp.explain(model, x, rule="wsquare")
    np.testing.assert_array_equal(onnxlrp.explain(model, x, rule="w2"), wsquare)
    net = ref.Net(layers)
    net.forward(x)
    want = net.lrp(net.seed(), "ww", None)
    assert np.abs(ww - want).max() <= 1e-5 * np.abs(want).max()
    assert np.abs(wsquare - want).max() > 1e-3 * np.abs(want).max()


def test_python_pickles_are_refused_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "long-rect.nn"
    path.write_bytes(pickle.dumps(Trap()))
    with pytest.raises(OnnxLrpError, match="never unpickle") as error:
        lt.convert_file(path, tmp_path / "out.onnx")
    assert "long-rect.nn" in str(error.value)
    assert not marker.exists()
    assert not (tmp_path / "out.onnx").exists()


REAL = Path(os.environ.get("LRP_TOOLBOX_MODELS", "/nonexistent"))


@pytest.mark.skipif(not REAL.is_dir(), reason="LRP_TOOLBOX_MODELS (the toolbox's models/ folder) is not set")
@pytest.mark.parametrize(
    ("relative", "shape"),
    [
        ("MNIST/LeNet-5.txt", (32, 32, 1)),
        ("MNIST/LeNet-5.mat", (32, 32, 1)),
        ("XOR/xor_net_small.txt", (2,)),
        *[(f"MNIST/{n}.mat", (784,)) for n in ("long-rect", "long-tanh", "short-rect", "short-tanh")],
    ],
)
def test_the_toolbox_real_files(relative, shape, tmp_path):
    path = REAL / relative
    if not path.exists():
        pytest.skip(f"{path} is absent")
    layers = ref.read_model(path) if path.suffix == ".txt" else _reference_layers(lt.load_toolbox_model(path))
    errors = _check(path, layers, shape, tmp_path)
    print(f"{relative}: {errors}")


@pytest.mark.skipif(not REAL.is_dir(), reason="LRP_TOOLBOX_MODELS (the toolbox's models/ folder) is not set")
@pytest.mark.parametrize("name", ["LeNet-5", "long-rect", "long-tanh", "short-rect", "short-tanh"])
def test_the_toolbox_real_pickles_are_refused(name, tmp_path):
    path = REAL / "MNIST" / f"{name}.nn"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with pytest.raises(OnnxLrpError, match="never unpickle"):
        lt.convert_file(path, tmp_path / "out.onnx")


def _reference_layers(layers: list) -> list[dict]:
    return [
        {"kind": ly.kind, "params": list(ly.params)}
        | ({"W": ly.W.astype(np.float64), "B": ly.B.astype(np.float64)} if ly.W is not None else {})
        for ly in layers
    ]
