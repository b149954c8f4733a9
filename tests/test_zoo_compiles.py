"""Every zoo model compiles under every composite, and its relevance graph runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxlrp
from onnxlrp.composites import COMPOSITES

ZOO = Path(__file__).resolve().parent.parent / "zoo"
MANIFEST = ZOO / "manifest.json"
MODELS = sorted(json.loads(MANIFEST.read_text())["models"]) if MANIFEST.exists() else []


@pytest.mark.skipif(not MODELS, reason="zoo/manifest.json is absent")
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("composite", COMPOSITES)
def test_zoo_model_compiles_and_runs(name, composite):
    entry = json.loads(MANIFEST.read_text())["models"][name]
    model = onnxlrp.compile(ZOO / entry["file"], composite=composite)
    onnx.checker.check_model(model, full_check=True)
    shape = [2, *entry["input"]["shape"][1:]]
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    out = onnxlrp.RelevanceSession(model).run(x)
    assert out["relevance"].shape == x.shape
    assert np.isfinite(out["relevance"]).all()
    assert np.abs(out["relevance"]).sum() > 0
