/**
 * safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
 * a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {…}}`, then the
 * tensors' bytes, offsets counted from the end of the header. Reading checks what the reference
 * loader checks (tensors tile the data exactly), so a folder we accept is one transformers loads.
 */
import { open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import path from "node:path";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import { OPEN_FOR_READING, asObject, parseJson, readJsonFile, shown } from "./read-json.js";

/** Floating-point element types Lathe reads and writes. */
export type Dtype = "F32" | "F16" | "BF16";

export const DTYPE_BYTES: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** Where one tensor lies: `offset` is absolute within `file`. */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Path of the .safetensors file that holds it. */
  file: string;
  /** Byte offset of the data from the start of the file. */
  offset: number;
  byteLength: number;
}

export const SINGLE_FILE = "model.safetensors";
export const INDEX_FILE = "model.safetensors.index.json";

/**
 * Tensors of a model folder: model.safetensors, or the shards named by model.safetensors.index.json
 * (the single file wins when both exist, as in transformers). Sorted by name.
 * @throws ModelFormatError naming the file (and tensor): no weights, a malformed header, a tensor
 * outside the file, an unsupported dtype, an index naming a tensor its shard lacks.
 */
export async function listTensors(dir: string): Promise<TensorInfo[]> {
  const single = path.join(dir, SINGLE_FILE);
  if (await isFile(single)) return (await readSafetensorsHeader(single)).tensors;
  const indexFile = path.join(dir, INDEX_FILE);
  if (!(await isFile(indexFile))) {
    throw new ModelFormatError(single, `file is missing (and there is no ${INDEX_FILE})`);
  }
  const tensors: TensorInfo[] = [];
  const byName = new Map<string, TensorInfo>();
  for (const [shard, names] of await readShardIndex(indexFile)) {
    const shardFile = path.join(dir, shard);
    const { tensors: inShard } = await readSafetensorsHeader(shardFile);
    for (const t of inShard) {
      const other = byName.get(t.name);
      if (other !== undefined) {
        throw new ModelFormatError(shardFile, `tensor \`${t.name}\` is also in ${path.basename(other.file)}`);
      }
      byName.set(t.name, t);
      tensors.push(t);
    }
    for (const name of names) {
      if (!byName.has(name) || byName.get(name)?.file !== shardFile) {
        throw new ModelFormatError(indexFile, `weight_map puts tensor \`${name}\` in ${shard}, which does not hold it`);
      }
    }
  }
  return tensors.sort((a, b) => compareNames(a.name, b.name));
}

/** Shard file → tensor names, in order of first appearance in the index's weight_map. */
export async function readShardIndex(indexFile: string): Promise<Map<string, string[]>> {
  const index = asObject(await readJsonFile(indexFile));
  const weightMap = asObject(index?.["weight_map"]);
  if (weightMap === null) throw new ModelFormatError(indexFile, "`weight_map` is missing or not an object");
  const shards = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard is a file beside the index; anything else could read outside the folder.
    if (typeof shard !== "string" || shard !== path.basename(shard) || shard === "." || shard === ".." || !shard.endsWith(".safetensors")) {
      throw new ModelFormatError(indexFile, `weight_map entry for tensor \`${name}\` must name a .safetensors file in the folder, got ${JSON.stringify(shard)}`);
    }
    const names = shards.get(shard) ?? [];
    names.push(name);
    shards.set(shard, names);
  }
  if (shards.size === 0) throw new ModelFormatError(indexFile, "`weight_map` is empty");
  return shards;
}

