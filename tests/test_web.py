"""The web app in a real browser: Debian's chromium driven by Playwright (never `playwright install`).

The page runs a relevance graph with onnxruntime-web; its input, relevance, inner-layer maps and the
effect of a chosen target are compared with Python onnxruntime on the same input.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import onnxlrp
from onnxlrp import zoo
from onnxlrp.errors import OnnxLrpError
from onnxlrp.web import build_site, find_ort_web, make_server
from tests.test_runtimes import zoo_inputs

CHROMIUM = Path(os.environ.get("ONNXLRP_CHROMIUM", "/usr/bin/chromium"))
MODELS = ("mnist-lenet5", "cifar10-paper")
RULES = ("epsilon", "epsilon-plus")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    try:
        find_ort_web()
    except OnnxLrpError as error:
        pytest.skip(str(error))
    folder = build_site(tmp_path_factory.mktemp("web") / "site", models=MODELS, rules=RULES)
    server = make_server(folder, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--enable-unsafe-webgpu"]
        )
        yield browser
        browser.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    response = page.goto(url)
    assert response is not None and response.status == 200, f"{url}: HTTP {response and response.status}"
    _wait_for_run(page, 1)
    return page


def _wait_for_run(page, runs: int) -> dict:
    page.wait_for_function(
        f"(window.onnxlrpApp && window.onnxlrpApp.runs >= {runs}) || "
        "document.getElementById('status').dataset.state === 'error'",
        timeout=120_000,
    )
    status = page.eval_on_selector("#status", "e => [e.dataset.state, e.textContent]")
    assert status[0] == "done", f"the page says: {status[1]}"
    return page.evaluate("window.onnxlrpApp.last")


def _python(folder: Path, model: str, rule: str, x: np.ndarray, target: int) -> dict:
    session = onnxlrp.RelevanceSession(folder / "models" / f"{model}.{rule}.onnx")
    return session.run(x, target=target)


def assert_close(got, want: np.ndarray, what: str) -> None:
    got = np.asarray(got, np.float64).reshape(want.shape)
    error, scale = np.abs(got - want).max(), np.abs(want).max()
    assert error <= TOLERANCE * scale, f"{what}: max error {error:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("rule", RULES)
def test_page_explains_like_python(site, browser, model, rule, tmp_path):
    folder, url = site
    page = _open(browser, f"{url}/?ep=wasm&model={model}&rule={rule}")
    assert page.evaluate("self.crossOriginIsolated"), "COOP/COEP headers missing: no WASM threads"
    last = page.evaluate("window.onnxlrpApp.last")
    assert (last["model"], last["rule"], last["backend"], last["target"]) == (model, rule, "wasm", -1)
    x = np.asarray(last["input"], np.float32).reshape(last["dims"])
    # the page preprocesses the first sample exactly as Python does
    np.testing.assert_allclose(x, zoo_inputs(model, 1), atol=1e-6)
    want = _python(folder, model, rule, x, -1)
    assert last["predicted"] == int(np.argmax(want["logits"]))
    assert_close(last["logits"], want["logits"], "logits")
    assert_close(last["relevance"], want["relevance"], "relevance")
    for tensor, exposed in last["exposed"].items():
        assert_close(exposed["data"], want[f"relevance:{tensor}"], f"relevance at {tensor}")

    other = (last["predicted"] + 3) % len(last["logits"])
    page.click(f"#classes [data-class='{other}']")  # "why is this `other` and not the prediction?"
    chosen = _wait_for_run(page, 2)
    assert (chosen["target"], chosen["explained"]) == (other, other)
    want_other = _python(folder, model, rule, x, other)
    assert_close(chosen["relevance"], want_other["relevance"], f"relevance for target {other}")
    assert np.abs(want_other["relevance"] - want["relevance"]).max() > 0.1 * np.abs(want["relevance"]).max()
    assert "and not" in page.text_content("#target-text")
    page.screenshot(path=str(tmp_path / f"{model}.{rule}.png"), full_page=True)
    assert (tmp_path / f"{model}.{rule}.png").stat().st_size > 10_000
    page.close()


def test_drawing_runs_live(site, browser):
    """Strokes on the drawing canvas change the input and rerun the graph."""
    _, url = site
    page = _open(browser, f"{url}/?ep=wasm&model=mnist-lenet5")
    page.click("#clear")
    _wait_for_run(page, 2)
    box = page.locator("#draw").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 140, box["y"] + 230, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "window.onnxlrpApp.runs >= 3 && !document.getElementById('status').textContent.startsWith('running')"
    )
    last = page.evaluate("window.onnxlrpApp.last")
    x = np.asarray(last["input"], np.float32).reshape(last["dims"])
    assert x.max() > 0.9 and x.min() == -1.0  # a white stroke on black
    page.close()


def test_webgpu_when_available(site, browser):
    folder, url = site
    page = _open(browser, f"{url}/?model=cifar10-paper&rule=epsilon-plus")
    last = page.evaluate("window.onnxlrpApp.last")
    if last["backend"] != "webgpu":
        pytest.skip("this browser has no WebGPU adapter (the page fell back to WASM)")
    x = np.asarray(last["input"], np.float32).reshape(last["dims"])
    assert_close(
        last["relevance"], _python(folder, "cifar10-paper", "epsilon-plus", x, -1)["relevance"], "relevance"
    )
    page.close()


def test_server_sends_isolation_headers_and_types(site):
    import urllib.request

    _, url = site
    for path, kind in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/ort/ort.webgpu.min.mjs", "text/javascript"),
        ("/ort/ort-wasm-simd-threaded.asyncify.wasm", "application/wasm"),
    ]:
        with urllib.request.urlopen(url + path) as response:
            assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert response.headers["Content-Type"].startswith(kind), path


def test_web_export_writes_the_site_and_never_clobbers(tmp_path, capsys):
    from onnxlrp.cli import main

    try:
        find_ort_web()
    except OnnxLrpError as error:
        pytest.skip(str(error))
    out = tmp_path / "site"
    assert main(["web", "--export", str(out), "--model", "mnist-lenet5", "--rule", "epsilon"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["mnist-lenet5"]
    assert (out / manifest["models"][0]["graphs"]["epsilon"]).is_file()
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in out.iterdir()}
    assert main(["web", "--export", str(out), "--model", "mnist-lenet5"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["web", "--export", str(tmp_path / "other"), "--model", "no-such-model"]) == 2
    assert not (tmp_path / "other").exists()


def test_uploaded_image_is_explained(site, browser):
    """An uploaded image goes through the model's preprocessing and is explained."""
    folder, url = site
    page = _open(browser, f"{url}/?ep=wasm&model=cifar10-paper&rule=epsilon")
    upload = zoo.sample_paths("cifar10-paper")[3]
    page.set_input_files("#upload", str(upload))
    last = _wait_for_run(page, 2)
    x = np.asarray(last["input"], np.float32).reshape(last["dims"])
    np.testing.assert_allclose(x, zoo.load("cifar10-paper").preprocess(upload), atol=1e-6)
    want = _python(folder, "cifar10-paper", "epsilon", x, -1)
    assert_close(last["relevance"], want["relevance"], "relevance")
    page.close()


