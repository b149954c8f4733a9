"""Writing the web app's static site: compiled graphs, samples, manifest, onnxruntime-web's files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from onnxlrp import zoo
from onnxlrp.compiler import compile
from onnxlrp.errors import OnnxLrpError, OutputExistsError
from onnxlrp.graph import data_input
from onnxlrp.loading import save_model

DEFAULT_RULES = ("epsilon", "epsilon-plus", "epsilon-gamma-box")
ORT_WEB_ENV = "ONNXLRP_ORT_WEB"
# the WebGPU build of onnxruntime-web; it also runs the WASM execution provider
ORT_FILES = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)
STATIC = Path(__file__).parent / "static"
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def find_ort_web(hint: str | os.PathLike | None = None) -> Path:
    """onnxruntime-web's dist folder: `hint`, $ONNXLRP_ORT_WEB, or node_modules/onnxruntime-web/dist
    in the current folder, a folder above it or the source checkout this package runs from."""
    candidates = [Path(p) for p in (hint, os.environ.get(ORT_WEB_ENV)) if p]
    if not candidates:
        for folder in [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]]:
            candidates.append(folder / "node_modules" / "onnxruntime-web" / "dist")
    for folder in candidates:
        for dist in (folder, folder / "dist"):
            if all((dist / name).is_file() for name in ORT_FILES):
                return dist
    raise OnnxLrpError(
        f"onnxruntime-web not found (looked in {', '.join(str(c) for c in candidates[:3])}, ...): run "
        f"`npm install onnxruntime-web@1.30.0` in this folder, or set {ORT_WEB_ENV} to its dist folder"
    )


def inner_layers(model: onnx.ModelProto) -> list[dict]:
    """The tensors read by the model's linear layers (not the model input): the inner-layer maps the
    app shows, each with a label naming the layer that reads it."""
    input_name = data_input(model).name
    layers, seen = [], set()
    for node in model.graph.node:
        if node.op_type in LAYER_OPS and node.input[0] != input_name and node.input[0] not in seen:
            seen.add(node.input[0])
            layers.append({"tensor": node.input[0], "label": f"into {node.name or node.op_type}"})
    return layers


def _model_entry(site: Path, name: str, rules: Sequence[str]) -> dict:
    entry = zoo.load(name)
    layers = inner_layers(entry.model)
    graphs = {}
    for rule in rules:
        relevance_graph = compile(entry.model, composite=rule, expose=[layer["tensor"] for layer in layers])
        graphs[rule] = f"models/{name}.{rule}.onnx"
        save_model(relevance_graph, site / graphs[rule])
    samples = []
    for sample, path in zip(zoo.samples(name), zoo.sample_paths(name), strict=True):
        shutil.copyfile(path, site / "samples" / path.name)
        samples.append(
            {"file": f"samples/{path.name}", "label": str(sample.get("class", sample.get("label")))}
        )
    keys = ("color", "image_size", "scale", "offset", "pad", "pad_value")
    return {
        "name": name,
        "classes": entry.classes,
        "preprocessing": {k: entry.preprocessing.get(k) for k in keys},
        "samples": samples,
        "graphs": graphs,
        "layers": layers,
    }


def build_site(
    out: str | os.PathLike,
    models: Sequence[str] | None = None,
    rules: Sequence[str] = DEFAULT_RULES,
    ort_web: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Write the web app for zoo `models` (default: all) under `rules` (composite or rule names) to
    the folder `out`; an existing folder is replaced only with `force`. Returns `out`."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: exists; pass --force (force=True) to replace it")
    if not out.parent.is_dir():
        raise OutputExistsError(f"{out.parent}: the output folder does not exist")
    dist = find_ort_web(ort_web)
    names = list(models) if models else zoo.names()
    for name in names:
        zoo.load(name)  # an unknown name fails before anything is written
    site = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for folder in ("models", "samples", "ort"):
            (site / folder).mkdir()
        for name in ORT_FILES:
            shutil.copyfile(dist / name, site / "ort" / name)
        for path in STATIC.iterdir():
            shutil.copyfile(path, site / path.name)
        manifest = {"models": [_model_entry(site, name, rules) for name in names], "rules": list(rules)}
        (site / "manifest.json").write_text(json.dumps(manifest, indent=1))
        site.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        site.rename(out)
    except BaseException:
        shutil.rmtree(site, ignore_errors=True)
        raise
    return out
