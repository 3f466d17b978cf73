/**
 * GGUF v3, the file format llama.cpp loads: a header (magic, version, counts), typed key/value
 * metadata, one info record per tensor (name, dims, ggml type, offset), then the tensor data,
 * each tensor starting on an `general.alignment` boundary (32 bytes unless the metadata says
 * otherwise). Dims are written fastest-varying first, the reverse of the row-major shapes that
 * Hugging Face and PyTorch use, so `GgufTensor.shape` is the HF shape and the writer reverses it.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, open, rename, rm, writeFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import { OPEN_FOR_READING } from "./read-json.js";
import { Q8_0_BLOCK, Q8_0_BLOCK_BYTES, quantizeQ8_0 } from "./gguf-quant.js";
import { encodeFromF32 } from "./safetensors.js";

/** Value types of GGUF v3, numbered as the format numbers them. */
const VALUE_TYPE = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

/** ggml tensor types that this writer produces. */
export const GGML_TYPE = { F32: 0, F16: 1, Q8_0: 8 } as const;

/** A stored tensor type: f32, f16, or ggml's Q8_0 blocks (see gguf-quant.ts). */
export type GgufTensorType = keyof typeof GGML_TYPE;

const MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const VERSION = 3;
const DEFAULT_ALIGNMENT = 32;

type NumberType = "uint8" | "int8" | "uint16" | "int16" | "uint32" | "int32" | "float32" | "float64";
type BigIntType = "uint64" | "int64";

/** A typed array element type: GGUF arrays hold values of one scalar type (nested arrays are not written). */
export type GgufArrayValue =
  | { type: "array"; itemType: NumberType; value: ArrayLike<number> }
  | { type: "array"; itemType: BigIntType; value: ArrayLike<bigint> }
  | { type: "array"; itemType: "bool"; value: readonly boolean[] }
  | { type: "array"; itemType: "string"; value: readonly string[] };

/**
 * A metadata value. JavaScript numbers do not say which GGUF type they are, so numbers are tagged
 * (`{ type: "uint32", value: 32 }`); a bare string or boolean stands for itself.
 */
