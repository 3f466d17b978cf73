import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readModelConfig, type ModelConfig } from "./config.js";
import { exportGguf, llama3RopeFactors, permuteRotary, unpermuteRotary } from "./gguf-export.js";
import { readGgufHeader, writeGguf, type GgufHeader, type GgufTensor, type GgufValue } from "./gguf.js";
import { decodeToF32, listTensors, readTensorF32, writeSafetensors } from "./safetensors.js";
import { writeTinyModel, type TinyModelOptions } from "./tiny-model.js";
import { loadTokenizer } from "./tokenizer.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "lathe-gguf-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One tensor's values, read from the data section that readGgufHeader locates. */
async function readGgufTensor(file: string, header: GgufHeader, name: string): Promise<Float32Array> {
  const info = header.tensors.find((t) => t.name === name);
  if (info === undefined) throw new Error(`no tensor ${name}`);
  const count = info.dims.reduce((a, b) => a * b, 1);
  const bytes = new Uint8Array(count * (info.type === 0 ? 4 : 2));
  const handle = await open(file, "r");
  try {
    await handle.read(bytes, 0, bytes.length, header.dataOffset + info.offset);
  } finally {
    await handle.close();
  }
  return decodeToF32(bytes, info.type === 0 ? "F32" : "F16");
}

const ramp = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, (_, i) => (i - n / 2) * scale);

