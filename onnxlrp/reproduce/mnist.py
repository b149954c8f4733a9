"""The MNIST figures (Figs. 2-6): rules, a virtual class, an ambiguous digit, weak vs strong model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlrp import heatmap
from onnxlrp.explaining import ModelHandle, describe_rule
from onnxlrp.inputs import preprocess_all
from onnxlrp.reproduce.common import (
    EPSILON,
    FIG2_RULES,
    MNIST_STRONG,
    MNIST_WEAK,
    Figure,
    Relevance,
    Settings,
    _disp,
    _heat,
    _save,
    conv_outputs,
    pool_after,
)


def mnist_figures(
    out: Path,
    st: Settings,
    rel: Relevance,
    strong: ModelHandle,
    weak: ModelHandle,
    data: tuple[list[np.ndarray], np.ndarray, str],
) -> None:
    """Figs. 2-6 into ``out``: ``data`` = (digit images, labels, where they come from)."""
    images, labels, source = data
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
    row = class_pair_row(rel, strong, x[i9], (9, 4), f"input #{i9} (label 9)")
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
    row = class_pair_row(rel, strong, x[i35], (3, 5), f"#{i35} label {labels[i35]}, pred {pred[i35]}")
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


def class_pair_row(
    rel: Relevance, handle: ModelHandle, x: np.ndarray, classes: tuple[int, int], caption: str
) -> list[tuple[str, np.ndarray, str]]:
    """One input ``x`` [C, H, W] and its heatmaps (epsilon) for each of two classes, with their logits."""
    res = rel.explain(handle, np.repeat(x[None], 2, 0), EPSILON, target=list(classes))
    row = [("image", _disp(handle, x), caption)]
    for j, k in enumerate(classes):
        row.append(("heat", _heat(res["relevance"][j]), f"class {k}: logit {res[handle.output][j, k]:.2f}"))
    return row


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