export type GgufValue =
  | string
  | boolean
  | { type: NumberType; value: number }
  | { type: BigIntType; value: bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | GgufArrayValue;

/**
 * A tensor to write: `shape` in Hugging Face (row-major) order, `data` in f32, stored as `type`
 * (Q8_0 quantizes each row in blocks of 32, so its last dimension must be a multiple of 32).
 */
export interface GgufTensor {
  name: string;
  shape: number[];
  type: GgufTensorType;
  data: Float32Array;
}

/** A tensor's name, shape and stored type, known before its data. */
export type GgufTensorPlan = Omit<GgufTensor, "data">;

/** What readGgufHeader finds: metadata values decoded (64-bit integers as bigint, arrays as arrays). */
export interface GgufHeader {
  version: number;
  metadata: Map<string, unknown>;
  /** `dims` in GGUF order (fastest-varying first); `offset` relative to the start of the data section. */
  tensors: { name: string; dims: number[]; type: number; offset: number }[];
  alignment: number;
  /** Absolute file offset of the data section. */
  dataOffset: number;
}

type Metadata = ReadonlyArray<readonly [string, GgufValue]> | ReadonlyMap<string, GgufValue>;

/**
 * Writes a GGUF v3 file. `general.alignment` (uint32 32) is added unless the metadata sets it.
 * Tensor data is streamed: an array is written in one pass; an async iterable, whose shapes are
 * known only as it runs, is spooled to a temporary file beside `file` and copied after the
 * header. The file appears under its name only once complete.
 */
export async function writeGguf(
  file: string,
  metadata: Metadata,
  tensors: AsyncIterable<GgufTensor> | GgufTensor[],
): Promise<void> {
  if (Array.isArray(tensors)) {
    await writeGgufPlanned(file, metadata, tensors, tensors);
    return;
  }
  const spoolDir = await mkdtemp(path.join(path.dirname(file), ".gguf-spool-"));
  try {
    const spoolFile = path.join(spoolDir, "data");
    const alignment = alignmentOf(metadata);
    const plan: GgufTensorPlan[] = [];
    const spool = await open(spoolFile, "w");
    try {
      for await (const tensor of tensors) {
        plan.push({ name: tensor.name, shape: [...tensor.shape], type: tensor.type });
        await writeTensorData(spool, tensor, alignment);
      }
    } finally {
      await spool.close();
    }
    const assembled = path.join(spoolDir, "gguf");
    await writeFile(assembled, encodeHeader(metadata, plan, alignment));
    await pipeline(createReadStream(spoolFile), createWriteStream(assembled, { flags: "a" }));
    await rename(assembled, file);
  } finally {
    await rm(spoolDir, { recursive: true, force: true });
  }
}

/**
 * Writes a GGUF file whose tensors are known before their data: the header first, then each
 * tensor as `data` yields it, checked against the plan (same name, shape and type, in order).
 * Holds one tensor at a time.
 */
export async function writeGgufPlanned(
  file: string,
  metadata: Metadata,
  plan: readonly GgufTensorPlan[],
  data: AsyncIterable<GgufTensor> | Iterable<GgufTensor>,
): Promise<void> {
  const alignment = alignmentOf(metadata);
  const header = encodeHeader(metadata, plan, alignment);
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  const out = await open(tmp, "w");
  try {
    await out.write(header);
    let index = 0;
    for await (const tensor of data) {
      const expected = plan[index];
      if (
        expected === undefined ||
        expected.name !== tensor.name ||
        expected.type !== tensor.type ||
        expected.shape.join(",") !== tensor.shape.join(",")
      ) {
        throw new Error(
          `tensor ${index} is ${describe(tensor)}, but the header announced ${expected === undefined ? "no more tensors" : describe(expected)}`,
        );
      }
      await writeTensorData(out, tensor, alignment);
      index++;
    }
    if (index !== plan.length) throw new Error(`the header announced ${plan.length} tensors, data for ${index} came`);
  } catch (err) {
    await out.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await out.close();
  await rename(tmp, file);
}

function describe(t: GgufTensorPlan): string {
  return `${t.name} [${t.shape.join(", ")}] ${t.type}`;
}

function alignmentOf(metadata: Metadata): number {
  const value = metadataGet(metadata, "general.alignment");
  if (value === undefined) return DEFAULT_ALIGNMENT;
  if (typeof value !== "object" || value.type !== "uint32" || !Number.isInteger(value.value) || value.value <= 0 || value.value % 8 !== 0) {
    throw new RangeError("general.alignment must be a uint32 multiple of 8");
  }
  return value.value;
}

function metadataGet(metadata: Metadata, key: string): GgufValue | undefined {
  if (metadata instanceof Map) return (metadata as ReadonlyMap<string, GgufValue>).get(key);
  for (const [k, v] of metadata as ReadonlyArray<readonly [string, GgufValue]>) if (k === key) return v;
  return undefined;
}

function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) throw new RangeError(`invalid tensor dimension ${d} in [${shape.join(", ")}]`);
    n *= d;
  }
  return n;
}

function byteLength(t: GgufTensorPlan): number {
  const count = elementCount(t.shape);
  if (t.type !== "Q8_0") return count * (t.type === "F32" ? 4 : 2);
  const row = t.shape[t.shape.length - 1] ?? 0;
  if (row % Q8_0_BLOCK !== 0) throw new RangeError(`tensor ${t.name}: Q8_0 needs rows of a multiple of ${Q8_0_BLOCK} values, [${t.shape.join(", ")}] has rows of ${row}`);
  return (count / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
}

const alignUp = (n: number, alignment: number): number => Math.ceil(n / alignment) * alignment;

/** Magic, counts, metadata and tensor infos, padded so that the data section starts aligned. */
function encodeHeader(metadata: Metadata, plan: readonly GgufTensorPlan[], alignment: number): Buffer {
  const w = new ByteWriter();
  const kv: Array<readonly [string, GgufValue]> =
    metadata instanceof Map ? [...(metadata as ReadonlyMap<string, GgufValue>)] : [...(metadata as ReadonlyArray<readonly [string, GgufValue]>)];
  if (!kv.some(([k]) => k === "general.alignment")) kv.push(["general.alignment", { type: "uint32", value: alignment }]);
  const seen = new Set<string>();
  for (const [key] of kv) {
    if (seen.has(key)) throw new Error(`metadata key ${key} appears twice`);
    seen.add(key);
  }
  const names = new Set<string>();
  for (const t of plan) {
    if (names.has(t.name)) throw new Error(`tensor ${t.name} appears twice`);
    names.add(t.name);
  }

  w.u32(MAGIC);
  w.u32(VERSION);
  w.u64(BigInt(plan.length));
  w.u64(BigInt(kv.length));
  for (const [key, value] of kv) {
    w.string(key);
    writeValue(w, key, value);
  }
  let offset = 0;
  for (const t of plan) {
    w.string(t.name);
    w.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) w.u64(BigInt(t.shape[i] ?? 0));
    w.u32(GGML_TYPE[t.type]);
    w.u64(BigInt(offset));
    offset = alignUp(offset + byteLength(t), alignment);
  }
  w.pad(alignment);
  return w.finish();
}

