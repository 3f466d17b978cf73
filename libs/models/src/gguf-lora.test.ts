import { mkdtemp, open, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel, type Llama, type Token } from "node-llama-cpp";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { exportGguf, unpermuteRotary } from "./gguf-export.js";
import { exportGgufLora } from "./gguf-lora.js";
import { dequantizeQ8_0, quantizeQ8_0 } from "./gguf-quant.js";
import { GGML_TYPE, readGgufHeader, writeGguf, type GgufHeader } from "./gguf.js";
import { mergeAdapter } from "./merge.js";
import { ADAPTER_WEIGHTS_FILE, readPeftAdapter, writePeftAdapter, writeTinyAdapter } from "./peft.js";
import { decodeToF32, listTensors, readTensorF32 } from "./safetensors.js";
import { writeTinyModel, type TinyModelOptions } from "./tiny-model.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "lathe-gguf-lora-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/** One tensor's stored bytes, found through the header. */
async function tensorBytes(file: string, header: GgufHeader, name: string): Promise<{ bytes: Uint8Array; type: number }> {
  const info = header.tensors.find((t) => t.name === name) ?? expect.unreachable(`no tensor ${name}`);
  const count = info.dims.reduce((a, b) => a * b, 1);
  const size = info.type === GGML_TYPE.Q8_0 ? (count / 32) * 34 : count * (info.type === GGML_TYPE.F32 ? 4 : 2);
  const bytes = new Uint8Array(size);
  const handle = await open(file, "r");
  try {
    await handle.read(bytes, 0, size, header.dataOffset + info.offset);
  } finally {
    await handle.close();
  }
  return { bytes, type: info.type };
}

async function tensorF32(file: string, header: GgufHeader, name: string): Promise<Float32Array> {
  const { bytes, type } = await tensorBytes(file, header, name);
  return type === GGML_TYPE.Q8_0 ? dequantizeQ8_0(bytes) : decodeToF32(bytes, type === GGML_TYPE.F32 ? "F32" : "F16");
}

