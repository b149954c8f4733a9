"""What the figures share: settings, image sources, graph helpers and cached relevance sessions."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import heatmap
from onnxlrp.datasets import CifarJpeg, dataset_file
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import ModelHandle, compile_session, neuron_relevance, run_batched
from onnxlrp.inputs import read_image
from onnxlrp.ops import has_fact

MNIST_STRONG, MNIST_WEAK = "mnist-lenet5", "mnist-lenet5-weak"
CIFAR_MODELS = ("cifar10-paper", "cifar10-resnet")
CIFAR_VIT = "cifar10-vit"
EPSILON = {"rule": "epsilon", "epsilon": 1.0}
FIG2_RULES = [
    ("epsilon (eps=1)", {"rule": "epsilon", "epsilon": 1.0}),
    ("alpha-beta 3/2", {"rule": "alphabeta", "alpha": 3.0, "beta": 2.0}),
    ("alpha-beta 2/1", {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0}),
    ("alpha-beta 1/0 (z+)", {"rule": "zplus"}),
    ("LRP-0", {"rule": "lrp0"}),
]
NEURON_RULE = {"rule": "alphabeta", "alpha": 2.0, "beta": 1.0}
CENTRE = (8, 24)  # the central box [8:24, 8:24] of a 32x32 image
HORSE, AUTOMOBILE = 7, 1


@dataclass
class Figure:
    key: str
    file: str
    caption: str


@dataclass
class Settings:
    quick: bool = False
    seed: int = 0
    mnist_pool: int = 2000  # test images searched for the digits
    crit_images: int = 12  # CIFAR images for the neuron criterion
    candidates: int = 24  # units whose inside share is computed
    class_images: int = 5  # horses / cars in Fig. 8
    n_object: int = 3  # object neurons shown
    crp_images: int | None = None  # test images scanned for the concept atlas (None: all)
    crp_top: int = 8  # reference images per channel in the atlas
    neuron_rule: dict[str, Any] = field(default_factory=lambda: dict(NEURON_RULE))
    batch_size: int = 256
    log: Callable[[str], object] = print
    figures: list[Figure] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool, seed: int = 0, log: Callable[[str], object] = print) -> Settings:
        """The full settings, or the quick ones (fewer images, for tests)."""
        if quick:
            return cls(
                quick=True,
                seed=seed,
                mnist_pool=300,
                crit_images=2,
                candidates=3,
                class_images=2,
                n_object=1,
                crp_images=200,
                crp_top=2,
                neuron_rule=dict(EPSILON),
                log=log,
            )
        return cls(seed=seed, log=log)


# ----------------------------------------------------------------------------- data
def _zoo_samples(name: str) -> tuple[list[np.ndarray], np.ndarray]:
    """uint8 images and labels of the zoo's labelled samples of model ``name``."""
    from onnxlrp import zoo

    entries = zoo.samples(name)
    images = [read_image(zoo.zoo_dir() / e["file"]) for e in entries]
    return images, np.array([int(e["label"]) for e in entries], dtype=np.int64)


def mnist_test(limit: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    """The first ``limit`` MNIST test images and labels, or the zoo's samples; and their source."""
    path = dataset_file("mnist")
    if path.is_file():
        with np.load(path) as data:
            return list(data["x_test"][:limit]), data["y_test"][:limit].astype(np.int64), "MNIST test split"
    images, labels = _zoo_samples(MNIST_STRONG)
    return images, labels, "zoo samples"


class CifarSource:
    """CIFAR-10 test images, decoded on demand (the JPEG copy), or the zoo's samples."""

    def __init__(self) -> None:
        path = dataset_file("cifar10")
        self.split: CifarJpeg | None = None
        self.images: list[np.ndarray] = []
        if path.is_file():
            self.split = CifarJpeg(path)
            self.labels = self.split.labels
            self.name = "CIFAR-10 test split"
        else:
            self.images, self.labels = _zoo_samples(CIFAR_MODELS[0])
            self.name = "zoo samples"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        return self.split.image(i) if self.split is not None else self.images[i]


# ----------------------------------------------------------------------------- graph helpers
def conv_outputs(handle: ModelHandle) -> list[str]:
    return [n.output[0] for n in handle.model.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def pool_after(handle: ModelHandle, tensor: str) -> str | None:
    """The output of the first pooling node downstream of ``tensor`` through single-input
    pass-through ops (Relu, ...), or None."""
    consumers: dict[str, list] = {}
    for node in handle.model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    current = tensor
    for _ in range(8):
        nodes = consumers.get(current, [])
        if len(nodes) != 1:
            return None
        node = nodes[0]
        if has_fact(node.op_type, "pool"):
            return node.output[0]
        if node.op_type not in ("Relu", "LeakyRelu", "Dropout", "Identity", "Sigmoid", "Tanh"):
            return None
        current = node.output[0]
    return None


def last_pool_output(handle: ModelHandle) -> str:
    pools = [n.output[0] for n in handle.model.graph.node if has_fact(n.op_type, "pool")]
    if not pools:
        raise OnnxLrpError(f"{handle.name}: no pooling layer")
    return pools[-1]


# ----------------------------------------------------------------------------- relevance helpers
class Relevance:
    """Compiled sessions cached per (model, settings), and small wrappers over them."""

    def __init__(self, batch_size: int = 256) -> None:
        self.cache: dict = {}
        self.batch_size = batch_size

    def session(self, handle: ModelHandle, ckw: dict, start=None, expose=()):
        key = (handle.name, json.dumps(ckw, sort_keys=True), start, tuple(expose))
        if key not in self.cache:
            self.cache[key] = compile_session(handle, ckw, start=start, expose=expose)
        return self.cache[key]

    def explain(self, handle, x, ckw, target=None, expose=()) -> dict:
        target = None if target is None else np.asarray(target, dtype=np.int64).reshape(-1)
        session = self.session(handle, ckw, expose=expose)
        return run_batched(session.run, x, batch_size=self.batch_size, target=target)

    def neurons(self, handle, x, tensor: str, units, ckw, shape) -> np.ndarray:
        """[N, K, C, H, W]: input relevance of 1 at channel ``units[k]`` of ``tensor``."""
        session = self.session(handle, ckw, start=tensor)
        return neuron_relevance(session, x, shape, [(int(u),) for u in units], self.batch_size)


def _heat(relevance: np.ndarray) -> np.ndarray:
    return heatmap.channel_sum(relevance)


def _disp(handle: ModelHandle, x: np.ndarray) -> np.ndarray:
    return heatmap.display_image(
        x, handle.low if handle.low is not None else -1.0, handle.high if handle.high is not None else 1.0
    )


def inside_share(heat: np.ndarray, box=CENTRE) -> float:
    """sum |R| in the central box / sum |R| (heat [H, W]; nan when all zero)."""
    mag = np.abs(heat)
    total = mag.sum()
    lo, hi = box
    return float(mag[lo:hi, lo:hi].sum() / total) if total > 0 else float("nan")


# ----------------------------------------------------------------------------- output
def _save(out: Path, st: Settings, key: str, name: str, rows, title: str, caption: str) -> None:
    heatmap.render_panels(out / name, rows, title)
    st.figures.append(Figure(key, name, caption))
