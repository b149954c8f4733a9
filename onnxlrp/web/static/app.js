// onnxlrp web app: runs the compiled relevance graphs with onnxruntime-web, entirely in the page.
// Site layout (written by `onnxlrp web`): manifest.json, models/*.onnx, samples/*, ort/ (onnxruntime-web).
import * as ort from "./ort/ort.webgpu.min.mjs";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const state = { manifest: null, model: null, rule: null, target: -1, input: null, sessions: new Map() };
let backend = "wasm";
let running = null; // the run in progress (runs are serialised)
let pending = false; // another run was asked for while one was in progress

// what the tests read: the last run's input, outputs and target
const app = { state, last: null, runs: 0, run: () => schedule(), setTarget, chooseSample };
window.onnxlrpApp = app;

function status(text, kind = "busy") {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

async function pickBackend() {
  const asked = params.get("ep");
  if (asked === "wasm" || asked === "webgpu") return asked;
  if (!navigator.gpu) return "wasm";
  try {
    return (await navigator.gpu.requestAdapter()) ? "webgpu" : "wasm";
  } catch {
    return "wasm";
  }
}

function currentModel() {
  return state.manifest.models.find((m) => m.name === state.model);
}

const drawable = () => currentModel().preprocessing.color === "L";

async function session() {
  const key = `${state.model}/${state.rule}`;
  if (!state.sessions.has(key)) {
    const url = currentModel().graphs[state.rule];
    const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
    state.sessions.set(key, await ort.InferenceSession.create(bytes, { executionProviders: [backend] }));
  }
  return state.sessions.get(key);
}

// --- input -------------------------------------------------------------------------------------
/** RGBA pixels of the model's image size -> the model input (scale, offset, pad as in training). */
function toInput(rgba) {
  const p = currentModel().preprocessing;
  const [h, w] = p.image_size;
  const channels = p.color === "L" ? 1 : 3;
  const pad = p.pad || 0;
  const H = h + 2 * pad;
  const W = w + 2 * pad;
  const x = new Float32Array(channels * H * W).fill(pad ? p.pad_value : 0);
  for (let c = 0; c < channels; c++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const v = rgba[(i * w + j) * 4 + c];
        x[c * H * W + (i + pad) * W + (j + pad)] = Math.fround(Math.fround(v * p.scale) + p.offset);
      }
    }
  }
  return { data: x, dims: [1, channels, H, W] };
}

/** Draw any image source onto the model's image size and read its pixels. */
function pixelsOf(source) {
  const [h, w] = currentModel().preprocessing.image_size;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  if (currentModel().preprocessing.color === "L") {
    for (let k = 0; k < rgba.length; k += 4) {
      const grey = Math.round(0.299 * rgba[k] + 0.587 * rgba[k + 1] + 0.114 * rgba[k + 2]);
      rgba[k] = rgba[k + 1] = rgba[k + 2] = grey;
    }
  }
  return rgba;
}

function setInputFrom(source) {
  state.input = toInput(pixelsOf(source));
  showInput();
  return schedule();
}

async function chooseSample(index) {
  const sample = currentModel().samples[index];
  const image = new Image();
  image.src = sample.file;
  await image.decode();
  document.querySelectorAll("#samples img").forEach((img, k) => img.classList.toggle("chosen", k === index));
  if (drawable()) {
    // the sample becomes the drawing: strokes drawn next change it
    const ctx = $("draw").getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(image, 0, 0, $("draw").width, $("draw").height);
  }
  return setInputFrom(image);
}

function showInput() {
  const { data, dims } = state.input;
  const [, channels, H, W] = dims;
  const image = new ImageData(W, H);
  for (let k = 0; k < H * W; k++) {
    for (let c = 0; c < 3; c++) {
      const v = data[(channels === 1 ? 0 : c) * H * W + k];
      image.data[k * 4 + c] = Math.round((v + 1) * 127.5);
    }
    image.data[k * 4 + 3] = 255;
  }
  paint($("input-view"), image);
}

// --- drawing -----------------------------------------------------------------------------------
function setUpDrawing() {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  const clear = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  };
  clear();
  let last = null;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    canvas.setPointerCapture(e.pointerId);
    last = at(e);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!last) return;
    const point = at(e);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 22;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(...last);
    ctx.lineTo(...point);
    ctx.stroke();
    last = point;
    setInputFrom(canvas); // live: runs are coalesced while one is in progress
  });
  canvas.addEventListener("pointerup", () => (last = null));
  $("clear").addEventListener("click", () => {
    clear();
    setInputFrom(canvas);
  });
}

// --- running and showing -----------------------------------------------------------------------
function schedule() {
  if (running) {
    pending = true;
    return running;
  }
  running = (async () => {
    try {
      do {
        pending = false;
        await runOnce();
      } while (pending);
    } catch (error) {
      status(`error: ${error.message ?? error}`, "error");
      throw error;
    } finally {
      running = null;
    }
  })();
  return running;
}