describe("quantizeQ8_0", () => {
  test("d = max|x|/127 stored as f16, quants rounded half away from zero", () => {
    const x = new Float32Array(64);
    x.set([127, -127, 2.5, -2.5, 0.49, -0.5, 126.5, 3.5]); // block 0: d = 1 exactly
    x[32] = 1; // block 1: d = 1/127, rounded to f16 only when stored
    x[33] = -0.5;
    const q = quantizeQ8_0(x);
    expect(q.byteLength).toBe(2 * 34);
    const view = new DataView(q.buffer);
    expect(view.getUint16(0, true)).toBe(0x3c00); // 1.0 in f16
    expect([...new Int8Array(q.buffer, 2, 8)]).toEqual([127, -127, 3, -3, 0, -1, 127, 4]); // roundf, not ties-to-even
    expect([...new Int8Array(q.buffer, 10, 24)].every((v) => v === 0)).toBe(true);
    // 1/d is taken from the f32 d, so x = max|x| lands on 127 whatever f16 makes of d.
    expect(view.getInt8(34 + 2)).toBe(127);
    expect(view.getInt8(34 + 3)).toBe(-64); // -0.5 · 127 = -63.5 → -64
    expect(view.getUint16(34, true)).toBe(0x2008); // f16 nearest to 1/127 = 0.007874: 0.0078735
    expect(dequantizeQ8_0(q)[32]).toBeCloseTo(0.99994, 5);
  });

  test("an all-zero block has d = 0 and quants 0; values come back within d/2 and d's f16 rounding", () => {
    expect([...quantizeQ8_0(new Float32Array(32))].every((b) => b === 0)).toBe(true);
    const x = Float32Array.from({ length: 32 * 50 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    const back = dequantizeQ8_0(quantizeQ8_0(x));
    for (let b = 0; b < 50; b++) {
      const block = x.subarray(b * 32, b * 32 + 32);
      const d = Math.max(...block.map(Math.abs)) / 127;
      const bound = d / 2 + 127 * d * 2 ** -11; // rounding a quant, and |q| ≤ 127 times f16's relative error in d
      for (let j = 0; j < 32; j++) expect(Math.abs((back[b * 32 + j] ?? 0) - (block[j] ?? 0))).toBeLessThanOrEqual(bound);
    }
  });

  test("refuses a count that is not whole blocks, and a non-finite value", () => {
    expect(() => quantizeQ8_0(new Float32Array(33))).toThrow(/multiple of 32 values, got 33/);
    expect(() => quantizeQ8_0(Float32Array.of(...new Array<number>(31).fill(0), NaN))).toThrow(/values 0\.\.31 holds a NaN/);
  });

  test("writeGguf stores Q8_0 tensors as 34-byte blocks and refuses rows that do not split into them", async () => {
    const file = path.join(dir, "q8.gguf");
    const data = Float32Array.from({ length: 3 * 64 }, (_, i) => (i % 13) - 6);
    await writeGguf(file, [], [{ name: "w", shape: [3, 64], type: "Q8_0", data }]);
    const header = await readGgufHeader(file);
    expect(header.tensors).toEqual([{ name: "w", dims: [64, 3], type: 8, offset: 0 }]);
    expect(Buffer.compare(Buffer.from((await tensorBytes(file, header, "w")).bytes), Buffer.from(quantizeQ8_0(data)))).toBe(0);
    expect((await readFile(file)).byteLength).toBe(header.dataOffset + 6 * 34 + 20); // 204 bytes padded to 224
    await expect(writeGguf(path.join(dir, "q8-bad.gguf"), [], [{ name: "w", shape: [32, 48], type: "Q8_0", data: new Float32Array(32 * 48) }])).rejects.toThrow(
      /tensor w: Q8_0 needs rows of a multiple of 32 values, \[32, 48\] has rows of 48/,
    );
  });
});

describe("exportGguf Q8_0", () => {
  test("matrices become Q8_0 (file type 7), vectors stay F32, rows not a multiple of 32 stay F16", async () => {
    // hidden 48: every matrix reading the hidden state has rows of 48; ffn_down's rows are 128 long.
    const modelDir = path.join(dir, "q8-48");
    const file = path.join(dir, "q8-48.gguf");
    await writeTinyModel(modelDir, { hidden: 48, heads: 4, kvHeads: 2, seed: 1 });
    await exportGguf(modelDir, file, { dtype: "Q8_0" });
    const header = await readGgufHeader(file);
    expect(header.metadata.get("general.file_type")).toBe(7);
    const type = (n: string): number | undefined => header.tensors.find((t) => t.name === n)?.type;
    expect(type("blk.0.ffn_down.weight")).toBe(8);
    expect(type("blk.0.attn_q.weight")).toBe(1);
    expect(type("token_embd.weight")).toBe(1);
    expect(type("blk.0.attn_norm.weight")).toBe(0);

    const hf = new Map((await listTensors(modelDir)).map((t) => [t.name, t]));
    const down = await readTensorF32(hf.get("model.layers.0.mlp.down_proj.weight") ?? expect.unreachable());
    const stored = await tensorBytes(file, header, "blk.0.ffn_down.weight");
    expect(Buffer.compare(Buffer.from(stored.bytes), Buffer.from(quantizeQ8_0(down)))).toBe(0);

    const full = path.join(dir, "q8-64.gguf");
    await writeTinyModel(path.join(dir, "q8-64"), { seed: 1 });
    await exportGguf(path.join(dir, "q8-64"), full, { dtype: "Q8_0" });
    const types = new Map((await readGgufHeader(full)).tensors.map((t) => [t.name, t.type]));
    for (const [name, t] of types) expect(t, name).toBe(name.endsWith("norm.weight") ? 0 : 8);
  });
});

/** A tiny adapter as writeTinyAdapter makes it, with the B of q_proj and k_proj (llama layout) un-permuted first. */
async function withUnpermutedQkB(adapterDir: string, outDir: string, heads: number, kvHeads: number): Promise<void> {
  const adapter = await readPeftAdapter(adapterDir);
  const tensors = await Promise.all(
    adapter.tensors.map(async (t) => {
      const data = await readTensorF32(t);
      const h = /q_proj\.lora_B/.test(t.name) ? heads : /k_proj\.lora_B/.test(t.name) ? kvHeads : null;
      return { name: t.name, shape: [...t.shape], data: h === null ? data : unpermuteRotary(data, t.shape, h) };
    }),
  );
  await writePeftAdapter(outDir, { ...adapter, tensors });
}

describe("exportGgufLora", () => {
  test("llama.cpp's adapter metadata, names and shapes; lora_b of q/k permuted as the base, alpha·√r for rsLoRA", async () => {
    const baseDir = path.join(dir, "lora-meta-base");
    const adapterDir = path.join(dir, "lora-meta-adapter");
    const file = path.join(dir, "lora-meta.gguf");
    await writeTinyModel(baseDir, { seed: 2 });
    await writeTinyAdapter(adapterDir, baseDir, { r: 4, alpha: 8, useRslora: true, targetModules: [...ALL_PROJECTIONS, "lm_head"] });
    await exportGgufLora(adapterDir, baseDir, file);
    const header = await readGgufHeader(file);
    expect(Object.fromEntries(header.metadata)).toMatchObject({
      "general.architecture": "llama",
      "general.type": "adapter",
      "general.name": "lora-meta-adapter",
      "adapter.type": "lora",
    });
    expect(header.metadata.get("adapter.lora.alpha")).toBeCloseTo(8 * 2, 5); // 8·√4: llama.cpp divides by r
    expect(header.tensors).toHaveLength(2 * (2 * 7 + 1));
    expect(header.tensors.slice(0, 4).map((t) => t.name)).toEqual([
      "blk.0.attn_q.weight.lora_a",
      "blk.0.attn_q.weight.lora_b",
      "blk.0.attn_k.weight.lora_a",
      "blk.0.attn_k.weight.lora_b",
    ]);
    const dims = (n: string): number[] | undefined => header.tensors.find((t) => t.name === n)?.dims;
    expect(dims("blk.1.attn_k.weight.lora_a")).toEqual([64, 4]); // A [r, in] reversed
    expect(dims("blk.1.attn_k.weight.lora_b")).toEqual([4, 32]); // B [out, r] reversed
    expect(dims("blk.1.ffn_down.weight.lora_a")).toEqual([128, 4]);
    expect(dims("output.weight.lora_b")).toEqual([4, 512]);
    expect(header.tensors.every((t) => t.type === 0)).toBe(true);

    const peft = new Map((await readPeftAdapter(adapterDir)).tensors.map((t) => [t.name, t]));
    const source = async (n: string): Promise<Float32Array> => readTensorF32(peft.get(`base_model.model.${n}.weight`) ?? expect.unreachable(n));
    const qB = await tensorF32(file, header, "blk.1.attn_q.weight.lora_b");
    expect(qB).not.toEqual(await source("model.layers.1.self_attn.q_proj.lora_B"));
    expect(unpermuteRotary(qB, [64, 4], 4)).toEqual(await source("model.layers.1.self_attn.q_proj.lora_B"));
    expect(unpermuteRotary(await tensorF32(file, header, "blk.1.attn_k.weight.lora_b"), [32, 4], 2)).toEqual(await source("model.layers.1.self_attn.k_proj.lora_B"));
    expect(await tensorF32(file, header, "blk.1.attn_q.weight.lora_a")).toEqual(await source("model.layers.1.self_attn.q_proj.lora_A"));
    expect(await tensorF32(file, header, "blk.1.attn_v.weight.lora_b")).toEqual(await source("model.layers.1.self_attn.v_proj.lora_B"));

    await exportGgufLora(adapterDir, baseDir, file, { dtype: "F16", name: "x" });
    const f16 = await readGgufHeader(file);
    expect(f16.tensors.every((t) => t.type === 1)).toBe(true);
    expect(f16.metadata.get("general.file_type")).toBe(1);
  });

  test("names the adapter file: an lm_head adapter over tied embeddings, a base it does not fit", async () => {
    const tiedDir = path.join(dir, "lora-tied-base");
    const adapterDir = path.join(dir, "lora-tied-adapter");
    await writeTinyModel(tiedDir, { tied: true });
    await writeTinyAdapter(adapterDir, tiedDir, { targetModules: ["q_proj", "lm_head"] });
    const weights = path.join(adapterDir, ADAPTER_WEIGHTS_FILE).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    await expect(exportGgufLora(adapterDir, tiedDir, path.join(dir, "tied.gguf"))).rejects.toThrow(
      new RegExp(`${weights}: tensor \`base_model\\.model\\.lm_head\\.lora_A\\.weight\` adapts lm_head, which the base model ties to its embeddings`),
    );
    const otherDir = path.join(dir, "lora-other-base");
    await writeTinyModel(otherDir, { hidden: 96, heads: 4 });
    await writeTinyAdapter(adapterDir, tiedDir, { targetModules: ["q_proj"] });
    await expect(exportGgufLora(adapterDir, otherDir, path.join(dir, "other.gguf"))).rejects.toThrow(
      new RegExp(`${weights}: tensor \`base_model\\.model\\.model\\.layers\\.0\\.self_attn\\.q_proj\\.lora_A\\.weight\` \\[8, 64\\] .* does not fit the base's \`model\\.layers\\.0\\.self_attn\\.q_proj\\.weight\` \\[96, 96\\]`),
    );
    await expect(exportGgufLora(path.join(dir, "no-adapter"), tiedDir, path.join(dir, "none.gguf"))).rejects.toThrow(/no-adapter\/adapter_config\.json: file is missing/);
  });
});

const PROMPT = "The capital of France is Paris. It's 42, or 3.14!\n  What is the capital of Italy?";
const STEPS = 16;

/** The next-token log-probs over the whole vocabulary at each step, and the token chosen. */
interface Decoded {
  tokens: Token[];
  logProbs: Float64Array[];
}

describe("llama.cpp (node-llama-cpp) applies the GGUF LoRA as the merged model", () => {
  let llama: Llama;
  beforeAll(async () => {
    llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  });
  afterAll(async () => {
    await llama.dispose();
  });

  /**
   * Greedy decoding (llama.cpp's default sampling for a generated token is argmax) of STEPS tokens
   * after PROMPT, or along `forced` tokens when given (teacher forcing, so two models are compared
   * on the same path even where their choices would part).
   */
  async function decode(modelFile: string, loraFile: string | null, forced: readonly Token[] | null = null): Promise<Decoded> {
    const model = await llama.loadModel({ modelPath: modelFile });
    try {
      // One thread: the model is tiny, and threads spinning on a busy machine cost far more than they save.
      const context = await model.createContext({ contextSize: 256, threads: 1, ...(loraFile === null ? {} : { lora: { adapters: [{ filePath: loraFile, scale: 1 }] } }) });
      try {
        const sequence = context.getSequence();
        const vocab = model.fileInfo.metadata.tokenizer.ggml.tokens.length;
        const out: Decoded = { tokens: [], logProbs: [] };
        let input = model.tokenize(PROMPT);
        for (let step = 0; step < STEPS; step++) {
          const items = input.map((t, i): Token | [Token, { generateNext: { token: true; probabilities: true } }] =>
            i === input.length - 1 ? [t, { generateNext: { token: true, probabilities: true } }] : t,
          );
          const next = (await sequence.controlledEvaluate(items))[input.length - 1]?.next ?? expect.unreachable("no output");
          const probabilities = next.probabilities ?? expect.unreachable("no probabilities");
          out.logProbs.push(Float64Array.from({ length: vocab }, (_, id) => Math.log(probabilities.get(id as Token) ?? 0)));
          const token = next.token ?? expect.unreachable("no token");
          out.tokens.push(token);
          input = [forced?.[step] ?? token];
        }
        return out;
      } finally {
        await context.dispose();
      }
    } finally {
      await model.dispose();
    }
  }

  const maxDiff = (a: readonly Float64Array[], b: readonly Float64Array[]): number => {
    let m = 0;
    a.forEach((row, step) => row.forEach((v, id) => (m = Math.max(m, Math.abs(v - (b[step]?.[id] ?? NaN))))));
    return m;
  };

  /** Max |Δ log p| between base + GGUF LoRA and the merged model, over the vocabulary and every step of greedy decoding. */
  const LORA_TOLERANCE = 1e-3;

  const loraCases: Array<{ name: string; model: TinyModelOptions; adapter: Parameters<typeof writeTinyAdapter>[2]; unpermutedControl?: boolean }> = [
    { name: "llama, every projection and lm_head", model: { arch: "llama" }, adapter: { r: 8, alpha: 16, targetModules: [...ALL_PROJECTIONS, "lm_head"] } },
    { name: "llama, rsLoRA", model: { arch: "llama" }, adapter: { r: 16, alpha: 8, useRslora: true, targetModules: [...ALL_PROJECTIONS, "lm_head"] } },
    { name: "qwen2, attention and lm_head", model: { arch: "qwen2" }, adapter: { r: 8, alpha: 16, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"] } },
    // A strong q/k adapter sharpens attention, so that B's rotary row order decides the result.
    { name: "llama, q/k only", model: { arch: "llama" }, adapter: { r: 8, alpha: 256, targetModules: ["q_proj", "k_proj"] }, unpermutedControl: true },
  ];

  test.each(loraCases)(
    "$name: same greedy tokens and next-token log-probs as the merged model",
    async ({ name, model, adapter, unpermutedControl }) => {
      const slug = name.replace(/\W+/g, "-");
      const baseDir = path.join(dir, `${slug}-base`);
      const adapterDir = path.join(dir, `${slug}-adapter`);
      const mergedDir = path.join(dir, `${slug}-merged`);
      const baseFile = path.join(dir, `${slug}-base.gguf`);
      const loraFile = path.join(dir, `${slug}-lora.gguf`);
      const mergedFile = path.join(dir, `${slug}-merged.gguf`);
      await writeTinyModel(baseDir, { ...model, seed: 7, hidden: 128, heads: 4, kvHeads: 2 });
      await writeTinyAdapter(adapterDir, baseDir, { ...adapter, seed: 5 });
      await exportGguf(baseDir, baseFile, { dtype: "F32" });
      await exportGgufLora(adapterDir, baseDir, loraFile);
      await mergeAdapter(baseDir, adapterDir, mergedDir);
      await exportGguf(mergedDir, mergedFile, { dtype: "F32" });

      const merged = await decode(mergedFile, null);
      const withLora = await decode(baseFile, loraFile);
      const baseOnly = await decode(baseFile, null, merged.tokens);
      const diff = maxDiff(withLora.logProbs, merged.logProbs);
      const effect = maxDiff(baseOnly.logProbs, merged.logProbs);
      expect(withLora.tokens).toEqual(merged.tokens);
      expect(diff).toBeLessThan(LORA_TOLERANCE);
      expect(effect).toBeGreaterThan(100 * LORA_TOLERANCE); // the adapter moves the distribution far past the tolerance
      if (unpermutedControl === true) {
        // The same adapter written without the rotary permutation of B lands far from the merged model.
        const controlDir = path.join(dir, `${slug}-control`);
        const controlFile = path.join(dir, `${slug}-control.gguf`);
        await withUnpermutedQkB(adapterDir, controlDir, 4, 2);
        await exportGgufLora(controlDir, baseDir, controlFile);
        const control = await decode(baseFile, controlFile, merged.tokens);
        expect(maxDiff(control.logProbs, merged.logProbs)).toBeGreaterThan(100 * LORA_TOLERANCE);
      }
    },
    60_000,
  );

  /** Max |Δ log p| between the Q8_0 and the F32 export; probabilities near 1/512, so about 1.5 % relative. */
  const Q8_TOLERANCE = 0.05;

  test.each([
    { name: "llama", opts: { arch: "llama", hidden: 128 } },
    { name: "qwen2", opts: { arch: "qwen2", hidden: 128 } },
    { name: "llama, rows of 48 kept F16", opts: { arch: "llama", hidden: 48 } },
  ] as const)(
    "Q8_0 $name: greedy tokens and log-probs close to the F32 export",
    async ({ name, opts }) => {
      const slug = `q8-${name.replace(/\W+/g, "-")}`;
      const modelDir = path.join(dir, slug);
      await writeTinyModel(modelDir, { ...opts, seed: 7, heads: 4, kvHeads: 2 });
      await exportGguf(modelDir, path.join(dir, `${slug}-f32.gguf`), { dtype: "F32" });
      await exportGguf(modelDir, path.join(dir, `${slug}-q8.gguf`), { dtype: "Q8_0" });
      const f32 = await decode(path.join(dir, `${slug}-f32.gguf`), null);
      const q8 = await decode(path.join(dir, `${slug}-q8.gguf`), null, f32.tokens);
      const diff = maxDiff(q8.logProbs, f32.logProbs);
      expect(diff).toBeLessThan(Q8_TOLERANCE);
      expect(diff).toBeGreaterThan(0); // it was quantized
      // On F32's path, Q8_0's greedy choice is F32's at every step where F32's runner-up trails by
      // more than twice the tolerance; the tiny model's distributions are flat (runner-ups within
      // 0.002–0.3 nats), so a near-tie may flip: one step in STEPS is allowed.
      let agree = 0;
      f32.tokens.forEach((token, step) => {
        const row = f32.logProbs[step] ?? expect.unreachable();
        const runnerUp = Math.max(...row.filter((_, id) => id !== token));
        if (q8.tokens[step] === token) agree++;
        else expect((row[token] ?? 0) - runnerUp, `step ${step}: Q8_0 chose ${q8.tokens[step]}, F32 ${token}`).toBeLessThan(2 * Q8_TOLERANCE);
      });
      expect(agree).toBeGreaterThanOrEqual(STEPS - 1);
    },
    60_000,
  );
});
