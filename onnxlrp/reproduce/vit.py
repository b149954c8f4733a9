"""The zoo ViT beside the CNNs: pixel heatmaps and patch-token relevance under AttnLRP and CP-LRP."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxlrp.errors import OnnxLrpError
from onnxlrp.explaining import ModelHandle, patch_embedding
from onnxlrp.inputs import preprocess_all
from onnxlrp.reproduce.common import AUTOMOBILE, HORSE, CifarSource, Relevance, Settings, _disp, _heat, _save

VIT_COMPOSITES = (("AttnLRP", {"composite": "attnlrp"}), ("CP-LRP", {"composite": "cp-lrp"}))


def vit_relevance(
    rel: Relevance, handle: ModelHandle, x: np.ndarray, compile_kwargs: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [N, classes], pixel heatmaps [N, H, W], patch-token relevance [N, h, w]): the input
    relevance summed over colour channels, and the relevance reaching the patch embedding's output
    summed over each token's channels (the class token and position embeddings take the rest)."""
    tokens = patch_embedding(handle)
    if tokens is None:
        raise OnnxLrpError(f"{handle.name}: no patch embedding found (a Conv with strides = kernel)")
    result = rel.explain(handle, x, compile_kwargs, expose=[tokens])
    pixels = np.stack([_heat(r) for r in result["relevance"]])
    patches = np.stack([_heat(r) for r in result[f"relevance:{tokens}"]])
    return result[handle.output], pixels, patches


def vit_figures(
    out: Path, st: Settings, rel: Relevance, source: CifarSource, handle: ModelHandle, chosen: dict
) -> None:
    """One figure per class (horse, automobile) on the images the CNN figures use: per image the
    input, then pixel heatmap and patch-token map under each composite."""
    model = handle.name
    classes = handle.classes or [str(i) for i in range(10)]
    for cls in (HORSE, AUTOMOBILE):
        idx = chosen[cls]
        x = preprocess_all(handle, [source.image(i) for i in idx])
        rows = [[("image", _disp(handle, x[n]), f"#{i}") for n, i in enumerate(idx)]]
        for label, kwargs in VIT_COMPOSITES:
            logits, pixels, patches = vit_relevance(rel, handle, x, kwargs)
            predicted = logits.argmax(1)
            rows.append([("heat", pixels[n], f"{label}: {classes[predicted[n]]}") for n in range(len(idx))])
            rows.append(
                [("heat", patches[n], f"{label} tokens {patches[n].sum():.2g}") for n in range(len(idx))]
            )
        grid = "x".join(map(str, patches.shape[1:]))
        _save(
            out,
            st,
            "ViT",
            f"vit_{classes[cls]}_{model}.png",
            rows,
            f"{model}: {classes[cls]} images; per composite (AttnLRP, CP-LRP) the pixel heatmap and "
            f"the relevance per patch token ({grid})",
            f"{model} (a vision transformer) on the {classes[cls]} images of Fig. 8: rows 2-3 AttnLRP "
            f"(pixel heatmap, relevance per patch token summed over its channels, {grid} tokens), rows "
            "4-5 CP-LRP (no relevance through the attention weights); target = predicted class.",
        )
