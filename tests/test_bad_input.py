"""Bad input gets a clear error naming the problem, and nothing is written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxlrp
from onnxlrp.cli import main


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def unsupported_model() -> onnx.ModelProto:
    """Gemm -> Erf -> Cos -> Gemm: two unsupported nodes on the relevance path (an Erf inside a
    GELU, x * f(x), is supported; on its own it is not)."""
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    return _model(
        [
            helper.make_node("Gemm", ["x", "w"], ["a"], name="fc1"),
            helper.make_node("Erf", ["a"], ["b"], name="strange_erf"),
            helper.make_node("Cos", ["b"], ["c"], name="strange_cos"),
            helper.make_node("Gemm", ["c", "w"], ["y"], name="fc2"),
        ],
        [_float("x", ["N", 4])],
        [_float("y", ["N", 4])],
        [w],
    )


def test_unsupported_ops_are_all_listed():
    with pytest.raises(onnxlrp.UnsupportedModelError) as error:
        onnxlrp.compile(unsupported_model())
    message = str(error.value)
    assert "node 'strange_erf': op Erf" in message
    assert "Supported operators:" in message and "Conv" in message


def test_quotient_of_activations_names_the_node():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    model = _model(
        [
            helper.make_node("Gemm", ["x", "w"], ["a"], name="fc1"),
            helper.make_node("Gemm", ["x", "w"], ["b"], name="fc2"),
            helper.make_node("Div", ["a", "b"], ["y"], name="ratio"),
        ],
        [_float("x", ["N", 4])],
        [_float("y", ["N", 4])],
        [w],
    )
    with pytest.raises(onnxlrp.UnsupportedModelError, match=r"'ratio' \(Div\)"):
        onnxlrp.compile(model)


def test_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.onnx"
    onnx.save(unsupported_model(), str(good))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    for path in (truncated, text, tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(onnxlrp.ModelLoadError, match=str(path.name)):
            onnxlrp.compile(path)


def test_model_without_float_input():
    model = _model(
        [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT, name="cast")],
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 3])],
        [_float("y", ["N", 3])],
    )
    with pytest.raises(onnxlrp.ModelLoadError, match=r"no float input.*embedding lookup.*'ids' \(INT64\)"):
        onnxlrp.compile(model)


def test_cli_refuses_existing_output_and_writes_nothing(tmp_path, capsys):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    model = _model(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")],
        [_float("x", ["N", 4])],
        [_float("y", ["N", 3])],
        [w],
    )
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src))
    out = tmp_path / "m.lrp.onnx"
    out.write_bytes(b"precious")
    assert main(["compile", str(src)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lrp.onnx", "m.onnx"]
    assert main(["compile", str(src), "--force"]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_cli_unsupported_model_writes_nothing(tmp_path, capsys):
    src = tmp_path / "bad.onnx"
    onnx.save(unsupported_model(), str(src))
    assert main(["compile", str(src)]) == 2
    assert "strange_erf" in capsys.readouterr().err
    assert not (tmp_path / "bad.lrp.onnx").exists()


def test_inspect_marks_unsupported_nodes(tmp_path, capsys):
    src = tmp_path / "bad.onnx"
    onnx.save(unsupported_model(), str(src))
    assert main(["inspect", str(src)]) == 1
    out = capsys.readouterr().out
    assert "strange_erf" in out and "NO" in out


def test_output_without_declared_shape_compiles(tmp_path):
    """onnxruntime runs a model whose output has no shape (onnx's checker wants one): the relevance
    graph declares the shape onnxruntime computes, and agrees with the same model fully declared."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) - 5, "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")]
    bare = _model(
        nodes, [_float("x", ["N", 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w]
    )
    declared = _model(nodes, [_float("x", ["N", 4])], [_float("y", ["N", 3])], [w])
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    graph = onnxlrp.compile(bare, rule="epsilon")
    onnx.checker.check_model(graph, full_check=True)
    got = onnxlrp.RelevanceSession(graph).run(x)
    want = onnxlrp.RelevanceSession(onnxlrp.compile(declared, rule="epsilon")).run(x)
    np.testing.assert_array_equal(got["relevance"], want["relevance"])
    src = tmp_path / "bare.onnx"
    onnx.save(bare, str(src))
    assert main(["compile", str(src)]) == 0


def test_shapes_onnx_and_onnxruntime_disagree_on_name_the_tensor(tmp_path, capsys):
    """A ceil_mode window that starts in the end padding: onnx counts it (4x5), onnxruntime does not
    (4x4), and a graph sized by one fails the other's check. One line naming the tensor, no file."""
    pool = helper.make_node(
        "MaxPool",
        ["x"],
        ["pooled"],
        name="pool",
        kernel_shape=[3, 2],
        strides=[3, 2],
        pads=[1, 0, 1, 1],
        ceil_mode=1,
    )
    model = _model(
        [pool, helper.make_node("Flatten", ["pooled"], ["y"], name="flat")],
        [_float("x", [1, 2, 9, 8])],
        [_float("y", [1, None])],
    )
    with pytest.raises(onnxlrp.UnsupportedModelError, match=r"'pooled'.*ceil_mode"):
        onnxlrp.compile(model, rule="epsilon")
    src = tmp_path / "pool.onnx"
    onnx.save(model, str(src))
    assert main(["compile", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'pooled'" in err[0]
    assert not (tmp_path / "pool.lrp.onnx").exists()