describe("writeGguf / readGgufHeader", () => {
  const metadata: Array<[string, GgufValue]> = [
    ["general.architecture", "llama"],
    ["t.string", { type: "string", value: "héllo ✓" }],
    ["t.bool", true],
    ["t.bool_tagged", { type: "bool", value: false }],
    ["t.uint8", { type: "uint8", value: 255 }],
    ["t.int8", { type: "int8", value: -128 }],
    ["t.uint16", { type: "uint16", value: 65535 }],
    ["t.int16", { type: "int16", value: -32768 }],
    ["t.uint32", { type: "uint32", value: 4294967295 }],
    ["t.int32", { type: "int32", value: -2147483648 }],
    ["t.float32", { type: "float32", value: 1e-5 }],
    ["t.float64", { type: "float64", value: Math.PI }],
    ["t.uint64", { type: "uint64", value: 18446744073709551615n }],
    ["t.int64", { type: "int64", value: -9223372036854775808n }],
    ["t.array_int32", { type: "array", itemType: "int32", value: [1, -2, 3] }],
    ["t.array_float32", { type: "array", itemType: "float32", value: Float32Array.of(0.5, -1.25) }],
    ["t.array_uint64", { type: "array", itemType: "uint64", value: [0n, 1n << 40n] }],
    ["t.array_bool", { type: "array", itemType: "bool", value: [true, false] }],
    ["t.array_string", { type: "array", itemType: "string", value: ["a", "", "Ġthe"] }],
    ["t.array_empty", { type: "array", itemType: "uint8", value: [] }],
  ];
  const tensors: GgufTensor[] = [
    { name: "a.weight", shape: [3, 5], type: "F32", data: ramp(15) },
    { name: "b.weight", shape: [7], type: "F16", data: ramp(7, 0.25) },
    { name: "c.weight", shape: [2, 3, 4], type: "F32", data: ramp(24, 0.1) },
  ];

  test("reads back every metadata type, reversed dims and aligned offsets", async () => {
    const file = path.join(dir, "roundtrip.gguf");
    await writeGguf(file, metadata, tensors);
    const header = await readGgufHeader(file);

    expect(header.version).toBe(3);
    expect(header.alignment).toBe(32);
    expect(header.metadata.get("general.alignment")).toBe(32);
    expect(Object.fromEntries(header.metadata)).toMatchObject({
      "general.architecture": "llama",
      "t.string": "héllo ✓",
      "t.bool": true,
      "t.bool_tagged": false,
      "t.uint8": 255,
      "t.int8": -128,
      "t.uint16": 65535,
      "t.int16": -32768,
      "t.uint32": 4294967295,
      "t.int32": -2147483648,
      "t.float64": Math.PI,
      "t.uint64": 18446744073709551615n,
      "t.int64": -9223372036854775808n,
      "t.array_int32": [1, -2, 3],
      "t.array_float32": [0.5, -1.25],
      "t.array_uint64": [0n, 1n << 40n],
      "t.array_bool": [true, false],
      "t.array_string": ["a", "", "Ġthe"],
      "t.array_empty": [],
    });
    expect(header.metadata.get("t.float32")).toBeCloseTo(1e-5, 10);

    expect(header.tensors).toEqual([
      { name: "a.weight", dims: [5, 3], type: 0, offset: 0 },
      { name: "b.weight", dims: [7], type: 1, offset: 64 }, // 60 bytes padded to 64
      { name: "c.weight", dims: [4, 3, 2], type: 0, offset: 96 }, // 14 bytes padded to 32
    ]);
    expect(header.dataOffset % 32).toBe(0);
    const { size } = await stat(file);
    expect(size).toBe(header.dataOffset + 96 + 96);

    expect(await readGgufTensor(file, header, "a.weight")).toEqual(tensors[0]?.data);
    expect(await readGgufTensor(file, header, "b.weight")).toEqual(tensors[1]?.data); // quarter steps are exact in f16
    expect(await readGgufTensor(file, header, "c.weight")).toEqual(tensors[2]?.data);
  });

  test("an async iterable of tensors writes the same bytes as an array", async () => {
    const fromArray = path.join(dir, "array.gguf");
    const fromStream = path.join(dir, "stream.gguf");
    async function* stream(): AsyncGenerator<GgufTensor> {
      for (const t of tensors) yield t;
    }
    await writeGguf(fromArray, new Map(metadata), tensors);
    await writeGguf(fromStream, new Map(metadata), stream());
    expect(Buffer.compare(await readFile(fromArray), await readFile(fromStream))).toBe(0);
  });

  test("refuses a tensor whose data does not fill its shape, and leaves no file", async () => {
    const file = path.join(dir, "bad.gguf");
    await expect(writeGguf(file, [], [{ name: "x", shape: [2, 2], type: "F32", data: new Float32Array(3) }])).rejects.toThrow(
      /shape \[2, 2\] holds 4 values, data has 3/,
    );
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  test("refuses a number that does not fit its type", async () => {
    await expect(writeGguf(path.join(dir, "range.gguf"), [["x", { type: "uint8", value: 256 }]], [])).rejects.toThrow(
      /metadata x: 256 is not a valid uint8/,
    );
  });

  test("reports a file that is not GGUF", async () => {
    const notGguf = path.join(dir, "roundtrip.gguf.json");
    await writeFile(notGguf, "{}\n");
    await expect(readGgufHeader(notGguf)).rejects.toThrow(/not a GGUF file/);
  });
});

describe("permuteRotary", () => {
  test("puts the dimensions HF rotates together side by side, per head", () => {
    // 2 heads of 4 dims, 1 column: HF pairs (0,2), (1,3) within a head; llama.cpp pairs (0,1), (2,3).
    const hf = Float32Array.of(0, 1, 2, 3, 10, 11, 12, 13);
    expect([...permuteRotary(hf, [8], 2)]).toEqual([0, 2, 1, 3, 10, 12, 11, 13]);
  });

  test("unpermuteRotary undoes it for weights and biases, with grouped-query head counts", () => {
    for (const [shape, heads] of [
      [[64, 48], 4],
      [[32, 48], 2],
      [[48], 3],
    ] as const) {
      const data = ramp(shape.reduce((a: number, b: number) => a * b, 1), 0.01);
      const permuted = permuteRotary(data, shape, heads);
      expect(permuted).not.toEqual(data);
      expect(unpermuteRotary(permuted, shape, heads)).toEqual(data);
    }
  });

  test("refuses heads of odd size", () => {
    expect(() => permuteRotary(new Float32Array(6), [6], 2)).toThrow(/even size/);
  });
});

const exportCases: Array<{ name: string; opts: TinyModelOptions; arch: string; tensorCount: number }> = [
  { name: "llama", opts: { arch: "llama" }, arch: "llama", tensorCount: 1 + 2 * 9 + 2 },
  { name: "llama-tied", opts: { arch: "llama", tied: true }, arch: "llama", tensorCount: 1 + 2 * 9 + 1 },
  { name: "qwen2", opts: { arch: "qwen2" }, arch: "qwen2", tensorCount: 1 + 2 * 12 + 2 },
  { name: "qwen2-tied", opts: { arch: "qwen2", tied: true }, arch: "qwen2", tensorCount: 1 + 2 * 12 + 1 },
];

describe("exportGguf", () => {
  test.each(exportCases)("$name: llama.cpp tensor names, hyperparameters and tokenizer", async ({ name, opts, arch, tensorCount }) => {
    const modelDir = path.join(dir, name);
    const file = path.join(dir, `${name}.gguf`);
    await writeTinyModel(modelDir, opts);
    await exportGguf(modelDir, file);
    const header = await readGgufHeader(file);
    const meta = header.metadata;

    expect(header.tensors).toHaveLength(tensorCount);
    const names = header.tensors.map((t) => t.name);
    const layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].map((n) => `blk.1.${n}.weight`);
    expect(names).toEqual(expect.arrayContaining(["token_embd.weight", "output_norm.weight", ...layer]));
    expect(names.includes("output.weight")).toBe(opts.tied !== true);
    expect(names.includes("blk.0.attn_q.bias")).toBe(arch === "qwen2");
    expect(names.includes("blk.0.attn_output.bias")).toBe(false);

    const dims = (n: string): number[] | undefined => header.tensors.find((t) => t.name === n)?.dims;
    expect(dims("token_embd.weight")).toEqual([64, 512]);
    expect(dims("blk.0.attn_k.weight")).toEqual([64, 32]); // [kv heads * head dim, hidden] reversed
    expect(dims("blk.0.ffn_down.weight")).toEqual([128, 64]);
    expect(header.tensors.find((t) => t.name === "blk.0.attn_q.weight")?.type).toBe(1); // F16 by default
    expect(header.tensors.find((t) => t.name === "blk.0.attn_norm.weight")?.type).toBe(0); // vectors stay F32
    expect(header.tensors.every((t) => t.offset % 32 === 0)).toBe(true);

    expect(Object.fromEntries(meta)).toMatchObject({
      "general.architecture": arch,
      "general.name": name,
      "general.file_type": 1,
      [`${arch}.context_length`]: 2048,
      [`${arch}.embedding_length`]: 64,
      [`${arch}.block_count`]: 2,
      [`${arch}.feed_forward_length`]: 128,
      [`${arch}.attention.head_count`]: 4,
      [`${arch}.attention.head_count_kv`]: 2,
      [`${arch}.rope.dimension_count`]: 16,
      [`${arch}.rope.freq_base`]: arch === "qwen2" ? 1000000 : 10000,
      "tokenizer.ggml.model": "gpt2",
      "tokenizer.ggml.pre": "gpt-2",
      "tokenizer.ggml.eos_token_id": 511, // <|im_end|>
      "tokenizer.ggml.bos_token_id": 509, // config.json's bos_token_id, as tokenizer_config.json has none
      "tokenizer.ggml.padding_token_id": 509,
      "tokenizer.ggml.add_bos_token": false,
    });
    expect(meta.get(`${arch}.attention.layer_norm_rms_epsilon`)).toBeCloseTo(arch === "qwen2" ? 1e-6 : 1e-5, 12);

    const tokenizerJson = JSON.parse(await readFile(path.join(modelDir, "tokenizer.json"), "utf8")) as {
      model: { vocab: Record<string, number>; merges: string[] };
    };
    const tokens = meta.get("tokenizer.ggml.tokens") as string[];
    expect(tokens).toHaveLength(512);
    for (const [text, id] of Object.entries(tokenizerJson.model.vocab)) expect(tokens[id]).toBe(text);
    expect(tokens.slice(509)).toEqual(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    expect(tokens[32]).toBe("Ġ"); // byte 0x20, a space, in the byte-level alphabet
    expect(tokens[33]).toBe("!");
    expect(tokens).toContain("Ġthe"); // the byte-level alphabet: a leading space is Ġ
    const types = meta.get("tokenizer.ggml.token_type") as number[];
    expect(types.slice(0, 509).every((t) => t === 1)).toBe(true);
    expect(types.slice(509)).toEqual([3, 3, 3]);
    expect(meta.get("tokenizer.ggml.merges")).toEqual(tokenizerJson.model.merges);
    expect(meta.get("tokenizer.chat_template")).toContain("<|im_start|>");
  });

  test("permutes q and k rows for llama and leaves Qwen2's as they are", async () => {
    for (const name of ["llama", "qwen2"]) {
      const modelDir = path.join(dir, `${name}-perm`);
      const file = path.join(dir, `${name}-perm.gguf`);
      await writeTinyModel(modelDir, { arch: name as "llama" | "qwen2", seed: 3 });
      await exportGguf(modelDir, file, { dtype: "F32" });
      const header = await readGgufHeader(file);
      const hf = new Map((await listTensors(modelDir)).map((t) => [t.name, t]));
      const source = async (n: string): Promise<Float32Array> => readTensorF32(hf.get(n) ?? expect.unreachable(n));
      const q = await readGgufTensor(file, header, "blk.1.attn_q.weight");
      const k = await readGgufTensor(file, header, "blk.1.attn_k.weight");
      const v = await readGgufTensor(file, header, "blk.1.attn_v.weight");
      const hfQ = await source("model.layers.1.self_attn.q_proj.weight");
      const hfK = await source("model.layers.1.self_attn.k_proj.weight");
      if (name === "llama") {
        expect(q).not.toEqual(hfQ);
        expect(unpermuteRotary(q, [64, 64], 4)).toEqual(hfQ);
        expect(unpermuteRotary(k, [32, 64], 2)).toEqual(hfK);
      } else {
        expect(q).toEqual(hfQ);
        expect(k).toEqual(hfK);
        expect(await readGgufTensor(file, header, "blk.1.attn_q.bias")).toEqual(await source("model.layers.1.self_attn.q_proj.bias"));
      }
      expect(v).toEqual(await source("model.layers.1.self_attn.v_proj.weight"));
    }
  });

  test("Llama 3 rope scaling becomes rope_freqs factors between 1 and the factor", () => {
    const cfg = { headDim: 64, ropeTheta: 500000, ropeScaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } } as unknown as ModelConfig;
    const factors = llama3RopeFactors(cfg) ?? expect.unreachable();
    expect(factors).toHaveLength(32);
    expect(factors[0]).toBe(1); // the highest frequency is not scaled
    expect(factors[31]).toBe(8); // the lowest is scaled by the factor
    for (let i = 1; i < 32; i++) expect(factors[i]).toBeGreaterThanOrEqual(factors[i - 1] ?? 0);
  });

  test("names the tensor when a checkpoint holds one GGUF export does not know", async () => {
    const modelDir = path.join(dir, "extra-tensor");
    await writeTinyModel(modelDir, { layers: 1 });
    const tensors = await listTensors(modelDir);
    const withExtra = await Promise.all(tensors.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) })));
    withExtra.push({ name: "model.layers.0.mlp.extra_proj.weight", dtype: "F32", shape: [2, 2], data: new Float32Array(4) });
    await writeSafetensors(path.join(modelDir, "model.safetensors"), withExtra);
    await expect(exportGguf(modelDir, path.join(dir, "extra.gguf"))).rejects.toThrow(
      /model\.safetensors: tensor `model\.layers\.0\.mlp\.extra_proj\.weight` is not a LlamaForCausalLM weight/,
    );
  });

  test("names llama.cpp's pre-tokenizer from tokenizer.json's split, and refuses tokenizers it cannot describe", async () => {
    const modelDir = path.join(dir, "qwen2-split");
    await writeTinyModel(modelDir, { arch: "qwen2", layers: 1 });
    const tokenizerFile = path.join(modelDir, "tokenizer.json");
    const original = JSON.parse(await readFile(tokenizerFile, "utf8")) as Record<string, unknown>;
    const qwen2Split = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    const withPre = async (preTokenizer: unknown): Promise<void> => {
      await writeFile(tokenizerFile, JSON.stringify({ ...original, pre_tokenizer: preTokenizer }));
    };
    const file = path.join(dir, "qwen2-split.gguf");

    await withPre({
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: qwen2Split }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    });
    await exportGguf(modelDir, file);
    expect((await readGgufHeader(file)).metadata.get("tokenizer.ggml.pre")).toBe("qwen2");

    await withPre({ type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: "\\d" } }, { type: "ByteLevel", use_regex: false }] });
    await expect(exportGguf(modelDir, file)).rejects.toThrow(/tokenizer\.json: pre_tokenizer .* pass tokenizerPre/);
    await exportGguf(modelDir, file, { tokenizerPre: "default" });
    expect((await readGgufHeader(file)).metadata.get("tokenizer.ggml.pre")).toBe("default");

    await withPre({ type: "Metaspace", replacement: "▁" });
    await expect(exportGguf(modelDir, file)).rejects.toThrow(/tokenizer\.json: GGUF export handles byte-level BPE tokenizers/);
  });

  test("names config.json when the folder has none", async () => {
    await expect(exportGguf(path.join(dir, "missing-folder"), path.join(dir, "x.gguf"))).rejects.toThrow(/config\.json: file is missing/);
  });
});

