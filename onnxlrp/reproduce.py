"""Regenerate the seed paper's figures from the zoo models.

Sakai, Kameya, Sota, Arie: "Visualizing the Behavior of the Inner Layers of Convolutional Neural
Networks by Layer-wise Relevance Propagation". ``reproduce(out)`` writes every figure as a PNG,
the neuron-selection criterion as JSON/CSV, and an ``index.html`` with a one-line caption per
figure (what it shows, with which model and rule).

Images come from the MNIST / CIFAR-10 test splits (``$ONNXLRP_DATASETS`` or ../shared/datasets)
when present, else from the zoo's labelled samples. Every choice is a stated rule (first
correctly classified test image of a class, ...) or a seeded permutation, so runs are
deterministic.

Neuron selection (Figs. 7-9), computed per CIFAR model:
1. candidates: the ``candidates`` units of the last pooling layer with the largest mean
   relevance (epsilon rule, target = predicted class) over the criterion images;
2. for each candidate unit u and image n, the input relevance R of "relevance 1 at u, 0
   elsewhere" (explain --neuron), summed over colour channels; inside share =
   sum |R| in the central 16x16 box / sum |R| over the 32x32 image (uniform relevance: 0.25);
3. "object" neurons: the highest mean inside share; "background" neuron: the lowest.
"""

from __future__ import annotations

import csv
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxlrp import augment as aug
from onnxlrp import heatmap
from onnxlrp.datasets import CifarJpeg, dataset_file
from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import (
    ModelHandle,
    compile_session,
    describe_rule,
    load_model,
    neuron_relevance,
    run_batched,
)
from onnxlrp.inputs import preprocess_all, read_image