function writeValue(w: ByteWriter, key: string, value: GgufValue): void {
  if (typeof value === "string") {
    w.u32(VALUE_TYPE.string);
    w.string(value);
    return;
  }
  if (typeof value === "boolean") {
    w.u32(VALUE_TYPE.bool);
    w.u8(value ? 1 : 0);
    return;
  }
  w.u32(VALUE_TYPE[value.type]);
  if (value.type === "array") {
    w.u32(VALUE_TYPE[value.itemType]);
    w.u64(BigInt(value.value.length));
    for (let i = 0; i < value.value.length; i++) writeScalar(w, key, value.itemType, value.value[i]);
    return;
  }
  writeScalar(w, key, value.type, value.value);
}

function writeScalar(w: ByteWriter, key: string, type: Exclude<keyof typeof VALUE_TYPE, "array">, v: unknown): void {
  const bad = (): never => {
    throw new RangeError(`metadata ${key}: ${String(v)} is not a valid ${type}`);
  };
  switch (type) {
    case "string":
      if (typeof v !== "string") bad();
      w.string(v as string);
      return;
    case "bool":
      if (typeof v !== "boolean") bad();
      w.u8(v ? 1 : 0);
      return;
    case "uint64":
    case "int64": {
      if (typeof v !== "bigint") bad();
      const b = v as bigint;
      if (type === "uint64" ? b < 0n || b >= 1n << 64n : b < -(1n << 63n) || b >= 1n << 63n) bad();
      if (type === "uint64") w.u64(b);
      else w.i64(b);
      return;
    }
    case "float32":
    case "float64":
      if (typeof v !== "number") bad();
      if (type === "float32") w.f32(v as number);
      else w.f64(v as number);
      return;
    default: {
      if (typeof v !== "number" || !Number.isInteger(v)) bad();
      const n = v as number;
      const [min, max] = INT_RANGE[type];
      if (n < min || n > max) bad();
      w.int(type, n);
    }
  }
}

const INT_RANGE = {
  uint8: [0, 0xff],
  int8: [-0x80, 0x7f],
  uint16: [0, 0xffff],
  int16: [-0x8000, 0x7fff],
  uint32: [0, 0xffffffff],
  int32: [-0x80000000, 0x7fffffff],
} as const;

/** Writes one tensor's bytes and the padding after it. */
async function writeTensorData(out: FileHandle, tensor: GgufTensor, alignment: number): Promise<void> {
  const count = elementCount(tensor.shape);
  if (tensor.data.length !== count) {
    throw new RangeError(`tensor ${tensor.name}: shape [${tensor.shape.join(", ")}] holds ${count} values, data has ${tensor.data.length}`);
  }
  const padded = alignUp(byteLength(tensor), alignment); // checks a Q8_0 tensor's rows
  const bytes = tensor.type === "Q8_0" ? quantizeQ8_0(tensor.data) : encodeFromF32(tensor.data, tensor.type);
  await out.write(bytes);
  if (padded > bytes.byteLength) await out.write(Buffer.alloc(padded - bytes.byteLength));
}

