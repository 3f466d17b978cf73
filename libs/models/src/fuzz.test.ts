/**
 * Property tests over every parser of untrusted files in this package: config.json,
 * safetensors headers and indexes, tokenizer.json and tokenizer_config.json, PEFT adapter
 * folders, GGUF headers, and the JSON error locator. Each input is random bytes, a valid file
 * mutated (bytes flipped, cut, lengths and counts overwritten with huge values, JSON subtrees
 * replaced), or a file declaring sizes it cannot hold. Every parser must return a result or throw
 * ModelFormatError: never another error, never a run past the per-case timeout, and the heap
 * stays under HEAP_BOUND_BYTES throughout.
 *
 * Fixed seed, LATHE_FUZZ_RUNS runs per property (default 200); LATHE_FUZZ_RUNS=5000 (and
 * LATHE_FUZZ_SEED=n for other inputs) for a longer search.
 */
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readModelConfig } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { exportGguf } from "./gguf-export.js";
import { readGgufHeader } from "./gguf.js";
import { expectedTensors, inspectModelFolder } from "./inspect.js";
import { LIMITS } from "./limits.js";
import { readPeftAdapter, writeTinyAdapter } from "./peft.js";
import { jsonErrorOffset } from "./read-json.js";
import { listTensors, readSafetensorsHeader } from "./safetensors.js";
import { writeTinyModel } from "./tiny-model.js";
import { loadTokenizer } from "./tokenizer.js";

const RUNS = Number(process.env["LATHE_FUZZ_RUNS"] ?? 200);
const SEED = Number(process.env["LATHE_FUZZ_SEED"] ?? 20_240_611);
/** A case that takes longer is a failure (a hang, or work proportional to a stated number). */
const CASE_TIMEOUT_MS = 10_000;
const HEAP_BOUND_BYTES = 512 * 2 ** 20;
const TEST_TIMEOUT_MS = Math.max(120_000, RUNS * 600);
/** What a linked-to secret file might hold; no refusal of a file that is not JSON may quote it. */
const SECRET = "hunter2-SECRET-7f3a9c";

let peakHeap = 0;

/** Runs one case: a result or a ModelFormatError pass; any other error fails the property. */
async function resultOrFormatError(run: () => Promise<unknown>, opts: { secret?: boolean } = {}): Promise<void> {
  const failure = await run().then(
    () => null,
    (err: unknown) => {
      if (!(err instanceof ModelFormatError)) return `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)} instead of a ModelFormatError`;
      return opts.secret === true && err.message.includes(SECRET) ? `the message quotes the file: ${err.message}` : null;
    },
  );
  const heap = process.memoryUsage().heapUsed;
  peakHeap = Math.max(peakHeap, heap);
  if (failure !== null) throw new Error(failure);
  if (heap > HEAP_BOUND_BYTES) throw new Error(`heap reached ${heap} bytes`);
}

async function check<T>(arbitrary: fc.Arbitrary<T>, predicate: (value: T) => Promise<void>): Promise<void> {
  await fc.assert(fc.asyncProperty(arbitrary, predicate), { seed: SEED, numRuns: RUNS, timeout: CASE_TIMEOUT_MS, endOnFailure: false });
}

/** Numbers that sit on the edges of the limits, of integer precision and of typed-array sizes. */
const nastyNumber = fc.oneof(
  fc.constantFrom(0, -1, 1, 2, 3, 7, 1025, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, Number.MAX_SAFE_INTEGER, 1e9, 1e12, 1e300, 0.5, 1e-300, -0.5),
  fc.constantFrom(LIMITS.layers, LIMITS.layers + 1, LIMITS.vocabSize, LIMITS.vocabSize + 1, LIMITS.hiddenSize + 1, LIMITS.contextLength + 1),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: nastyNumber },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: fc.array(nastyNumber, { maxLength: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, "", "LlamaForCausalLM", "q_proj", ".*", "(a+)+$", "F16", "BPE", "Unigram", "WordPiece") },
  { weight: 1, arbitrary: fc.string({ maxLength: 20 }) },
);

