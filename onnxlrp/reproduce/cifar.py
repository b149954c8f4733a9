"""The CIFAR-10 figures (Figs. 7-9) and the neuron criterion behind them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from onnxlrp import augment as aug
from onnxlrp.explaining import ModelHandle, describe_rule
from onnxlrp.inputs import preprocess_all
from onnxlrp.loading import write_json, writing
from onnxlrp.reproduce.common import (
    AUTOMOBILE,
    CENTRE,
    EPSILON,
    HORSE,
    CifarSource,
    Relevance,
    Settings,
    _disp,
    _heat,
    _save,
    inside_share,
    last_pool_output,
)


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
    criterion: dict[str, Any] = {
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
    write_json(out / f"criterion_{model}.json", criterion, force=True)  # reproduce checked the folder
    with writing(out / f"criterion_{model}.csv", force=True) as tmp, open(tmp, "w", newline="") as f:
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
