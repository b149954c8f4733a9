// Minimal .npy (format 1.0/2.0) reading and writing for float32, int64 and int32 arrays.
import { readFileSync, writeFileSync } from "node:fs";

const TYPES = {
  "<f4": ["float32", Float32Array],
  "<i8": ["int64", BigInt64Array],
  "<i4": ["int32", Int32Array],
};

/** Read an .npy file: {type, dims, data} (data a typed array, C order). */
export function readNpy(path) {
  const bytes = readFileSync(path);
  if (bytes.toString("latin1", 0, 6) !== "\x93NUMPY") throw new Error(`${path}: not an .npy file`);
  const major = bytes[6];
  const headerLength = major === 1 ? bytes.readUInt16LE(8) : bytes.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLength;
  const header = bytes.toString("latin1", major === 1 ? 10 : 12, start);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order is not supported`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1];
  const dims = shape.split(",").map((s) => s.trim()).filter((s) => s.length).map(Number);
  if (!(descr in TYPES)) throw new Error(`${path}: dtype ${descr} is not supported`);
  const [type, ArrayType] = TYPES[descr];
  const copy = bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + bytes.length);
  return { type, dims, data: new ArrayType(copy) };
}

/** Write a typed array (float32, int64 or int32) as an .npy file of shape dims. */
export function writeNpy(path, type, dims, data) {
  const descr = Object.keys(TYPES).find((k) => TYPES[k][0] === type);
  if (!descr) throw new Error(`cannot write ${type} as .npy`);
  const shape = dims.length === 1 ? `(${dims[0]},)` : `(${dims.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += " ".repeat(63 - ((header.length + 10) % 64)) + "\n";
  const prefix = Buffer.alloc(10);
  prefix.write("\x93NUMPY", 0, "latin1");
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  writeFileSync(path, Buffer.concat([prefix, Buffer.from(header, "latin1"), body]));
}
