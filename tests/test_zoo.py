"""The model zoo: files match the manifest, preprocessing matches training, accuracies are reproducible.

Tests marked ``datasets`` need ../shared/datasets (skipped when absent). The full CIFAR-10 test-set
accuracy check takes a few minutes on 2 cores; ONNXLRP_ZOO_QUICK=1 skips it for quick local runs
(the stated subset, the first 30 test images of each class, is always checked too).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxlrp import zoo
from onnxlrp.explaining import load_model
from onnxlrp.inputs import InputError, load_inputs

REPO = Path(__file__).resolve().parent.parent
ZOO = zoo.zoo_dir()
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
MODELS = list(MANIFEST["models"])
DATASETS = Path(os.environ.get("ONNXLRP_DATASETS", REPO.parent / "shared" / "datasets"))
needs_datasets = pytest.mark.skipif(
    not DATASETS.is_dir(), reason=f"datasets folder {DATASETS} is absent (set ONNXLRP_DATASETS)"
)
ALLOWED_OPS = {
    "Conv", "BatchNormalization", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Add", "Flatten", "Reshape", "Gemm", "MatMul", "Mul",
}  # fmt: skip
# the ViT adds attention, LayerNorm, GELU (Erf), the class token (Expand, Concat) and the
# Shape-driven reshapes of the TorchScript exporter
TRANSFORMER_OPS = ALLOWED_OPS | {
    "LayerNormalization", "Softmax", "Erf", "Div", "Transpose", "Concat", "Expand", "Gather",
    "Shape", "Slice", "Unsqueeze", "Constant", "ConstantOfShape", "Equal", "Where", "Cast",
}  # fmt: skip
CIFAR_MODELS = [name for name, entry in MANIFEST["models"].items() if entry["dataset"] == "cifar10"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    sess = session(path)
    return np.concatenate(
        [sess.run(["logits"], {"input": x[k : k + batch]})[0] for k in range(0, len(x), batch)]
    )


# ----------------------------------------------------------------------------- files and manifest
def test_every_zoo_file_matches_the_manifest():
    listed = set()
    for entry in MANIFEST["models"].values():
        assert sha256(ZOO / entry["file"]) == entry["sha256"], entry["file"]
        listed.add(entry["file"])
    for entries in MANIFEST["samples"].values():
        for s in entries:
            assert sha256(ZOO / s["file"]) == s["sha256"], s["file"]
            listed.add(s["file"])
    files = [p for p in ZOO.rglob("*") if p.is_file() and p.relative_to(ZOO).parts[0] != "training"]
    on_disk = {p.relative_to(ZOO).as_posix() for p in files} - {"manifest.json", "README.md"}
    assert on_disk == listed, "zoo files not in the manifest, or missing"
    total = sum(p.stat().st_size for p in files)
    assert total < 30e6


@pytest.mark.parametrize("name", MODELS)
def test_model_interface(name):
    m = zoo.load(name)
    graph = m.model.graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value"), "batch dimension must be dynamic"
    assert [d.dim_value for d in dims[1:]] == list(m.input_shape)
    assert m.model.ir_version <= 10
    onnx.checker.check_model(m.model)
    allowed = TRANSFORMER_OPS if "patch_tokens" in m.info else ALLOWED_OPS
    assert {n.op_type for n in graph.node} <= allowed
    assert (m.low, m.high) == (-1.0, 1.0)
    assert len(m.classes) == 10
    out = logits(m.path, np.zeros((3, *m.input_shape), np.float32))
    assert out.shape == (3, 10)


def test_accuracy_targets():
    acc = {name: e["accuracy"]["test_accuracy"] for name, e in MANIFEST["models"].items()}
    assert acc["mnist-lenet5"] >= 0.992
    assert 0.38 <= acc["mnist-lenet5-weak"] <= 0.46
    assert 0.68 <= acc["cifar10-paper"] <= 0.75
    assert acc["cifar10-resnet"] >= 0.90
    assert acc["cifar10-vit"] >= 0.60  # trained for 35 minutes on one shared CPU core
    for entry in MANIFEST["models"].values():
        a = entry["accuracy"]
        assert a["test_correct"] / a["test_total"] == a["test_accuracy"]
        assert entry["training"]["command"] and "seed" in entry["training"]


def test_list_resolve_and_cli(capsys):
    rows = zoo.list_models()
    assert [r["name"] for r in rows] == MODELS
    assert zoo.resolve_model("cifar10-paper") == ZOO / "cifar10-paper.onnx"
    assert zoo.resolve_model(ZOO / "mnist-lenet5.onnx") == ZOO / "mnist-lenet5.onnx"
    with pytest.raises(zoo.ZooError):
        zoo.resolve_model("no-such-model")
    from onnxlrp.cli import zoo_cmd

    assert zoo_cmd.run(type("Args", (), {"samples": True})()) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)


def test_sample_rules():
    mnist = MANIFEST["samples"]["mnist"]
    labels = {s["label"] for s in mnist}
    assert {2, 9, 6} <= labels
    ambiguous = [s for s in mnist if "ambiguous" in s["rule"]]
    assert len(ambiguous) == 1 and ambiguous[0]["label"] in (3, 5)
    top2 = np.argsort(ambiguous[0]["predictions"]["mnist-lenet5"]["logits"])[-2:]
    assert set(top2.tolist()) == {3, 5}
    cifar = MANIFEST["samples"]["cifar10"]
    for cls in ("horse", "automobile", "cat"):
        assert sum(s["class"] == cls for s in cifar) >= 3
    assert len(zoo.sample_paths("cifar10-resnet")) == len(cifar)


# ----------------------------------------------------------------------------- preprocessing
def _training_pipeline(dataset: str, png: Path) -> np.ndarray:
    """The input the training code would have built from this image (torch code in zoo/training)."""
    torch = pytest.importorskip("torch")
    from PIL import Image

    from zoo.training.zoo_models import cifar_preprocess, mnist_preprocess

    image = np.asarray(Image.open(png))
    if dataset == "mnist":
        return mnist_preprocess(image[None])
    from zoo.training.gpu_train_cifar import GpuImages

    x_torch = GpuImages.to_float(torch.from_numpy(image[None].copy())).contiguous().numpy()
    np.testing.assert_array_equal(x_torch, cifar_preprocess(image[None]))
    return x_torch


@pytest.mark.parametrize("name", MODELS)
def test_sample_preprocessing_matches_training(name):
    m = zoo.load(name)
    entries = zoo.samples(name)
    paths = zoo.sample_paths(name)
    ours = np.concatenate([m.preprocess(p) for p in paths])
    theirs = np.concatenate([_training_pipeline(m.dataset, p) for p in paths])
    assert ours.shape == (len(paths), *m.input_shape) and ours.dtype == np.float32
    assert ours.min() >= m.low and ours.max() <= m.high
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    z_ours, z_theirs = logits(m.path, ours), logits(m.path, theirs)
    np.testing.assert_allclose(z_ours, z_theirs, rtol=0, atol=1e-5)
    recorded = np.array([s["predictions"][name]["logits"] for s in entries])
    np.testing.assert_allclose(z_ours, recorded, atol=2e-3)
    # other accepted inputs: PIL image, uint8 array, a batch, load_inputs
    from PIL import Image

    with Image.open(paths[0]) as im:
        np.testing.assert_array_equal(m.preprocess(im), ours[:1])
        array = np.asarray(im)
    np.testing.assert_array_equal(m.preprocess(array), ours[:1])
    np.testing.assert_array_equal(m.preprocess(np.stack([array, array])), ours[[0, 0]])
    np.testing.assert_array_equal(load_inputs(load_model(m.name), paths[:2]).x, ours[:2])


def test_load_inputs_npy(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_inputs(None, [tmp_path / "x.npy"]).x, x)
    with pytest.raises(InputError):
        load_inputs(None, [ZOO / MANIFEST["samples"]["mnist"][0]["file"]])  # an image needs a model


# ----------------------------------------------------------------------------- accuracy on the data sets
def _mnist_test():
    with np.load(DATASETS / "mnist.npz") as d:
        return d["x_test"], d["y_test"].astype(np.int64)


def _cifar_test(index: np.ndarray | None = None):
    from PIL import Image

    with np.load(DATASETS / "cifar10_jpeg.npz") as d:
        jpeg, offsets, labels = d["test_jpeg"], d["test_offsets"], d["test_labels"].astype(np.int64)
    if index is None:
        index = np.arange(len(labels))
    images = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB"))
            for i in index
        ]
    )
    return images, labels[index]


@pytest.mark.datasets
@needs_datasets
@pytest.mark.parametrize("name", ["mnist-lenet5", "mnist-lenet5-weak"])
def test_mnist_accuracy_matches_manifest(name):
    m = zoo.load(name)
    images, labels = _mnist_test()
    correct = int((logits(m.path, m.preprocess(images)).argmax(1) == labels).sum())
    assert correct == MANIFEST["models"][name]["accuracy"]["test_correct"]


@pytest.mark.datasets
@needs_datasets
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_subset_accuracy_matches_manifest(name):
    check = MANIFEST["models"][name]["accuracy"]["subset_check"]
    per_class = check["per_class"]
    with np.load(DATASETS / "cifar10_jpeg.npz") as d:
        all_labels = d["test_labels"]
    index = np.sort(np.concatenate([np.flatnonzero(all_labels == c)[:per_class] for c in range(10)]))
    images, labels = _cifar_test(index)
    m = zoo.load(name)
    correct = int((logits(m.path, m.preprocess(images), batch=100).argmax(1) == labels).sum())
    assert (correct, len(index)) == (check["correct"], check["total"])


@pytest.mark.datasets
@pytest.mark.slow
@needs_datasets
@pytest.mark.skipif(
    os.environ.get("ONNXLRP_ZOO_QUICK") == "1", reason="ONNXLRP_ZOO_QUICK=1 skips the full test set"
)
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_full_accuracy_matches_manifest(name):
    images, labels = _cifar_test()
    m = zoo.load(name)
    correct = int((logits(m.path, m.preprocess(images), batch=500).argmax(1) == labels).sum())
    assert correct == MANIFEST["models"][name]["accuracy"]["test_correct"]