/** Grows a buffer as little-endian values are appended. */
class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  private pos = 0;

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.pos);
    this.pos += 4;
  }
  u64(v: bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(v, this.pos);
    this.pos += 8;
  }
  i64(v: bigint): void {
    this.reserve(8);
    this.buf.writeBigInt64LE(v, this.pos);
    this.pos += 8;
  }
  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.pos);
    this.pos += 4;
  }
  f64(v: number): void {
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  int(type: keyof typeof INT_RANGE, v: number): void {
    const size = { uint8: 1, int8: 1, uint16: 2, int16: 2, uint32: 4, int32: 4 }[type];
    this.reserve(size);
    if (type.startsWith("u")) this.buf.writeUIntLE(v, this.pos, size);
    else this.buf.writeIntLE(v, this.pos, size);
    this.pos += size;
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(BigInt(bytes.length));
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.pos);
    this.pos += bytes.length;
  }
  pad(alignment: number): void {
    const n = alignUp(this.pos, alignment) - this.pos;
    this.reserve(n);
    this.buf.fill(0, this.pos, this.pos + n);
    this.pos += n;
  }
  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

/** Fewest bytes a metadata entry takes: key length, empty key, value type, a one-byte value. */
const MIN_KV_BYTES = 8 + 4 + 1;
/** Fewest bytes a tensor info takes: name length, empty name, dim count, no dims, type, offset. */
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;
/** Bytes of one array item by value type (a string's length prefix; an array's item type and count). */
const MIN_ITEM_BYTES: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 8: 8, 9: 12, 10: 8, 11: 8, 12: 8 };

/**
 * Reads the header of a GGUF file (v2 or v3): metadata and tensor infos, not tensor data.
 * Every count, length and dimension the file states is checked against the bytes left in it (and
 * {@link LIMITS}) before anything is allocated from it.
 * @throws ModelFormatError naming the file when it is missing, not GGUF, cut short, or states a
 * count or size that its bytes cannot hold.
 */
export async function readGgufHeader(file: string): Promise<GgufHeader> {
  const handle = await open(file, OPEN_FOR_READING).catch((err: NodeJS.ErrnoException) => {
    throw new ModelFormatError(file, err.code === "ENOENT" ? "file is missing" : `cannot be read (${err.code ?? "unknown error"})`, { cause: err });
  });
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new ModelFormatError(file, "is not a regular file");
    const { size } = info;
    const r = new ByteReader(handle, file, size);
    if (size < 4 || (await r.u32()) !== MAGIC) throw new ModelFormatError(file, "not a GGUF file (bad magic)");
    const version = await r.u32();
    if (version !== 2 && version !== 3) throw new ModelFormatError(file, `unsupported GGUF version ${version}`);
    const tensorCount = await r.count("the tensor count", MIN_TENSOR_INFO_BYTES);
    const kvCount = await r.count("the metadata count", MIN_KV_BYTES);
    const metadata = new Map<string, unknown>();
    for (let i = 0; i < kvCount; i++) {
      const key = await r.string();
      metadata.set(key, await readValue(r, await r.u32(), 0));
    }
    r.fits("the tensor count", tensorCount, MIN_TENSOR_INFO_BYTES);
    const tensors: GgufHeader["tensors"] = [];
    for (let i = 0; i < tensorCount; i++) {
      const name = await r.string();
      const nDims = await r.u32();
      if (nDims > LIMITS.ggufDims) throw new ModelFormatError(file, `tensor ${i} has ${nDims} dimensions; at most ${LIMITS.ggufDims} are supported`);
      const dims: number[] = [];
      let elements = 1n;
      for (let d = 0; d < nDims; d++) {
        const dim = await r.u64();
        elements *= dim;
        // No ggml type stores an element in less than a bit.
        if (elements > BigInt(size) * 8n) throw new ModelFormatError(file, `tensor ${i} has dimensions past what ${size} bytes can hold`);
        dims.push(Number(dim));
      }
      const type = await r.u32();
      const offset = await r.u64();
      if (offset > BigInt(size)) throw new ModelFormatError(file, `tensor ${i} starts at data offset ${offset}, past the end of the ${size}-byte file`);
      tensors.push({ name, dims, type, offset: Number(offset) });
    }
    const a = metadata.get("general.alignment");
    if (a !== undefined && (typeof a !== "number" || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0)) {
      throw new ModelFormatError(file, "general.alignment must be a uint32 power of two");
    }
    const alignment = typeof a === "number" ? a : DEFAULT_ALIGNMENT;
    return { version, metadata, tensors, alignment, dataOffset: alignUp(r.position, alignment) };
  } finally {
    await handle.close();
  }
}

