"""Whole networks built in torch and exported to ONNX: the compiled relevance graph matches the
independent numpy reference (tests/reference.py) for every rule and composite.

Tolerance: max |compiled - reference| <= 1e-5 * max |reference| per relevance map (relative to
the map's scale; an element-wise relative error is meaningless where relevance crosses zero).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxlrp
from tests import nets, reference

RULES = {
    "epsilon=1": (dict(rule="epsilon", epsilon=1.0), ("epsilon", 1.0)),
    "epsilon=0.01": (dict(rule="epsilon", epsilon=0.01), ("epsilon", 0.01)),
    "lrp0": (dict(rule="lrp0"), ("lrp0",)),
    "alpha2beta1": (dict(rule="alphabeta", alpha=2.0, beta=1.0), ("alphabeta", 2.0, 1.0)),
    "alpha3beta2": (dict(rule="alphabeta", alpha=3.0, beta=2.0), ("alphabeta", 3.0, 2.0)),
    "zplus": (dict(rule="zplus"), ("zplus",)),
    "gamma": (dict(rule="gamma", gamma=0.25), ("gamma", 0.25)),
    "wsquare": (dict(rule="wsquare"), ("wsquare",)),
    "flat": (dict(rule="flat"), ("flat",)),
    "zbox": (dict(rule="zbox", low=-1.0, high=1.0), ("zbox", -1.0, 1.0)),
}
COMPOSITES = ["epsilon", "epsilon-plus", "epsilon-alpha2-beta1", "epsilon-plus-flat", "epsilon-gamma-box"]


def reference_rules(setting: str):
    """The reference's rule_for_node for a setting (a single rule or a composite)."""
    if setting in RULES:
        return reference.single_rule(RULES[setting][1])
    return reference.composite_rule_for_node(setting)


def compile_options(setting: str) -> dict:
    return RULES[setting][0] if setting in RULES else {"composite": setting}


def assert_close_to_reference(model_path, x, setting, target=None, **compile_extra):
    model = onnxlrp.compile(model_path, **compile_options(setting), **compile_extra)
    got = onnxlrp.RelevanceSession(model).run(x, target=target)
    want = reference.reference_lrp(
        str(model_path), x.astype(np.float64), reference_rules(setting), target=target
    )
    scale = np.abs(want["relevance"]).max()
    assert scale > 0
    error = np.abs(got["relevance"] - want["relevance"]).max()
    assert error <= 1e-5 * scale, f"{setting}: max error {error:.3g} vs scale {scale:.3g}"
    return got, want


@pytest.fixture(scope="module")
def paper_nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nets")
    paths = {}
    for name, module, shape in (
        ("mnist", nets.paper_mnist(), (1, 32, 32)),
        ("cifar", nets.paper_cifar(), (3, 32, 32)),
        ("vgg", nets.vgg_style(), (3, 32, 32)),
    ):
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.onnx"
        nets.export(module.eval(), shape, paths[name])
    return paths


def _inputs(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("setting", [*RULES, *COMPOSITES])
def test_paper_mnist_net(paper_nets, setting):
    assert_close_to_reference(paper_nets["mnist"], _inputs((1, 32, 32)), setting)


@pytest.mark.parametrize("setting", [*RULES, *COMPOSITES])
def test_vgg_style_net(paper_nets, setting):
    assert_close_to_reference(paper_nets["vgg"], _inputs((3, 32, 32)), setting)


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting", ["epsilon=1", "alpha3beta2", "zplus", "flat", "epsilon-plus", "epsilon-gamma-box"]
)
def test_paper_cifar_net(paper_nets, setting):
    assert_close_to_reference(paper_nets["cifar"], _inputs((3, 32, 32), n=1), setting)


def test_virtual_class_matches_reference(paper_nets):
    _, want = assert_close_to_reference(
        paper_nets["mnist"], _inputs((1, 32, 32)), "epsilon=1", target=np.array([4, 7])
    )
    assert list(want["target"]) == [4, 7]


def test_rules_by_type_and_name(paper_nets):
    """Precedence: by node name > by op type > first-layer rule > composite."""
    path = paper_nets["vgg"]
    model = onnxlrp.compile(
        path,
        composite="epsilon-plus-flat",
        rules_by_type={"Gemm": "alphabeta"},
        rules_by_name={"/0/Conv": onnxlrp.rules.Epsilon(0.1), "/9/Gemm": onnxlrp.rules.WSquare()},
    )
    composite = reference.composite_rule_for_node("epsilon-plus-flat")

    def rule_for_node(node, is_first):
        if node.name == "/0/Conv":
            return ("epsilon", 0.1)
        if node.name == "/9/Gemm":
            return ("wsquare",)
        if node.op_type == "Gemm":
            return ("alphabeta", 2.0, 1.0)
        return composite(node, is_first)

    x = _inputs((3, 32, 32))
    got = onnxlrp.RelevanceSession(model).run(x)["relevance"]
    want = reference.reference_lrp(str(path), x.astype(np.float64), rule_for_node)["relevance"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    with pytest.raises(ValueError, match="names no node that takes a rule: nope"):
        onnxlrp.compile(path, rules_by_name={"nope": "flat"})


def test_relu_inputs_stabilised_only_where_safe(paper_nets):
    """Below a ReLU whose output's relevance vanishes where it is zero, epsilon divides by Relu(z) + eps
    (no sign test). A flat rule above the ReLU breaks that (it spreads relevance onto zero inputs): the
    layer below must keep z + eps * sign(z). Both match the reference."""
    path = paper_nets["vgg"]
    model = onnx.load(str(path))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    linear = sum(n.op_type in ("Conv", "Gemm") for n in model.graph.node)
    x = _inputs((3, 32, 32))

    plain = onnxlrp.compile(path, rule="epsilon")
    sign_tests = sum(n.op_type == "Clip" for n in plain.graph.node)  # the sign select
    assert sign_tests < linear - 1  # most layers feed a ReLU
    assert_close_to_reference(path, x, "epsilon")

    flat_above = onnxlrp.compile(path, rule="epsilon", rules_by_name={convs[1]: "flat"})
    assert sum(n.op_type == "Clip" for n in flat_above.graph.node) == sign_tests + 1

    def rule_for_node(node, is_first):
        return ("flat",) if node.name == convs[1] else ("epsilon", 1.0)

    got = onnxlrp.RelevanceSession(flat_above).run(x)["relevance"]
    want = reference.reference_lrp(str(path), x.astype(np.float64), rule_for_node)["relevance"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
