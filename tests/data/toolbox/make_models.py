"""Regenerate the small LRP-toolbox text models in this folder (fixed seed): python make_models.py"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

MODELS = {
    # a dense MLP on flat inputs of 12 features
    "mlp.txt": ["Linear 12 8", "Rect", "Linear 8 6", "Tanh", "Linear 6 4", "SoftMax"],
    # a small CNN on 10x10x2 NHWC inputs (square: the importer can infer the input shape)
    "cnn.txt": [
        "Convolution 3 3 2 4 1 1",
        "Rect",
        "SumPool 2 2 2 2",
        "Convolution 2 2 4 5 1 1",
        "Rect",
        "MaxPool 2 2 1 1",
        "Flatten",
        "Linear 20 3",
        "SoftMax",
    ],
    # strided conv, overlapping pools, a non-square 11x9x1 input (needs --input-shape 11 9 1)
    "cnn_strided.txt": [
        "Convolution 3 3 1 3 2 2",
        "Tanh",
        "SumPool 2 2 1 1",
        "MaxPool 2 2 1 1",
        "Flatten",
        "Linear 18 4",
    ],
    # an all-convolutional LeNet-like net whose output is 1x1x5 (input 14x14x1, inferred)
    "allconv.txt": [
        "Convolution 3 3 1 4 1 1",
        "Rect",
        "SumPool 2 2 2 2",
        "Convolution 3 3 4 6 1 1",
        "Rect",
        "SumPool 2 2 2 2",
        "Convolution 2 2 6 5 1 1",
        "SoftMax",
    ],
    # the toolbox's legacy text format: Linear weights as m lines of n values
    "xor_legacy.txt": ["Linear 2 3", "Tanh", "Linear 3 3", "Tanh", "Linear 3 2", "SoftMax"],
}
LEGACY = {"xor_legacy.txt"}


def fmt(values):
    return " ".join(f"{v:.4f}" for v in values.ravel())


def main():
    rng = np.random.default_rng(20261126)
    for name, spec in MODELS.items():
        out = []
        for header in spec:
            out.append(header)
            kind, *p = header.split()
            p = [int(v) for v in p]
            if kind == "Linear":
                m, n = p
                w = rng.normal(0, m**-0.5, (m, n))
                rows = [fmt(r) for r in w] if name in LEGACY else [fmt(w)]
                out += [*rows, fmt(rng.normal(0, 0.2, n))]
            elif kind == "Convolution":
                h, w, d, n = p[:4]
                out += [fmt(rng.normal(0, (h * w * d) ** -0.5, (h, w, d, n))), fmt(rng.normal(0, 0.2, n))]
        (HERE / name).write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