/** Replacements, deletions and insertions at nodes of a JSON document, chosen by index. */
interface JsonMutation {
  at: number;
  op: "replace" | "delete" | "insert";
  key: string;
  value: unknown;
}
const jsonMutations = fc.array(
  fc.record({
    at: fc.nat(),
    op: fc.constantFrom("replace" as const, "replace" as const, "delete" as const, "insert" as const),
    key: fc.oneof(fc.constantFrom("type", "vocab", "merges", "added_tokens", "id", "r", "target_modules", "num_hidden_layers", "rope_scaling", "shape"), fc.string({ maxLength: 8 })),
    value: nastyValue,
  }),
  { minLength: 1, maxLength: 4 },
);

/** The containers of a JSON document with each of their keys, in document order, at most `cap`. */
function slots(root: unknown, cap = 20_000): Array<{ parent: Record<string, unknown> | unknown[]; key: string | number }> {
  const out: Array<{ parent: Record<string, unknown> | unknown[]; key: string | number }> = [];
  const stack: unknown[] = [root];
  while (stack.length > 0 && out.length < cap) {
    const node = stack.pop();
    if (Array.isArray(node)) {
      node.forEach((v, i) => {
        out.push({ parent: node, key: i });
        stack.push(v);
      });
    } else if (typeof node === "object" && node !== null) {
      for (const [k, v] of Object.entries(node)) {
        out.push({ parent: node as Record<string, unknown>, key: k });
        stack.push(v);
      }
    }
  }
  return out;
}

function mutateJson(original: unknown, mutations: readonly JsonMutation[]): unknown {
  const doc = structuredClone(original);
  for (const m of mutations) {
    const all = slots(doc);
    const slot = all[m.at % Math.max(all.length, 1)];
    if (slot === undefined) continue;
    const { parent, key } = slot;
    if (Array.isArray(parent)) {
      const i = key as number;
      if (m.op === "delete") parent.splice(i, 1);
      else if (m.op === "insert") parent.splice(i, 0, m.value);
      else parent[i] = m.value;
    } else if (m.op === "delete") delete parent[key as string];
    else if (m.op === "insert") parent[m.key] = m.value;
    else parent[key as string] = m.value;
  }
  return doc;
}

/** Byte-level damage to a binary file. */
type ByteMutation =
  | { kind: "set"; at: number; value: number }
  | { kind: "cut"; at: number }
  | { kind: "u64"; at: number; value: bigint }
  | { kind: "append"; bytes: Uint8Array };
