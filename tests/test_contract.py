"""The relevance graph's contract: inputs, outputs, targets, start, expose, dynamic batch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import onnxlrp
from onnxlrp import loading
from tests import nets


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    torch.manual_seed(0)
    module = nets.paper_mnist().eval()
    path = tmp_path_factory.mktemp("lenet") / "lenet.onnx"
    nets.export(module, (1, 32, 32), path)
    return module, path


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(1).uniform(-1, 1, (5, 1, 32, 32)).astype(np.float32)


def test_graph_interface(lenet):
    model = onnxlrp.compile(lenet[1], rule="epsilon", expose=["/0/Conv_output_0"])
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.ir_version == 8  # the lowest IR that opset 17 allows: onnxruntime 1.15 reads it
    assert [i.name for i in model.graph.input] == ["input", "target"]
    target = model.graph.input[1].type.tensor_type
    assert target.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param or d.dim_value for d in target.shape.dim] == ["N"]
    # a plain input: no default initializer (other runtimes do not list such an input)
    assert "target" not in {t.name for t in model.graph.initializer}
    assert [o.name for o in model.graph.output] == ["relevance", "logits", "relevance:/0/Conv_output_0"]
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}


def test_no_warnings_when_a_session_is_created(lenet, batch, capfd):
    import onnxruntime as ort

    model = onnxlrp.compile(lenet[1], rule="epsilon")
    capfd.readouterr()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "target"]
    session.run(None, {"input": batch, "target": np.full(len(batch), -1, np.int64)})
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_default_target_is_argmax(lenet, batch):
    session = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], rule="epsilon"))
    default = session.run(batch)
    predicted = default["logits"].argmax(1)
    explicit = session.run(batch, target=predicted)
    minus_one = session.run(batch, target=np.full(len(batch), -1))
    np.testing.assert_array_equal(default["relevance"], explicit["relevance"])
    np.testing.assert_array_equal(default["relevance"], minus_one["relevance"])


def test_counterfactual_and_mixed_targets(lenet, batch):
    session = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], rule="lrp0"))
    logits = session.run(batch)["logits"]
    mixed = np.array([3, 5, -1, 0, 9])
    out = session.run(batch, target=mixed)
    for i, target in enumerate(mixed):
        single = session.run(batch[i : i + 1], target=[target])["relevance"][0]
        np.testing.assert_allclose(out["relevance"][i], single, rtol=1e-5, atol=1e-7)
    wanted = np.where(mixed < 0, logits.argmax(1), mixed)
    # a virtual class gets relevance of its own: different maps for different targets
    assert not np.allclose(out["relevance"][0], session.run(batch[:1], target=[5])["relevance"][0])
    assert (wanted == out["logits"].argmax(1)).sum() >= 1


def test_onehot_seed_scales_by_logit(lenet, batch):
    by_logit = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], rule="lrp0", seed="logit")).run(
        batch, target=2
    )
    unit = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], rule="lrp0", seed="onehot")).run(
        batch, target=2
    )
    scale = by_logit["logits"][:, 2]
    # LRP-0 is linear in the seed
    np.testing.assert_allclose(
        by_logit["relevance"], unit["relevance"] * scale[:, None, None, None], rtol=1e-4, atol=1e-7
    )


def test_batch_1_and_64_from_one_graph(lenet):
    session = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], composite="epsilon-plus"))
    x = np.random.default_rng(2).uniform(-1, 1, (64, 1, 32, 32)).astype(np.float32)
    big = session.run(x)["relevance"]
    for i in (0, 17, 63):
        np.testing.assert_allclose(session.run(x[i : i + 1])["relevance"][0], big[i], rtol=1e-5, atol=1e-7)


def test_start_at_inner_neuron_matches_gradient(tmp_path):
    """Relevance 1 at one neuron of an inner layer: with LRP-0 on a bias-free ReLU net,
    R_x = x * d(a_j)/dx / a_j (torch autograd)."""
    torch.manual_seed(3)
    module = nets.paper_mnist(bias=False).eval()
    path = tmp_path / "lenet_nobias.onnx"
    nets.export(module, (1, 32, 32), path)
    inner = "/4/Relu_output_0"  # second conv's ReLU: [N, 25, 10, 10]
    model = onnxlrp.compile(path, rule="lrp0", start=inner)
    assert [o.name for o in model.graph.output] == ["relevance", inner]
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    session = onnxlrp.RelevanceSession(model)
    activation = module[:5](x).detach().numpy()
    j = np.unravel_index(np.argmax(activation[0]), activation.shape[1:])
    seed = np.zeros_like(activation)
    seed[(slice(None), *j)] = 1.0
    out = session.run(x.numpy(), relevance_seed=seed)
    np.testing.assert_allclose(out[inner], activation, rtol=1e-5, atol=1e-6)
    xg = x.clone().requires_grad_()
    module[:5](xg)[(slice(None), *j)].sum().backward()
    for i in range(2):
        a = activation[(i, *j)]
        if a > 1e-3:
            expected = (xg.grad[i] * x[i]).numpy() / a
            np.testing.assert_allclose(out["relevance"][i], expected, rtol=1e-4, atol=1e-6)
            assert abs(out["relevance"][i].sum() - 1.0) < 1e-4


def test_expose_all_is_conserved_without_bias(tmp_path):
    torch.manual_seed(4)
    path = tmp_path / "nobias.onnx"
    nets.export(nets.paper_mnist(bias=False).eval(), (1, 32, 32), path)
    model = onnxlrp.compile(path, rule="epsilon", epsilon=1e-9, expose=["all"])
    exposed = [o.name for o in model.graph.output if o.name.startswith("relevance:")]
    assert len(exposed) == 11  # every tensor on the path but the input: 3 x (conv, relu, pool), conv, flatten
    x = np.random.default_rng(5).uniform(-1, 1, (3, 1, 32, 32)).astype(np.float32)
    out = onnxlrp.RelevanceSession(model).run(x)
    total = out["logits"].max(1)
    for name in [*exposed, "relevance"]:
        np.testing.assert_allclose(out[name].reshape(3, -1).sum(1), total, rtol=1e-4, err_msg=name)


def test_expose_unknown_tensor_is_refused(lenet):
    with pytest.raises(onnxlrp.UnsupportedModelError, match="no relevance reaches"):
        onnxlrp.compile(lenet[1], expose=["nope"])


def test_fixed_batch_export_gets_a_dynamic_batch(tmp_path):
    """A model exported with batch size 1 fixed (and a Reshape hard-coding it) explains any batch."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).reshape(1, -1))

    torch.manual_seed(0)
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(
        Net().eval(),
        torch.zeros(1, 1, 8, 8),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
    )
    fixed = onnx.load(str(path))
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    session = onnxlrp.RelevanceSession(onnxlrp.compile(path, rule="epsilon"))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    batch = session.run(x)
    for i in range(4):
        single = session.run(x[i : i + 1])
        np.testing.assert_allclose(batch["relevance"][i], single["relevance"][0], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(batch["logits"][i], single["logits"][0], rtol=1e-5, atol=1e-6)


def test_compile_leaves_the_callers_model_alone(lenet):
    """The relevance graph is built in place in a copy: the ModelProto passed in stays as it was, and
    compiling it or its file gives the same graph."""
    proto = onnx.load(str(lenet[1]))
    before = proto.SerializeToString()
    from_proto = onnxlrp.compile(proto, composite="epsilon-plus", expose=["all"])
    assert proto.SerializeToString() == before
    from_file = onnxlrp.compile(lenet[1], composite="epsilon-plus", expose=["all"])
    assert from_proto.SerializeToString() == from_file.SerializeToString()


def test_equal_weights_are_stored_once(tmp_path):
    """A weight the relevance graph needs again (a strided conv's transpose, a dense layer's W^T) reuses
    the stored initializer: no two initializers of the result hold the same values, and a derived weight
    (W+, W-) is computed from the stored one by nodes over initializers only (folded at session start)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 4)
    ).eval()
    path = tmp_path / "strided.onnx"
    nets.export(module, (3, 16, 16), path)
    for kwargs in ({"rule": "epsilon"}, {"composite": "epsilon-plus"}):
        model = onnxlrp.compile(path, **kwargs)
        contents = [
            (tuple(t.dims), onnx.numpy_helper.to_array(t).tobytes())
            for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT
        ]
        assert len(contents) == len(set(contents)), kwargs
        transposes = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
        forward_weight = next(n for n in model.graph.node if n.op_type == "Conv").input[1]
        if "rule" in kwargs:  # epsilon: the transpose uses the forward conv's own weight
            assert [n.input[1] for n in transposes] == [forward_weight]
        assert transposes and all(_from_initializers(model, n.input[1]) for n in transposes)


def _from_initializers(model: onnx.ModelProto, name: str) -> bool:
    """Whether tensor ``name`` is an initializer or computed from initializers alone."""
    producers = {out: node for node in model.graph.node for out in node.output}
    stored = {t.name for t in model.graph.initializer}

    def constant(tensor: str) -> bool:
        return tensor in stored or (tensor in producers and all(map(constant, producers[tensor].input)))

    return constant(name)


def test_initializers_listed_as_inputs(lenet, batch):
    """Older exporters list every initializer among the graph inputs too; such a model compiles to the
    same relevance."""
    proto = onnx.load(str(lenet[1]))
    declared = {i.name for i in proto.graph.input}
    for init in proto.graph.initializer:
        if init.name not in declared:
            proto.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    old_style = onnxlrp.RelevanceSession(onnxlrp.compile(proto, rule="epsilon")).run(batch)["relevance"]
    plain = onnxlrp.RelevanceSession(onnxlrp.compile(lenet[1], rule="epsilon")).run(batch)["relevance"]
    np.testing.assert_allclose(old_style, plain, rtol=1e-6, atol=1e-9)


def test_models_over_the_protobuf_limit_use_external_data(lenet, batch, tmp_path, monkeypatch):
    """Relevance graphs over protobuf's 2 GB limit are saved with their weights in <name>.data, run
    from memory through such a file, and load back (the limit is lowered here to test it); forward
    models with external data compile."""
    compiled = onnxlrp.compile(lenet[1], rule="epsilon")
    expected = onnxlrp.RelevanceSession(compiled).run(batch)["relevance"]
    before = onnx.ModelProto()
    before.CopyFrom(compiled)

    monkeypatch.setattr(loading, "PROTOBUF_LIMIT", 10_000)
    saved = loading.save_model(compiled, tmp_path / "big.lrp.onnx")
    assert compiled == before  # the caller's model keeps its weights
    assert (tmp_path / "big.lrp.onnx.data").stat().st_size > saved.stat().st_size
    with pytest.raises(onnxlrp.OutputExistsError):
        loading.save_model(compiled, saved)
    for source in (saved, compiled):
        np.testing.assert_array_equal(onnxlrp.RelevanceSession(source).run(batch)["relevance"], expected)
    assert loading.load_model(saved) == before

    external = tmp_path / "forward.onnx"
    onnx.save_model(onnx.load(str(lenet[1])), str(external), save_as_external_data=True, location="w.bin")
    relevance = onnxlrp.RelevanceSession(onnxlrp.compile(external, rule="epsilon")).run(batch)["relevance"]
    np.testing.assert_array_equal(relevance, expected)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(onnxlrp.ModelLoadError, match="external weight data"):
        onnxlrp.compile(external)