/**
 * An f64 forward pass of a Hugging Face Llama/Qwen2 checkpoint, written from the transformers
 * modelling code (RMSNorm, rotate-half RoPE, grouped-query causal attention, SwiGLU): log-probs
 * of the next token at the last position. `interleavedRope` rotates adjacent pairs instead — the
 * wrong layout for HF weights — to show how far a rotary mistake moves the result.
 */
async function referenceLogProbs(modelDir: string, tokens: readonly number[], interleavedRope = false): Promise<Float64Array> {
  const cfg = await readModelConfig(modelDir);
  const byName = new Map((await listTensors(modelDir)).map((t) => [t.name, t]));
  const w = async (name: string): Promise<Float32Array | null> => {
    const t = byName.get(name);
    return t === undefined ? null : readTensorF32(t);
  };
  const must = async (name: string): Promise<Float32Array> => (await w(name)) ?? expect.unreachable(name);
  const { hiddenSize: h, headDim: d, numHeads, numKvHeads, intermediateSize: ff, rmsNormEps: eps } = cfg;
  const T = tokens.length;
  const matvec = (m: Float32Array, rows: number, x: Float64Array, bias: Float32Array | null): Float64Array => {
    const cols = x.length;
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = bias?.[r] ?? 0;
      for (let c = 0; c < cols; c++) s += (m[r * cols + c] ?? 0) * (x[c] ?? 0);
      out[r] = s;
    }
    return out;
  };
  const rmsnorm = (x: Float64Array, weight: Float32Array): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const scale = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((v, i) => v * scale * (weight[i] ?? 0));
  };
  const rope = (x: Float64Array, heads: number, pos: number): void => {
    const half = d / 2;
    for (let hd = 0; hd < heads; hd++) {
      for (let i = 0; i < half; i++) {
        const angle = pos / cfg.ropeTheta ** ((2 * i) / d);
        const [a, b] = interleavedRope ? [hd * d + 2 * i, hd * d + 2 * i + 1] : [hd * d + i, hd * d + i + half];
        const x0 = x[a] ?? 0;
        const x1 = x[b] ?? 0;
        x[a] = x0 * Math.cos(angle) - x1 * Math.sin(angle);
        x[b] = x1 * Math.cos(angle) + x0 * Math.sin(angle);
      }
    }
  };

  const embed = await must("model.embed_tokens.weight");
  let xs = tokens.map((t) => Float64Array.from(embed.subarray(t * h, (t + 1) * h)));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const [wq, wk, wv, wo] = await Promise.all(["q", "k", "v", "o"].map((n) => must(`${p}.self_attn.${n}_proj.weight`)));
    const [bq, bk, bv] = await Promise.all(["q", "k", "v"].map((n) => w(`${p}.self_attn.${n}_proj.bias`)));
    const n1 = await must(`${p}.input_layernorm.weight`);
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    xs.forEach((x, pos) => {
      const xn = rmsnorm(x, n1);
      const q = matvec(wq as Float32Array, numHeads * d, xn, bq ?? null);
      const k = matvec(wk as Float32Array, numKvHeads * d, xn, bk ?? null);
      rope(q, numHeads, pos);
      rope(k, numKvHeads, pos);
      qs.push(q);
      ks.push(k);
      vs.push(matvec(wv as Float32Array, numKvHeads * d, xn, bv ?? null));
    });
    const group = numHeads / numKvHeads;
    xs = xs.map((x, pos) => {
      const attn = new Float64Array(numHeads * d);
      for (let hd = 0; hd < numHeads; hd++) {
        const kv = Math.floor(hd / group);
        const scores = Array.from({ length: pos + 1 }, (_, s) => {
          let dot = 0;
          for (let i = 0; i < d; i++) dot += (qs[pos]?.[hd * d + i] ?? 0) * (ks[s]?.[kv * d + i] ?? 0);
          return dot / Math.sqrt(d);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= pos; s++) {
          for (let i = 0; i < d; i++) attn[hd * d + i] = (attn[hd * d + i] ?? 0) + ((e[s] ?? 0) / sum) * (vs[s]?.[kv * d + i] ?? 0);
        }
      }
      const o = matvec(wo as Float32Array, h, attn, null);
      return x.map((v, i) => v + (o[i] ?? 0));
    });
    const [n2, gate, up, down] = await Promise.all([
      must(`${p}.post_attention_layernorm.weight`),
      must(`${p}.mlp.gate_proj.weight`),
      must(`${p}.mlp.up_proj.weight`),
      must(`${p}.mlp.down_proj.weight`),
    ]);
    xs = xs.map((x) => {
      const xn = rmsnorm(x, n2);
      const g = matvec(gate, ff, xn, null);
      const u = matvec(up, ff, xn, null);
      const act = g.map((v, i) => (v / (1 + Math.exp(-v))) * (u[i] ?? 0));
      const out = matvec(down, h, act, null);
      return x.map((v, i) => v + (out[i] ?? 0));
    });
  }
  const last = rmsnorm(xs[T - 1] ?? expect.unreachable(), await must("model.norm.weight"));
  const head = (await w("lm_head.weight")) ?? embed;
  const logits = matvec(head, head.length / h, last, null);
  const max = Math.max(...logits);
  const logSum = Math.log(logits.reduce((a, v) => a + Math.exp(v - max), 0)) + max;
  return logits.map((v) => v - logSum);
}