/** Tensors (sorted by name) and `__metadata__` of one .safetensors file. */
export async function readSafetensorsHeader(file: string): Promise<{ tensors: TensorInfo[]; metadata: Record<string, string> }> {
  const handle = await open(file, OPEN_FOR_READING).catch((err: NodeJS.ErrnoException) => {
    throw new ModelFormatError(file, err.code === "ENOENT" ? "file is missing" : `cannot be read (${err.code ?? String(err)})`, { cause: err });
  });
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new ModelFormatError(file, "is not a regular file");
    const { size } = info;
    if (size < 8) throw new ModelFormatError(file, `${size} bytes is too short for a safetensors file (truncated?)`);
    const prefix = await readExactly(handle, 0, 8);
    // As a bigint: a length past 2^53 would lose bits as a number and might then seem to fit.
    const declared = Buffer.from(prefix.buffer).readBigUInt64LE(0);
    if (declared > BigInt(size - 8)) {
      throw new ModelFormatError(file, `header length ${declared} does not fit in the file of ${size} bytes (corrupted or truncated)`);
    }
    const headerLength = Number(declared);
    if (headerLength > LIMITS.safetensorsHeaderBytes) {
      throw new ModelFormatError(file, `header length is ${headerLength} bytes; at most ${LIMITS.safetensorsHeaderBytes} are supported`);
    }
    const headerBytes = await readExactly(handle, 8, headerLength);
    const header = asObject(parseJson(file, headerBytes, "header is not valid JSON (corrupted?)", 8));
    if (header === null) throw new ModelFormatError(file, "header is not a JSON object");
    return parseHeader(file, header, 8 + headerLength, size);
  } finally {
    await handle.close();
  }
}

function parseHeader(
  file: string,
  header: Record<string, unknown>,
  dataStart: number,
  fileSize: number,
): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const ranges: Array<{ name: string; begin: number; end: number }> = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") {
      for (const [key, v] of Object.entries(asObject(value) ?? {})) {
        if (typeof v !== "string") throw new ModelFormatError(file, `__metadata__.${key} must be a string`);
        metadata[key] = v;
      }
      continue;
    }
    if (name.length > LIMITS.tensorNameChars) {
      throw new ModelFormatError(file, `a tensor name is ${name.length} characters long; at most ${LIMITS.tensorNameChars} are supported`);
    }
    const bad = (what: string): never => {
      throw new ModelFormatError(file, `tensor \`${name}\`: ${what}`);
    };
    const entry = asObject(value) ?? bad("header entry is not an object");
    const dtype = entry["dtype"];
    if (typeof dtype !== "string") bad("`dtype` is missing");
    if (!isDtype(dtype)) return bad(`dtype ${shown(dtype)} is not supported (Lathe reads F32, F16 and BF16)`);
    const shape = entry["shape"];
    if (!Array.isArray(shape) || !shape.every((d): d is number => Number.isSafeInteger(d) && (d as number) >= 0)) {
      return bad(`\`shape\` must be a list of non-negative integers, got ${shownList(shape)}`);
    }
    if (shape.length > LIMITS.tensorRank) bad(`\`shape\` has ${shape.length} dimensions; at most ${LIMITS.tensorRank} are supported`);
    const offsets = entry["data_offsets"];
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o): o is number => Number.isSafeInteger(o) && (o as number) >= 0)) {
      return bad(`\`data_offsets\` must be two non-negative integers, got ${shownList(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    // In bigints: a product of safe integers need not be one, and a rounded one must not pass for the span.
    const expected = shape.reduce((n: bigint, d: number) => n * BigInt(d), BigInt(DTYPE_BYTES[dtype]));
    if (BigInt(end - begin) !== expected) {
      bad(`data_offsets [${begin}, ${end}] span ${end - begin} bytes, but ${dtype} of shape [${shape.join(", ")}] needs ${expected}`);
    }
    if (dataStart + end > fileSize) {
      bad(`data ends at byte ${dataStart + end} but the file has ${fileSize} bytes (truncated?)`);
    }
    ranges.push({ name, begin, end });
    tensors.push({ name, dtype, shape: [...shape], file, offset: dataStart + begin, byteLength: end - begin });
  }
  // The reference loader wants the tensors to tile the data with no gap, overlap or trailing bytes.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const r of ranges) {
    if (r.begin !== cursor) {
      throw new ModelFormatError(file, `tensor \`${r.name}\` starts at data offset ${r.begin}, expected ${cursor} (tensors overlap or leave a gap)`);
    }
    cursor = r.end;
  }
  if (dataStart + cursor !== fileSize) {
    throw new ModelFormatError(file, `${fileSize - dataStart - cursor} bytes follow the last tensor (corrupted?)`);
  }
  tensors.sort((a, b) => compareNames(a.name, b.name));
  return { tensors, metadata };
}