POOLS = {  # max pools taking each route of the portable graph (the zoo only has square tiles)
    "square tiles": ([1, 8, 6, 6], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "2x3 tiles": ([1, 8, 6, 9], {"kernel_shape": [2, 3], "strides": [2, 3]}),
    "1-D tiles": ([1, 8, 10], {"kernel_shape": [2], "strides": [2]}),
    "overlapping 2x2": ([1, 8, 6, 6], {"kernel_shape": [2, 2], "strides": [1, 1]}),
    "overlapping 3x3, padded": ([1, 8, 9, 9], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1] * 4}),
}


def test_webgpu_routes_every_max_pool_form(site, browser):
    """Each max-pool route of the portable graph in WebGPU, against Python onnxruntime (random
    relevance at the pool's output; ties in the first window)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    folder, url = site
    (folder / "probe.html").write_text("<!doctype html><title>probe</title>")
    page = browser.new_page()
    page.goto(f"{url}/probe.html")
    if not page.evaluate("async () => !!(navigator.gpu && await navigator.gpu.requestAdapter())"):
        pytest.skip("this browser has no WebGPU adapter")
    for k, (name, (shape, attrs)) in enumerate(POOLS.items()):
        node = helper.make_node("MaxPool", ["input"], ["y"], name="pool", **attrs)
        graph = helper.make_graph(
            [node],
            "pool",
            [helper.make_tensor_value_info("input", 1, ["N", *shape[1:]])],
            [helper.make_tensor_value_info("y", 1, None)],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        relevance_graph = onnxlrp.compile(model, rule="epsilon", start="y")
        onnx.save(relevance_graph, folder / f"pool{k}.onnx")
        x = np.random.default_rng(k).uniform(-1, 1, shape).astype(np.float32)
        x.reshape(-1)[:2] = 0.5
        y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"input": x}
        )[0]
        session = onnxlrp.RelevanceSession(relevance_graph)
        seed = (y * np.random.default_rng(k).uniform(0.5, 1.5, y.shape)).astype(np.float32)
        want = session.run(x, relevance_seed=seed)["relevance"]
        got = page.evaluate(
            """async ([file, x, dims, seed, seedDims]) => {
              const ort = await import("./ort/ort.webgpu.min.mjs");
              const s = await ort.InferenceSession.create(file, { executionProviders: ["webgpu"] });
              const out = await s.run({ input: new ort.Tensor("float32", Float32Array.from(x), dims),
                relevance_seed: new ort.Tensor("float32", Float32Array.from(seed), seedDims) });
              return Array.from(out.relevance.data);
            }""",
            [f"pool{k}.onnx", x.ravel().tolist(), list(x.shape), seed.ravel().tolist(), list(seed.shape)],
        )
        assert_close(got, want, f"WebGPU, {name}")
    page.close()