/**
 * Scales q and k projections by `factor` (attention scores by its square). At the tiny model's
 * initial scale the scores are near zero and attention near uniform, which hides where RoPE
 * rotates; sharp attention makes a rotary mistake move the logits far beyond float noise.
 */
async function sharpenAttention(modelDir: string, factor: number): Promise<void> {
  const tensors = await Promise.all(
    (await listTensors(modelDir)).map(async (t) => {
      const data = await readTensorF32(t);
      if (/\.self_attn\.[qk]_proj\./.test(t.name)) for (let i = 0; i < data.length; i++) data[i] = (data[i] ?? 0) * factor;
      return { name: t.name, dtype: t.dtype, shape: t.shape, data };
    }),
  );
  await writeSafetensors(path.join(modelDir, "model.safetensors"), tensors);
}

const argmax = (xs: ArrayLike<number>): number => {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if ((xs[i] ?? -Infinity) > (xs[best] ?? -Infinity)) best = i;
  return best;
};

describe("llama.cpp (node-llama-cpp) loads the export", () => {
  let llama: Llama;
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  });
  afterAll(async () => {
    await llama.dispose();
  });

  const text = "The capital of France is Paris. It's 42, or 3.14!\n  What is the capital of Italy?";

  test.each([
    { arch: "llama", tied: false, dtype: "F32" },
    { arch: "llama", tied: true, dtype: "F16" },
    { arch: "qwen2", tied: false, dtype: "F32" },
    { arch: "qwen2", tied: true, dtype: "F16" },
  ] as const)(
    "$arch (tied $tied, $dtype): same tokens as the HF tokenizer and next-token log-probs of an f64 reference forward pass",
    async ({ arch, tied, dtype }) => {
      const modelDir = path.join(dir, `ref-${arch}-${tied}`);
      const file = path.join(dir, `ref-${arch}-${tied}-${dtype}.gguf`);
      await writeTinyModel(modelDir, { arch, tied, seed: 7, hidden: 128, heads: 4, kvHeads: 2, layers: 2 });
      await sharpenAttention(modelDir, 8);
      await exportGguf(modelDir, file, { dtype });

      const model = await llama.loadModel({ modelPath: file });
      try {
        const hfTokenizer = await loadTokenizer(modelDir);
        for (const sample of [text, "<|im_start|>user\nhello<|im_end|>\n", "naïve café ✓ 2048  spaces\t\ttabs"]) {
          expect(model.tokenize(sample, true), sample).toEqual(hfTokenizer.encode(sample));
        }
        const tokens = model.tokenize(text);
        expect(model.detokenize(tokens)).toBe(text);

        const context = await model.createContext({ contextSize: 128 });
        try {
          const input = tokens.map((t, i): Token | [Token, { generateNext: { token: true; probabilities: true } }] =>
            i === tokens.length - 1 ? [t, { generateNext: { token: true, probabilities: true } }] : t,
          );
          const out = (await context.getSequence().controlledEvaluate(input))[tokens.length - 1];
          const probabilities = out?.next.probabilities ?? expect.unreachable("no probabilities");

          const reference = await referenceLogProbs(modelDir, tokens);
          const wrongRope = await referenceLogProbs(modelDir, tokens, true);
          let diff = 0;
          let ropeEffect = 0;
          for (let id = 0; id < reference.length; id++) {
            diff = Math.max(diff, Math.abs(Math.log(probabilities.get(id as Token) ?? 0) - (reference[id] ?? 0)));
            ropeEffect = Math.max(ropeEffect, Math.abs((wrongRope[id] ?? 0) - (reference[id] ?? 0)));
          }
          const tolerance = 2e-3;
          expect(diff).toBeLessThan(tolerance);
          expect(ropeEffect).toBeGreaterThan(100 * tolerance); // so the comparison would catch a wrong rotary layout
          // Greedy choice: the reference's argmax, unless another token is within float noise of it.
          const best = argmax(reference);
          const token = out?.next.token ?? expect.unreachable("no token");
          const runnerUp = Math.max(...reference.filter((_, id) => id !== best));
          if ((reference[best] ?? 0) - runnerUp > 2 * tolerance) expect(token).toBe(best);
          else expect(reference[token]).toBeGreaterThan((reference[best] ?? 0) - 2 * tolerance);
        } finally {
          await context.dispose();
        }
      } finally {
        await model.dispose();
      }
    },
    60_000,
  );
});