/** A list of numbers as written (up to 8 of them), anything else only described. */
function shownList(value: unknown): string {
  if (!Array.isArray(value) || value.length > 8 || !value.every((v) => typeof v === "number")) return shown(value);
  return `[${value.join(", ")}]`;
}

/**
 * The first element of `t` that is NaN or infinite, or null when all are finite. Reads the data
 * {@link LIMITS}.scanChunkBytes at a time, so memory stays bounded whatever the tensor's size.
 * @throws ModelFormatError naming the file and tensor when the data cannot be read.
 */
export async function findNonFinite(t: TensorInfo): Promise<{ index: number; value: "NaN" | "infinity" } | null> {
  assertLittleEndian();
  // Exponent and mantissa bits: all-ones exponent is infinity (mantissa 0) or NaN.
  const [exponent, mantissa] = t.dtype === "F32" ? [0x7f800000, 0x007fffff] : t.dtype === "F16" ? [0x7c00, 0x03ff] : [0x7f80, 0x007f];
  const size = DTYPE_BYTES[t.dtype];
  const chunk = new Uint8Array(Math.min(LIMITS.scanChunkBytes - (LIMITS.scanChunkBytes % 4), t.byteLength));
  let handle: FileHandle | undefined;
  try {
    handle = await open(t.file, "r");
    for (let done = 0; done < t.byteLength; ) {
      const length = Math.min(chunk.length, t.byteLength - done);
      for (let got = 0; got < length; ) {
        const { bytesRead } = await handle.read(chunk, got, length - got, t.offset + done + got);
        if (bytesRead === 0) throw new Error(`file ends after ${t.offset + done + got} bytes, expected ${t.offset + t.byteLength}`);
        got += bytesRead;
      }
      const words = size === 4 ? new Uint32Array(chunk.buffer, 0, length / 4) : new Uint16Array(chunk.buffer, 0, length / 2);
      for (let i = 0; i < words.length; i++) {
        const w = words[i]!;
        if ((w & exponent) === exponent) return { index: done / size + i, value: (w & mantissa) !== 0 ? "NaN" : "infinity" };
      }
      done += length;
    }
    return null;
  } catch (err) {
    throw new ModelFormatError(t.file, `tensor \`${t.name}\` cannot be read: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await handle?.close();
  }
}

/** The tensor's bytes as they are stored. */
export async function readTensorBytes(t: TensorInfo): Promise<Uint8Array> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(t.file, "r");
    return await readExactly(handle, t.offset, t.byteLength);
  } catch (err) {
    throw new ModelFormatError(t.file, `tensor \`${t.name}\` cannot be read: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  } finally {
    await handle?.close();
  }
}

/** The tensor's values as f32 (f16 and bf16 are widened exactly). */
export async function readTensorF32(t: TensorInfo): Promise<Float32Array> {
  assertLittleEndian();
  return decodeToF32(await readTensorBytes(t), t.dtype);
}

/** Widens stored bytes of `dtype` to f32; `bytes` must start at offset 0 of its buffer. */
export function decodeToF32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === "F16") {
    const table = f16Table();
    for (let i = 0; i < n; i++) out[i] = table[halves[i]!]!;
  } else {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = halves[i]! << 16;
  }
  return out;
}

/**
 * Narrows f32 values to the bytes of `dtype`. F16 and BF16 round to nearest, ties to even (as
 * PyTorch's `.to()` does): BF16 keeps 8 significant bits, so 1 + 2⁻⁸ becomes 1 and 1 + 3·2⁻⁸
 * becomes 1 + 2⁻⁶; values past the largest finite number become ±Infinity; NaN stays NaN.
 */
export function encodeFromF32(data: Float32Array, dtype: Dtype): Uint8Array {
  assertLittleEndian();
  if (dtype === "F32") return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const bits = new Uint32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const out = new Uint16Array(bits.length);
  if (dtype === "F16") {
    for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16(bits[i]!);
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16(bits[i]!);
  }
  return new Uint8Array(out.buffer);
}

/** A tensor to write, its bytes already in `dtype` or produced when the writer reaches it. */
export interface RawTensor {
  name: string;
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array | (() => Promise<Uint8Array>);
}

/**
 * Writes a .safetensors file: the header padded with spaces to a multiple of 8 bytes (so the data
 * is aligned), tensors in name order, each converted from f32 to its `dtype` (see encodeFromF32
 * for the rounding). Written to a temporary file and renamed, so a reader never sees half a file.
 */
export async function writeSafetensors(
  file: string,
  tensors: readonly { name: string; dtype: Dtype; shape: number[]; data: Float32Array }[],
  metadata?: Record<string, string>,
): Promise<void> {
  for (const t of tensors) {
    if (t.data.length !== elementCount(t.shape)) {
      throw new RangeError(`tensor ${t.name}: ${t.data.length} values for shape [${t.shape.join(", ")}]`);
    }
  }
  await writeSafetensorsRaw(
    file,
    tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: async () => encodeFromF32(t.data, t.dtype) })),
    metadata,
  );
}

/** writeSafetensors for bytes already in their dtype; lazy `bytes` keep one tensor in memory at a time. */
export async function writeSafetensorsRaw(file: string, tensors: readonly RawTensor[], metadata?: Record<string, string>): Promise<void> {
  const sorted = [...tensors].sort((a, b) => compareNames(a.name, b.name));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined && Object.keys(metadata).length > 0) header["__metadata__"] = metadata;
  let offset = 0;
  for (const t of sorted) {
    if (t.name === "__metadata__" || Object.hasOwn(header, t.name)) throw new RangeError(`tensor name ${t.name} is reserved or repeated`);
    const length = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + length] };
    offset += length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, "utf8");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const temporary = `${file}.tmp-${process.pid}-${Date.now()}`;
  const handle = await open(temporary, "w");
  try {
    await handle.write(prefix);
    await handle.write(headerBytes);
    for (const t of sorted) {
      const bytes = typeof t.bytes === "function" ? await t.bytes() : t.bytes;
      const length = elementCount(t.shape) * DTYPE_BYTES[t.dtype];
      if (bytes.byteLength !== length) throw new RangeError(`tensor ${t.name}: ${bytes.byteLength} bytes, expected ${length}`);
      await handle.write(bytes);
    }
    await handle.close();
    await rename(temporary, file);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await rm(temporary, { force: true });
    throw err;
  }
}

/** Total number of elements over the tensors. */
export function parameterCount(tensors: readonly TensorInfo[]): number {
  return tensors.reduce((sum, t) => sum + elementCount(t.shape), 0);
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

export function isDtype(value: unknown): value is Dtype {
  return value === "F32" || value === "F16" || value === "BF16";
}

/** Code-unit order, locale-independent, so files come out the same everywhere. */
export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function readExactly(handle: FileHandle, position: number, length: number): Promise<Uint8Array> {
  // A fresh ArrayBuffer per read: typed-array views over it are aligned, unlike Buffer's pool.
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(out, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`file ends after ${position + done} bytes, expected ${position + length}`);
    done += bytesRead;
  }
  return out;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

function assertLittleEndian(): void {
  // safetensors is little-endian and typed arrays use the host's order.
  if (endianness() !== "LE") throw new Error("safetensors conversion needs a little-endian host");
}

let f16ToF32: Float32Array | undefined;

/** All 65536 f16 values as f32, built once: a lookup is faster than decoding bits per element. */
function f16Table(): Float32Array {
  if (f16ToF32 !== undefined) return f16ToF32;
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    let value: number;
    if (exponent === 0) value = mantissa * 2 ** -24;
    else if (exponent === 0x1f) value = mantissa === 0 ? Infinity : NaN;
    else value = (1 + mantissa / 1024) * 2 ** (exponent - 15);
    table[h] = sign * value;
  }
  f16ToF32 = table;
  return table;
}

/** f32 bits → f16 bits, round to nearest even, overflow to infinity, gradual underflow. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 | (mantissa >>> 13) : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let h = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  // A carry out of the mantissa moves into the exponent, which is the right answer (up to infinity).
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}

/** f32 bits → bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