async function runOnce() {
  if (!state.input) return;
  status("running…");
  const s = await session();
  const { data, dims } = state.input;
  const feeds = {
    input: new ort.Tensor("float32", data, dims),
    target: new ort.Tensor("int64", BigInt64Array.from([BigInt(state.target)]), [1]),
  };
  const started = performance.now();
  const out = await s.run(feeds);
  const ms = performance.now() - started;
  const logits = Array.from(out.logits.data);
  const predicted = logits.indexOf(Math.max(...logits));
  const explained = state.target < 0 ? predicted : state.target;
  const exposed = {};
  for (const name of s.outputNames.filter((n) => n.startsWith("relevance:"))) {
    exposed[name.slice("relevance:".length)] = { data: Array.from(out[name].data), dims: out[name].dims };
  }
  app.last = {
    model: state.model,
    rule: state.rule,
    backend,
    input: Array.from(data),
    dims,
    target: state.target,
    explained,
    predicted,
    logits,
    relevance: Array.from(out.relevance.data),
    exposed,
  };
  app.runs += 1;
  heatmap($("heatmap"), out.relevance.data, out.relevance.dims);
  showClasses(logits, predicted, explained);
  showLayers(exposed);
  status(`${ms.toFixed(1)} ms for the forward pass and the relevance (run ${app.runs})`, "done");
}

function showClasses(logits, predicted, explained) {
  const classes = currentModel().classes;
  const box = $("classes");
  box.replaceChildren();
  const top = Math.max(...logits.map(Math.abs)) || 1;
  classes.forEach((name, k) => {
    const label = document.createElement("span");
    label.className = "name" + (k === explained ? " target" : "");
    label.dataset.class = k;
    label.textContent = `${name}${k === predicted ? " (predicted)" : ""}`;
    label.addEventListener("click", () => setTarget(k));
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, (160 * Math.max(0, logits[k])) / top)}px`;
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = logits[k].toFixed(2);
    box.append(label, bar, value);
  });
  const text = state.target < 0 ? `why "${classes[explained]}"` : `why "${classes[explained]}" and not "${classes[predicted]}"`;
  $("target-text").textContent = explained === predicted ? `why "${classes[predicted]}"` : text;
}

function setTarget(k) {
  state.target = k;
  return schedule();
}

/** Relevance [1, C, H, W] summed over channels, red positive, blue negative, scaled to its largest |value|. */
function heatmap(canvas, data, dims) {
  const [, C, H, W] = dims;
  const map = new Float32Array(H * W);
  for (let c = 0; c < C; c++) for (let k = 0; k < H * W; k++) map[k] += data[c * H * W + k];
  const scale = map.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const image = new ImageData(W, H);
  for (let k = 0; k < H * W; k++) {
    const v = map[k] / scale;
    const fade = Math.round(255 * (1 - Math.abs(v)));
    image.data.set(v >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], k * 4);
  }
  paint(canvas, image);
}

function paint(canvas, image) {
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function showLayers(exposed) {
  const box = $("layers");
  box.replaceChildren();
  for (const layer of currentModel().layers) {
    const r = exposed[layer.tensor];
    if (!r || r.dims.length !== 4 || r.dims[2] * r.dims[3] === 1) continue; // maps only
    const figure = document.createElement("figure");
    const canvas = document.createElement("canvas");
    heatmap(canvas, r.data, r.dims);
    const caption = document.createElement("figcaption");
    caption.textContent = `${layer.label} (${r.dims.slice(1).join("x")})`;
    figure.append(canvas, caption);
    box.append(figure);
  }
}

// --- set-up ------------------------------------------------------------------------------------
async function chooseModel(name) {
  state.model = name;
  state.target = -1;
  const model = currentModel();
  const rules = $("rule");
  rules.replaceChildren(...Object.keys(model.graphs).map((r) => new Option(r, r)));
  state.rule = params.get("rule") && model.graphs[params.get("rule")] ? params.get("rule") : rules.value;
  rules.value = state.rule;
  $("draw").style.display = drawable() ? "block" : "none";
  $("input-view").style.display = drawable() ? "none" : "block";
  $("clear").style.display = $("draw-hint").style.display = drawable() ? "inline" : "none";
  $("samples").replaceChildren(
    ...model.samples.map((s, k) => {
      const img = document.createElement("img");
      img.src = s.file;
      img.title = s.label;
      img.dataset.sample = k;
      img.addEventListener("click", () => chooseSample(k));
      return img;
    }),
  );
  await chooseSample(Number(params.get("sample") ?? 0));
}

async function main() {
  backend = await pickBackend();
  ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const threads = ort.env.wasm.numThreads;
  $("backend").textContent = backend === "webgpu" ? "runs on WebGPU" : `runs on WASM (${threads} thread${threads > 1 ? "s" : ""})`;
  state.manifest = await (await fetch("manifest.json")).json();
  const models = $("model");
  models.replaceChildren(...state.manifest.models.map((m) => new Option(m.name, m.name)));
  models.value = params.get("model") ?? state.manifest.models[0].name;
  models.addEventListener("change", () => chooseModel(models.value));
  $("rule").addEventListener("change", () => {
    state.rule = $("rule").value;
    schedule();
  });
  $("predicted").addEventListener("click", () => setTarget(-1));
  $("upload").addEventListener("change", async () => {
    const file = $("upload").files[0];
    if (file) setInputFrom(await createImageBitmap(file));
  });
  setUpDrawing();
  await chooseModel(models.value);
}

app.ready = main().catch((error) => {
  status(`error: ${error.message ?? error}`, "error");
  throw error;
});