async function readValue(r: ByteReader, type: number, depth: number): Promise<unknown> {
  switch (type) {
    case VALUE_TYPE.uint8:
      return (await r.bytes(1)).readUInt8(0);
    case VALUE_TYPE.int8:
      return (await r.bytes(1)).readInt8(0);
    case VALUE_TYPE.uint16:
      return (await r.bytes(2)).readUInt16LE(0);
    case VALUE_TYPE.int16:
      return (await r.bytes(2)).readInt16LE(0);
    case VALUE_TYPE.uint32:
      return r.u32();
    case VALUE_TYPE.int32:
      return (await r.bytes(4)).readInt32LE(0);
    case VALUE_TYPE.float32:
      return (await r.bytes(4)).readFloatLE(0);
    case VALUE_TYPE.bool:
      return (await r.bytes(1)).readUInt8(0) !== 0;
    case VALUE_TYPE.string:
      return r.string();
    case VALUE_TYPE.uint64:
      return r.u64();
    case VALUE_TYPE.int64:
      return (await r.bytes(8)).readBigInt64LE(0);
    case VALUE_TYPE.float64:
      return (await r.bytes(8)).readDoubleLE(0);
    case VALUE_TYPE.array: {
      const at = r.position;
      const itemType = await r.u32();
      const itemBytes = MIN_ITEM_BYTES[itemType];
      if (itemBytes === undefined) throw new ModelFormatError(r.file, `unknown metadata value type ${itemType} at byte ${at}`);
      if (itemType === VALUE_TYPE.array && depth + 1 >= LIMITS.ggufArrayDepth) {
        throw new ModelFormatError(r.file, `arrays nest deeper than ${LIMITS.ggufArrayDepth} at byte ${at}`);
      }
      const count = await r.count(`the array at byte ${at}`, itemBytes);
      const items: unknown[] = [];
      for (let i = 0; i < count; i++) items.push(await readValue(r, itemType, depth + 1));
      return items;
    }
    default:
      throw new ModelFormatError(r.file, `unknown metadata value type ${type} at byte ${r.position}`);
  }
}

/** Reads a file front to back through a buffer, so a header of many small fields costs few reads. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private start = 0; // file offset of buf[0]
  private pos = 0; // index into buf

  constructor(
    private readonly handle: FileHandle,
    readonly file: string,
    private readonly size: number,
  ) {}

  get position(): number {
    return this.start + this.pos;
  }

  /** A count of records of at least `minBytes` each, refused when the rest of the file cannot hold that many. */
  async count(what: string, minBytes: number): Promise<number> {
    const n = await this.u64();
    this.fits(what, n, minBytes);
    return Number(n);
  }

  fits(what: string, n: number | bigint, minBytes: number): void {
    const left = this.size - this.position;
    if (BigInt(n) * BigInt(minBytes) > BigInt(left)) {
      throw new ModelFormatError(this.file, `${what} is ${n}, more than the ${left} bytes left in the file can hold`);
    }
  }

  async bytes(n: number): Promise<Buffer> {
    if (n > this.size - this.position) {
      throw new ModelFormatError(this.file, `file ends inside the GGUF header (${n} bytes wanted at byte ${this.position}, the file has ${this.size})`);
    }
    if (this.pos + n > this.buf.length) {
      const keep = this.buf.subarray(this.pos);
      const chunk = Buffer.alloc(Math.max(n - keep.length, 1 << 20));
      const { bytesRead } = await this.handle.read(chunk, 0, chunk.length, this.start + this.buf.length);
      this.start += this.pos;
      this.buf = Buffer.concat([keep, chunk.subarray(0, bytesRead)]);
      this.pos = 0;
      if (n > this.buf.length) throw new ModelFormatError(this.file, `file ends inside the GGUF header (byte ${this.start + this.buf.length})`);
    }
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  async u32(): Promise<number> {
    return (await this.bytes(4)).readUInt32LE(0);
  }
  async u64(): Promise<bigint> {
    return (await this.bytes(8)).readBigUInt64LE(0);
  }
  async string(): Promise<string> {
    const n = await this.u64();
    if (n > BigInt(this.size - this.position)) {
      throw new ModelFormatError(this.file, `a string of ${n} bytes at byte ${this.position - 8} runs past the end of the ${this.size}-byte file`);
    }
    return (await this.bytes(Number(n))).toString("utf8");
  }
}