const hugeU64 = fc.oneof(
  fc.bigUintN(64),
  fc.constantFrom(0n, 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 100_000_001n),
  fc.bigUintN(20),
);
const byteMutations = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant("set" as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
    fc.record({ kind: fc.constant("u64" as const), at: fc.nat(), value: hugeU64 }),
    fc.record({ kind: fc.constant("append" as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  ),
  { minLength: 1, maxLength: 5 },
);

/**
 * Applies `mutations` to a copy of `bytes`. Positions fall in the first `hot` bytes (the header)
 * three times in four, and at 8-byte-aligned or interesting offsets (`u64` at 0, 8, 16) often.
 */
function mutateBytes(bytes: Uint8Array, mutations: readonly ByteMutation[], hot: number, anchors: readonly number[] = []): Uint8Array {
  let out = Buffer.from(bytes);
  for (const m of mutations) {
    if (m.kind === "append") {
      out = Buffer.concat([out, m.bytes]);
      continue;
    }
    const span = m.at % 4 === 0 ? out.length : Math.min(out.length, hot);
    const at = m.kind === "u64" && m.at % 3 === 0 && anchors.length > 0 ? anchors[m.at % anchors.length]! : span === 0 ? 0 : m.at % span;
    if (m.kind === "set") {
      if (at < out.length) out[at] = m.value;
    } else if (m.kind === "cut") {
      out = out.subarray(0, at);
    } else if (at + 8 <= out.length) {
      out.writeBigUInt64LE(m.value, at);
    }
  }
  return out;
}

describe("parsers of untrusted files (fuzz)", () => {
  let root: string;
  let model: string;
  let adapter: string;
  let gguf: Buffer;
  let weights: Buffer;
  let config: Record<string, unknown>;
  let tokenizerJson: Record<string, unknown>;
  let tokenizerConfig: Record<string, unknown>;
  let adapterConfig: Record<string, unknown>;
  let adapterWeights: Buffer;

  /** A scratch copy of a folder, into which a case writes its files. */
  async function scratch(name: string, from: string): Promise<string> {
    const dir = path.join(root, name);
    await mkdir(dir, { recursive: true });
    for (const file of await readdir(from)) await copyFile(path.join(from, file), path.join(dir, file));
    return dir;
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-fuzz-"));
    model = path.join(root, "model");
    await writeTinyModel(model, { layers: 1, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, vocab: 300 });
    adapter = path.join(root, "adapter");
    await writeTinyAdapter(adapter, model, { r: 2, targetModules: ["q_proj", "v_proj"] });
    const ggufFile = path.join(root, "model.gguf");
    await exportGguf(model, ggufFile, { dtype: "F16" });
    gguf = await readFile(ggufFile);
    weights = await readFile(path.join(model, "model.safetensors"));
    config = JSON.parse(await readFile(path.join(model, "config.json"), "utf8")) as Record<string, unknown>;
    tokenizerJson = JSON.parse(await readFile(path.join(model, "tokenizer.json"), "utf8")) as Record<string, unknown>;
    tokenizerConfig = JSON.parse(await readFile(path.join(model, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    adapterConfig = JSON.parse(await readFile(path.join(adapter, "adapter_config.json"), "utf8")) as Record<string, unknown>;
    adapterWeights = await readFile(path.join(adapter, "adapter_model.safetensors"));
  }, 60_000);
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("the JSON error locator agrees with JSON.parse on what is valid", async () => {
    const damaged = fc.tuple(fc.json({ maxDepth: 3 }), fc.nat(), fc.nat(3), fc.string({ maxLength: 3 })).map(([text, at, cut, insert]) => {
      const i = at % (text.length + 1);
      return text.slice(0, i) + insert + text.slice(Math.min(text.length, i + cut));
    });
    await check(fc.oneof(fc.json({ maxDepth: 3 }), damaged, fc.string({ maxLength: 30 })), async (text) => {
      let valid = true;
      try {
        JSON.parse(text);
      } catch {
        valid = false;
      }
      const at = jsonErrorOffset(text);
      expect(at === -1).toBe(valid);
      if (!valid) expect(at).toBeLessThanOrEqual(text.length);
    });
  }, TEST_TIMEOUT_MS);

  it("config.json: readModelConfig, inspectModelFolder and exportGguf return or throw ModelFormatError", async () => {
    const dir = await scratch("config", model);
    const text = fc.oneof(
      jsonMutations.map((m) => JSON.stringify(mutateJson(config, m))),
      fc.tuple(fc.string({ maxLength: 200 }), fc.nat()).map(([s, at]) => {
        const json = JSON.stringify({ ...config, token: SECRET });
        const i = at % json.length;
        return json.slice(0, i) + s + SECRET + json.slice(i);
      }),
      fc.string({ maxLength: 200 }).map((s) => `${SECRET}${s}`),
    );
    await check(text, async (contents) => {
      await writeFile(path.join(dir, "config.json"), contents);
      // A field's short value may be quoted ("got \"16\""); bytes that are not JSON never are.
      const secret = !isJson(contents);
      await resultOrFormatError(async () => {
        const parsed = await readModelConfig(dir);
        // What it accepts stays within the limits, so what is built from it does.
        expect(parsed.numLayers).toBeLessThanOrEqual(LIMITS.layers);
        expect(parsed.vocabSize).toBeLessThanOrEqual(LIMITS.vocabSize);
        expect(parsed.hiddenSize).toBeLessThanOrEqual(LIMITS.hiddenSize);
        let expected = 0;
        for (const _ of expectedTensors(parsed)) if (++expected > 20 * LIMITS.layers) break;
        expect(expected).toBeLessThanOrEqual(12 * LIMITS.layers + 3);
        await inspectModelFolder(dir);
        await exportGguf(dir, path.join(root, "config-out.gguf"));
      }, { secret });
    });
  }, TEST_TIMEOUT_MS);

  it("safetensors: random bytes, damaged files and huge declared lengths and shapes", async () => {
    const dir = path.join(root, "safetensors");
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, "model.safetensors");
    const headerEnd = 8 + Number(weights.readBigUInt64LE(0));
    const dimension = fc.oneof(nastyNumber, fc.nat(64));
    const handMade = fc
      .record({
        dtype: fc.oneof(fc.constantFrom("F32", "F16", "BF16", "I8", "F64"), fc.string({ maxLength: 4 })),
        shape: fc.oneof(fc.array(dimension, { maxLength: 10 }), nastyValue),
        offsets: fc.oneof(fc.tuple(dimension, dimension), nastyValue),
        name: fc.oneof(fc.constantFrom("a", "__metadata__", "model.norm.weight"), fc.string({ maxLength: 12 })),
        data: fc.nat(64),
        lengthDelta: fc.oneof(fc.constant(0n), hugeU64),
      })
      .map(({ dtype, shape, offsets, name, data, lengthDelta }) => {
        const header = Buffer.from(JSON.stringify({ [name]: { dtype, shape, data_offsets: offsets } }));
        const prefix = Buffer.alloc(8);
        prefix.writeBigUInt64LE(lengthDelta === 0n ? BigInt(header.length) : lengthDelta);
        return Buffer.concat([prefix, header, Buffer.alloc(data)]);
      });
    const inputs = fc.oneof(
      fc.uint8Array({ maxLength: 256 }),
      byteMutations.map((m) => mutateBytes(weights, m, headerEnd, [0])),
      handMade,
    );
    await check(inputs, async (bytes) => {
      await writeFile(file, bytes);
      await resultOrFormatError(async () => {
        const { tensors } = await readSafetensorsHeader(file);
        for (const t of tensors) expect(t.offset + t.byteLength).toBeLessThanOrEqual(bytes.length);
      });
    });
  }, TEST_TIMEOUT_MS);

  it("model.safetensors.index.json: listTensors over damaged indexes", async () => {
    const dir = await scratch("index", model);
    await rm(path.join(dir, "model.safetensors"));
    await copyFile(path.join(model, "model.safetensors"), path.join(dir, "model-00001-of-00001.safetensors"));
    const names = JSON.parse(weights.subarray(8, 8 + Number(weights.readBigUInt64LE(0))).toString("utf8")) as Record<string, unknown>;
    const index = { metadata: { total_size: 1 }, weight_map: Object.fromEntries(Object.keys(names).filter((k) => k !== "__metadata__").map((k) => [k, "model-00001-of-00001.safetensors"])) };
    const text = fc.oneof(
      jsonMutations.map((m) => JSON.stringify(mutateJson(index, m))),
      fc.constantFrom("../model/model.safetensors", "/etc/passwd", ".safetensors", "..").map((shard) => JSON.stringify({ weight_map: { x: shard } })),
    );
    await check(text, async (contents) => {
      await writeFile(path.join(dir, "model.safetensors.index.json"), contents);
      await resultOrFormatError(() => listTensors(dir));
    });
  }, TEST_TIMEOUT_MS);

  it("tokenizer.json and tokenizer_config.json: loadTokenizer returns or throws ModelFormatError", async () => {
    const dir = await scratch("tokenizer", model);
    const cases = fc.oneof(
      { weight: 4, arbitrary: jsonMutations.map((m) => ({ tokenizer: JSON.stringify(mutateJson(tokenizerJson, m)), config: null, secret: false })) },
      { weight: 2, arbitrary: jsonMutations.map((m) => ({ tokenizer: null, config: JSON.stringify(mutateJson(tokenizerConfig, m)), secret: false })) },
      { weight: 1, arbitrary: fc.string({ maxLength: 100 }).map((s) => ({ tokenizer: `${SECRET}${s}`, config: null, secret: true })) },
      { weight: 1, arbitrary: fc.string({ maxLength: 100 }).map((s) => ({ tokenizer: null, config: `{"a": ${SECRET}${s}`, secret: true })) },
    );
    await check(cases, async ({ tokenizer, config: tokConfig, secret }) => {
      await writeFile(path.join(dir, "tokenizer.json"), tokenizer ?? JSON.stringify(tokenizerJson));
      await writeFile(path.join(dir, "tokenizer_config.json"), tokConfig ?? JSON.stringify(tokenizerConfig));
      await resultOrFormatError(() => loadTokenizer(dir), { secret });
    });
  }, TEST_TIMEOUT_MS);

  it("PEFT adapters: damaged adapter_config.json and adapter_model.safetensors", async () => {
    const dir = await scratch("adapter", adapter);
    const headerEnd = 8 + Number(adapterWeights.readBigUInt64LE(0));
    const targets = fc.oneof(fc.array(fc.oneof(fc.constantFrom("q_proj", "v_proj", "k_proj", "self_attn.q_proj", "lm_head", ""), fc.string({ maxLength: 6 })), { maxLength: 5 }), fc.string({ maxLength: 12 }));
    const cases = fc.oneof(
      { weight: 3, arbitrary: jsonMutations.map((m) => ({ config: JSON.stringify(mutateJson(adapterConfig, m)), weights: null as Uint8Array | null, secret: false })) },
      { weight: 2, arbitrary: targets.map((t) => ({ config: JSON.stringify({ ...adapterConfig, target_modules: t }), weights: null as Uint8Array | null, secret: false })) },
      // Damage past the header is damage to the values: NaNs and infinities among them.
      { weight: 3, arbitrary: byteMutations.map((m) => ({ config: null, weights: mutateBytes(adapterWeights, m, headerEnd, [0]) as Uint8Array | null, secret: false })) },
      { weight: 1, arbitrary: fc.string({ maxLength: 60 }).map((s) => ({ config: `${SECRET}${s}`, weights: null as Uint8Array | null, secret: true })) },
    );
    await check(cases, async ({ config: text, weights: bytes, secret }) => {
      await writeFile(path.join(dir, "adapter_config.json"), text ?? JSON.stringify(adapterConfig));
      await writeFile(path.join(dir, "adapter_model.safetensors"), bytes ?? adapterWeights);
      await resultOrFormatError(async () => {
        const read = await readPeftAdapter(dir);
        expect(read.r).toBeLessThanOrEqual(LIMITS.loraRank);
      }, { secret });
    });
  }, TEST_TIMEOUT_MS);

  it("GGUF: random bytes, damaged headers and huge counts and lengths", async () => {
    const file = path.join(root, "fuzz.gguf");
    const { dataOffset } = await readGgufHeader(path.join(root, "model.gguf"));
    // The tensor count, the metadata count, and the first key's length.
    const anchors = [8, 16, 24];
    const header = gguf.subarray(0, dataOffset);
    const inputs = fc.oneof(
      fc.uint8Array({ maxLength: 256 }),
      fc.uint8Array({ maxLength: 256 }).map((tail) => Buffer.concat([Buffer.from("GGUF"), Buffer.from([3, 0, 0, 0]), tail])),
      byteMutations.map((m) => mutateBytes(header, m, dataOffset, anchors)),
    );
    await check(inputs, async (bytes) => {
      await writeFile(file, bytes);
      await resultOrFormatError(() => readGgufHeader(file));
    });
  }, TEST_TIMEOUT_MS);

  it("a file declaring huge sizes fails fast, and the heap stayed bounded over every run", async () => {
    const dir = await scratch("huge", model);
    await writeFile(path.join(dir, "config.json"), JSON.stringify({ ...config, num_hidden_layers: 1e9, vocab_size: 2 ** 40 }));
    await expect(inspectModelFolder(dir)).rejects.toThrow(ModelFormatError);
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(2n ** 64n - 1n);
    await writeFile(path.join(dir, "model.safetensors"), prefix);
    await expect(listTensors(dir)).rejects.toThrow(ModelFormatError);
    const counts = Buffer.concat([Buffer.from("GGUF"), Buffer.from([3, 0, 0, 0]), Buffer.alloc(16, 0xff)]);
    await writeFile(path.join(dir, "huge.gguf"), counts);
    await expect(readGgufHeader(path.join(dir, "huge.gguf"))).rejects.toThrow(ModelFormatError);
    expect(peakHeap).toBeLessThan(HEAP_BOUND_BYTES);
  });
});

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