MNIST_STRONG, MNIST_WEAK = "mnist-lenet5", "mnist-lenet5-weak"
CIFAR_MODELS = ("cifar10-paper", "cifar10-resnet")
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
    neuron_rule: dict = field(default_factory=lambda: dict(NEURON_RULE))
    batch_size: int = 256
    log: object = print
    figures: list[Figure] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool, seed: int = 0, log=print) -> Settings:
        if quick:
            return cls(
                quick=True,
                seed=seed,
                mnist_pool=300,
                crit_images=2,
                candidates=3,
                class_images=2,
                n_object=1,
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


POOL_OPS = ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool")


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
        if node.op_type in POOL_OPS:
            return node.output[0]
        if node.op_type not in ("Relu", "LeakyRelu", "Dropout", "Identity", "Sigmoid", "Tanh"):
            return None
        current = node.output[0]
    return None


def last_pool_output(handle: ModelHandle) -> str:
    pools = [
        n.output[0]
        for n in handle.model.graph.node
        if n.op_type in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool")
    ]
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


# ----------------------------------------------------------------------------- MNIST figures
def mnist_figures(out: Path, st: Settings, rel: Relevance) -> None:
    strong, weak = load_model(MNIST_STRONG), load_model(MNIST_WEAK)
    images, labels, source = mnist_test(st.mnist_pool)
    x = preprocess_all(strong, images)
    logits = strong.logits(x)
    pred = logits.argmax(1)

    def first(label: int) -> int:
        hits = np.flatnonzero((labels == label) & (pred == label))
        if not len(hits):
            hits = np.flatnonzero(labels == label)
        if not len(hits):  # (a small sample set without that digit): the image scoring highest for it
            return int(np.argmax(logits[:, label]))
        return int(hits[0])

    eps_text = describe_rule(EPSILON)
    # Fig. 2a: one 2 under each rule
    i2 = first(2)
    row = [("image", _disp(strong, x[i2]), f"input #{i2} (label 2)")]
    for label, ckw in FIG2_RULES:
        r = rel.explain(strong, x[i2 : i2 + 1], ckw, target=[2])["relevance"][0]
        row.append(("heat", _heat(r), f"{label}: sum {r.sum():.3g}"))
    _save(
        out,
        st,
        "fig2a",
        "fig2a_rules.png",
        [row],
        f"Fig. 2a: a 2 ({source} #{i2}) explained for class 2 by {MNIST_STRONG} under five rules",
        f"A digit 2 ({source} #{i2}) explained for its class under epsilon (eps=1), alpha-beta 3/2, "
        f"alpha-beta 2/1, z+ (alpha-beta 1/0) and LRP-0; model {MNIST_STRONG}; each heatmap on its own "
        "symmetric scale (red +, blue -).",
    )
    # Fig. 2b: a 9 explained for the virtual class 4
    i9 = first(9)
    res9 = rel.explain(strong, np.repeat(x[i9 : i9 + 1], 2, 0), EPSILON, target=[9, 4])
    row = [("image", _disp(strong, x[i9]), f"input #{i9} (label 9)")]
    for j, k in enumerate((9, 4)):
        row.append(("heat", _heat(res9["relevance"][j]), f"class {k}: logit {res9[strong.output][j, k]:.2f}"))
    _save(
        out,
        st,
        "fig2b",
        "fig2b_virtual_class.png",
        [row],
        f"Fig. 2b: a 9 explained for its class and for the virtual class 4 ({MNIST_STRONG}, {eps_text})",
        f"A 9 ({source} #{i9}) explained for class 9 and for the 'virtual' class 4; model {MNIST_STRONG}, "
        f"rule {eps_text}.",
    )
    # Fig. 3: the ambiguous 3/5 digit
    i35, gap = ambiguous_35(labels, logits)
    res35 = rel.explain(strong, np.repeat(x[i35 : i35 + 1], 2, 0), EPSILON, target=[3, 5])
    row = [("image", _disp(strong, x[i35]), f"#{i35} label {labels[i35]}, pred {pred[i35]}")]
    for j, k in enumerate((3, 5)):
        row.append(("heat", _heat(res35["relevance"][j]), f"class {k}: logit {logits[i35, k]:.2f}"))
    _save(
        out,
        st,
        "fig3",
        "fig3_ambiguous_3_5.png",
        [row],
        f"Fig. 3: an ambiguous 3/5 explained for 3 and for 5 ({MNIST_STRONG}, {eps_text})",
        f"The most ambiguous 3/5 digit ({source} #{i35}, label {labels[i35]}: among images labelled 3 or 5 "
        f"whose two top classes are 3 and 5, the smallest |logit3 - logit5| = {gap:.3f}) explained for 3 "
        f"and for 5; model {MNIST_STRONG}, rule {eps_text}.",
    )
    # Fig. 4: a 6 under the weak and the strong model; Figs. 5/6: their conv feature maps
    i6 = first(6)
    rows = [[("image", _disp(strong, x[i6]), f"input #{i6} (label 6)")]]
    inner = {}
    for handle in (weak, strong):
        convs = conv_outputs(handle)[:2]
        pools = [pool_after(handle, t) for t in convs]
        res = rel.explain(handle, x[i6 : i6 + 1], EPSILON, target=[6], expose=convs + [t for t in pools if t])
        lg = res[handle.output][0]
        rows[0].append(
            (
                "heat",
                _heat(res["relevance"][0]),
                f"{'weak' if handle is weak else 'strong'}: pred {lg.argmax()}, logit6 {lg[6]:.3g}",
            )
        )
        inner[handle.name] = (convs, pools, res)
    _save(
        out,
        st,
        "fig4",
        "fig4_weak_vs_strong.png",
        rows,
        f"Fig. 4: a 6 explained for class 6 by the weak and the strong MNIST model ({eps_text})",
        f"A 6 ({source} #{i6}) explained for class 6 by {MNIST_WEAK} (left heatmap) and {MNIST_STRONG} "
        f"(right); rule {eps_text}; each on its own scale.",
    )
    for fig, layer in (("fig5", 0), ("fig6", 1)):
        which = "first" if layer == 0 else "second"
        for handle in (weak, strong):
            convs, pools, res = inner[handle.name]
            for kind, tensor in (("conv", convs[layer]), ("pool", pools[layer])):
                if tensor is None:
                    continue
                maps = res[f"relevance:{tensor}"][0]
                name = f"{fig}_{which}_{kind}_{handle.name}.png"
                what = "conv layer" if kind == "conv" else "conv layer's pooling"
                heatmap.render_grid(
                    out / name,
                    list(maps),
                    f"Fig. {fig[-1]}: relevance at the {which} {what} ({tensor}), {handle.name}, "
                    f"digit 6 for class 6, {eps_text}",
                    labels=[f"map {c}: {maps[c].sum():.2g}" for c in range(maps.shape[0])],
                )
                where = "= after its ReLU" if kind == "conv" else "its pooling output"
                st.figures.append(
                    Figure(
                        fig,
                        name,
                        f"Relevance arriving at each of the {maps.shape[0]} feature maps of the {which} "
                        f"conv layer (tensor {tensor}, {where}) of {handle.name} for the 6 of Fig. 4, "
                        f"class 6, rule {eps_text}; one shared scale per figure.",
                    )
                )
    st.log(f"MNIST figures done ({source})")


def ambiguous_35(labels: np.ndarray, logits: np.ndarray) -> tuple[int, float]:
    """The image labelled 3 or 5 whose top-2 classes are {3, 5} with the smallest logit gap."""
    top2 = np.argsort(-logits, axis=1)[:, :2]
    ok = np.isin(labels, (3, 5)) & (np.sort(top2, axis=1) == [3, 5]).all(axis=1)
    candidates = np.flatnonzero(ok)
    if not len(candidates):
        candidates = np.flatnonzero(np.isin(labels, (3, 5)))
    if not len(candidates):
        candidates = np.arange(len(labels))
    gaps = np.abs(logits[candidates, 3] - logits[candidates, 5])
    best = int(candidates[np.argmin(gaps)])
    return best, float(gaps.min())


# ----------------------------------------------------------------------------- CIFAR figures
def pick_images(handles, source: CifarSource, st: Settings) -> dict[int, np.ndarray]:
    """Per class (horse, automobile): the first ``class_images`` images of that class in the seeded
    permutation that every CIFAR model classifies correctly (misclassified ones fill up if too few)."""
    order = np.random.default_rng(st.seed).permutation(len(source))
    chosen = {}
    for cls in (HORSE, AUTOMOBILE):
        idx = [int(i) for i in order if source.labels[i] == cls][: st.class_images * 4]
        if not idx:  # (a small sample set without that class): any images, in the seeded order
            idx = [int(i) for i in order[: st.class_images]]
        images = [source.image(i) for i in idx]
        ok = np.ones(len(idx), dtype=bool)
        for handle in handles:
            ok &= handle.logits(preprocess_all(handle, images)).argmax(1) == cls
        good = [j for j in range(len(idx)) if ok[j]] + [j for j in range(len(idx)) if not ok[j]]
        chosen[cls] = np.array([idx[j] for j in good[: st.class_images]], dtype=np.int64)
    return chosen


def cifar_figures(
    out: Path, st: Settings, rel: Relevance, source: CifarSource, handle: ModelHandle, chosen: dict
) -> dict:
    model = handle.name
    pool = last_pool_output(handle)
    order = np.random.default_rng(st.seed).permutation(len(source))

    # criterion images: the first crit_images of the seeded permutation (all classes)
    crit_idx = np.array([int(i) for i in order[: st.crit_images]])
    xc = preprocess_all(handle, [source.image(i) for i in crit_idx])
    shape = tuple(rel.explain(handle, xc[:1], EPSILON, expose=[pool])[f"relevance:{pool}"].shape[1:])
    res = rel.explain(handle, xc, EPSILON, expose=[pool])
    pool_rel = res[f"relevance:{pool}"].reshape(len(xc), shape[0], -1).sum(-1)  # [N, units]
    mean_rel = pool_rel.mean(0)
    cand = np.argsort(-mean_rel, kind="stable")[: min(st.candidates, shape[0])]
    nmaps = rel.neurons(handle, xc, pool, cand, st.neuron_rule, shape)  # [N, K, 3, 32, 32]
    shares = np.array([[inside_share(_heat(nmaps[n, k])) for k in range(len(cand))] for n in range(len(xc))])
    mean_share = np.nanmean(shares, axis=0)
    by_share = np.argsort(-mean_share, kind="stable")
    objects = [int(cand[k]) for k in by_share[: st.n_object]]
    background = int(cand[by_share[-1]])
    criterion = {
        "model": model,
        "layer": pool,
        "layer_units": int(shape[0]),
        "images": [int(i) for i in crit_idx],
        "image_source": source.name,
        "centre_box": [CENTRE[0], CENTRE[1]],
        "neuron_rule": describe_rule(st.neuron_rule),
        "candidates": [
            {
                "unit": int(cand[k]),
                "mean_class_relevance": float(mean_rel[cand[k]]),
                "inside_share_mean": float(mean_share[k]),
                "inside_share_std": float(np.nanstd(shares[:, k])),
            }
            for k in by_share
        ],
        "object_neurons": objects,
        "background_neuron": background,
    }
    (out / f"criterion_{model}.json").write_text(json.dumps(criterion, indent=1))
    with open(out / f"criterion_{model}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["unit", "mean_class_relevance", "inside_share_mean", "inside_share_std"])
        for c in criterion["candidates"]:
            writer.writerow(
                [
                    c["unit"],
                    f"{c['mean_class_relevance']:.6g}",
                    f"{c['inside_share_mean']:.4f}",
                    f"{c['inside_share_std']:.4f}",
                ]
            )
    st.log(
        f"{model}: layer {pool} ({shape[0]} units); inside share of the {len(cand)} candidates "
        f"(unit:share) " + ", ".join(f"{cand[k]}:{mean_share[k]:.3f}" for k in by_share)
    )
    st.log(f"{model}: object neurons {objects}, background neuron {background}")
    rule_text = describe_rule(st.neuron_rule)
    classes = handle.classes or [str(i) for i in range(10)]

    def neuron_rows(xs, names, units, extra_class_row=True):
        maps = rel.neurons(handle, xs, pool, units, st.neuron_rule, shape)
        rows = [[("image", _disp(handle, xs[n]), names[n]) for n in range(len(xs))]]
        if extra_class_row:
            r = rel.explain(handle, xs, EPSILON, expose=[pool])
            pred = r[handle.output].argmax(1)
            rows.append(
                [
                    ("heat", _heat(r["relevance"][n]), f"class {classes[pred[n]]} (eps)")
                    for n in range(len(xs))
                ]
            )
        for k, u in enumerate(units):
            rows.append(
                [
                    ("heat", _heat(maps[n, k]), f"unit {u}: in {inside_share(_heat(maps[n, k])):.2f}")
                    for n in range(len(xs))
                ]
            )
        return rows

    # Fig. 7: one horse, mirrored and hue-shifted
    ih = int(chosen[HORSE][0])
    img = source.image(ih)
    variants = aug.augment(img, ["flip", "hue"])
    xs = preprocess_all(handle, [v for _, v in variants])
    rows = neuron_rows(xs, [f"#{ih} {tag}" for tag, _ in variants], objects)
    _save(
        out,
        st,
        "fig7",
        f"fig7_{model}.png",
        rows,
        f"Fig. 7 ({model}): object neurons {objects} of {pool} on a horse, mirrored and hue-shifted\n"
        f"row 2: class relevance (eps=1); rows 3+: relevance 1 at one unit, {rule_text}",
        f"{model}: input relevance of the object neurons {objects} of the last pooling layer ({pool}) "
        f"(relevance 1 at the unit, {rule_text}) for a horse (#{ih}), its mirror image and a 0.3 hue shift; "
        "row 2 the class relevance (epsilon, eps=1); 'in' = inside share of |R|.",
    )
    # Fig. 8: the same neurons across horses and cars
    for cls in (HORSE, AUTOMOBILE):
        idx = chosen[cls]
        xs = preprocess_all(handle, [source.image(i) for i in idx])
        rows = neuron_rows(xs, [f"#{i}" for i in idx], objects)
        _save(
            out,
            st,
            "fig8",
            f"fig8_{classes[cls]}_{model}.png",
            rows,
            f"Fig. 8 ({model}): object neurons {objects} across {classes[cls]} images\n"
            f"row 2: class relevance (eps=1); rows 3+: relevance 1 at one unit, {rule_text}",
            f"{model}: the same object neurons {objects} of {pool} across {len(idx)} {classes[cls]} test "
            f"images (classified correctly by both CIFAR models, seeded choice), {rule_text}; "
            "row 2 the class relevance.",
        )
    # Fig. 9: the background neuron
    idx = crit_idx[: max(2, st.class_images)]
    xs = preprocess_all(handle, [source.image(i) for i in idx])
    rows = neuron_rows(
        xs,
        [f"#{i} {classes[source.labels[i]]}" for i in idx],
        [background, objects[0]],
        extra_class_row=False,
    )
    _save(
        out,
        st,
        "fig9",
        f"fig9_{model}.png",
        rows,
        f"Fig. 9 ({model}): background neuron {background} (row 2) vs object neuron {objects[0]} (row 3)\n"
        f"relevance 1 at one unit of {pool}, {rule_text}",
        f"{model}: the 'background' neuron {background} of {pool} (lowest inside share, "
        f"{mean_share[by_share[-1]]:.2f}) against the top object neuron {objects[0]} "
        f"({mean_share[by_share[0]]:.2f}) on criterion images; {rule_text}.",
    )
    return criterion


# ----------------------------------------------------------------------------- output
def _save(out: Path, st: Settings, key: str, name: str, rows, title: str, caption: str) -> None:
    heatmap.render_panels(out / name, rows, title)
    st.figures.append(Figure(key, name, caption))


def write_index(out: Path, st: Settings, criteria: list[dict]) -> Path:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>onnxlrp: seed paper figures</title>",
        "<style>body{font-family:sans-serif;max-width:1800px;margin:auto} img{max-width:100%;"
        "border:1px solid #ccc} figure{margin:2em 0} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;padding:2px 6px} .row{display:flex;flex-wrap:wrap;gap:1em;"
        "align-items:flex-start} .row figure{flex:1 1 400px;margin:0}</style></head><body>",
        "<h1>Seed paper figures, regenerated by <code>onnxlrp reproduce</code></h1>",
        "<p>Sakai, Kameya, Sota, Arie: <i>Visualizing the Behavior of the Inner Layers of Convolutional "
        "Neural Networks by Layer-wise Relevance Propagation</i>. Heatmaps: red = positive, blue = negative, "
        f"white = zero relevance, symmetric scale. {'Quick run (fewer images). ' if st.quick else ''}"
        f"Seed {st.seed}.</p>",
    ]
    keys = list(dict.fromkeys(fig.key for fig in st.figures))
    for key in keys:  # one row per paper figure: its variants (models, classes) side by side
        parts.append(f"<h2>{html.escape(key)}</h2><div class='row'>")
        for fig in sorted((f for f in st.figures if f.key == key), key=lambda f: f.file):
            parts.append(
                f"<figure id='{html.escape(fig.file)}'><a href='{html.escape(fig.file)}'>"
                f"<img src='{html.escape(fig.file)}' alt='{html.escape(fig.key)}'></a>"
                f"<figcaption><b>{html.escape(fig.key)}</b>: {html.escape(fig.caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    for crit in criteria:
        model = crit["model"]
        parts.append(
            f"<h2>Neuron criterion, {html.escape(model)}</h2><p>Layer {html.escape(crit['layer'])} "
            f"({crit['layer_units']} units). Candidates: the {len(crit['candidates'])} units with the "
            "largest mean class relevance (epsilon, predicted class); inside share = sum |R| in the central "
            "16x16 box / sum |R|, averaged over the images; uniform relevance gives 0.25. "
            f"<a href='criterion_{model}.json'>JSON</a>, <a href='criterion_{model}.csv'>CSV</a>.</p>"
            "<table><tr><th>unit</th><th>mean class relevance</th><th>inside share</th><th>std</th></tr>"
        )
        for c in crit["candidates"]:
            parts.append(
                f"<tr><td>{c['unit']}</td><td>{c['mean_class_relevance']:.4g}</td>"
                f"<td>{c['inside_share_mean']:.3f}</td><td>{c['inside_share_std']:.3f}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts))
    return path


def reproduce(
    out: str | Path = "paper-figures", quick: bool = False, seed: int = 0, log=print
) -> list[Figure]:
    """Write every figure and ``index.html`` into ``out``; returns the figures."""
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    st = Settings.make(quick, seed, log)
    rel = Relevance(st.batch_size)
    mnist_figures(out, st, rel)
    source = CifarSource()
    criteria = []
    handles = [load_model(model) for model in CIFAR_MODELS]
    chosen = pick_images(handles, source, st)
    for handle in handles:
        t = time.time()
        model = handle.name
        criteria.append(cifar_figures(out, st, rel, source, handle, chosen))
        log(f"{model} figures done in {time.time() - t:.1f} s ({source.name})")
    index = write_index(out, st, criteria)
    log(f"wrote {len(st.figures)} figures and {index} in {time.time() - start:.1f} s")
    return st.figures
