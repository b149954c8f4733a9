// Run relevance graphs with onnxruntime-node or onnxruntime-web (WASM) under Node.
//
//   node tests/runtimes/run_node.mjs node|wasm JOB.json
//
// JOB.json: {"cases": [{"model": "a.onnx", "inputs": {"input": "x.npy", "target": "t.npy"},
// "outputs": "DIR"}]}. Each case writes DIR/<k>.npy for its k-th output and DIR/names.json.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readNpy, writeNpy } from "./npy.mjs";

const [backend, jobPath] = process.argv.slice(2);
if (!["node", "wasm"].includes(backend) || !jobPath) {
  console.error("usage: run_node.mjs node|wasm JOB.json");
  process.exit(2);
}
const ort = backend === "node" ? await import("onnxruntime-node") : await import("onnxruntime-web");
if (backend === "wasm") ort.env.wasm.numThreads = 1;
const options = backend === "node" ? { executionProviders: ["cpu"] } : { executionProviders: ["wasm"] };

const job = JSON.parse(readFileSync(jobPath, "utf8"));
for (const c of job.cases) {
  const session = await ort.InferenceSession.create(readFileSync(c.model), options);
  const missing = Object.keys(c.inputs).filter((name) => !session.inputNames.includes(name));
  if (missing.length) throw new Error(`${c.model}: the session does not list the inputs ${missing}`);
  const feeds = {};
  for (const [name, file] of Object.entries(c.inputs)) {
    const { type, dims, data } = readNpy(file);
    feeds[name] = new ort.Tensor(type, data, dims);
  }
  const results = await session.run(feeds);
  mkdirSync(c.outputs, { recursive: true });
  session.outputNames.forEach((name, k) => {
    const t = results[name];
    writeNpy(join(c.outputs, `${k}.npy`), t.type, t.dims, t.data);
  });
  writeFileSync(join(c.outputs, "names.json"), JSON.stringify(session.outputNames));
  await session.release();
}
