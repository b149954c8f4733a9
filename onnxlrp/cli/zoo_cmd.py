"""`onnxlrp zoo`: list the model zoo's models with their data set, size and test accuracy."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="list the model zoo (trained ONNX classifiers)")
    parser.add_argument("--samples", action="store_true", help="also list each model's sample images")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onnxlrp import zoo

    rows = [("name", "dataset", "params", "test accuracy (onnxruntime)", "file")]
    for m in zoo.list_models():
        acc = m["accuracy"]
        acc_text = f"{acc:.2%} ({m['test_correct']}/{m['test_total']})" if acc is not None else "?"
        params = f"{m['parameters'] / 1e6:.2f}M" if m.get("parameters") else "?"
        rows.append((m["name"], m["dataset"], params, acc_text, m["path"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if getattr(args, "samples", False):
        for m in zoo.list_models():
            print(f"\n{m['name']} samples:")
            for s in zoo.samples(m["name"]):
                print(f"  {zoo.zoo_dir() / s['file']}  label {s['label']} ({s['class']}): {s['rule']}")
    print(f"\nzoo folder: {zoo.zoo_dir()}; details in manifest.json")
    return 0
