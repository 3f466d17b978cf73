import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ModelFormatError,
  inspectModelFolder,
  listTensors,
  mergeAdapter,
  readModelConfig,
  readPeftAdapter,
  readTensorF32,
  writeSafetensors,
  writeTinyAdapter,
  writeTinyModel,
  type TensorInfo,
} from "./index.js";

/** W + scale·B·A in f64, from the three tensors as stored. */
async function expectedMerge(w: TensorInfo, a: TensorInfo, b: TensorInfo, scale: number): Promise<Float64Array> {
  const [W, A, B] = [await readTensorF32(w), await readTensorF32(a), await readTensorF32(b)];
  const [rows, cols] = w.shape as [number, number];
  const r = a.shape[0]!;
  const out = new Float64Array(rows * cols);
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      let dot = 0;
      for (let k = 0; k < r; k++) dot += B[o * r + k]! * A[k * cols + i]!;
      out[o * cols + i] = W[o * cols + i]! + scale * dot;
    }
  }
  return out;
}

async function tensorMap(dir: string): Promise<Map<string, TensorInfo>> {
  return new Map((await listTensors(dir)).map((t) => [t.name, t]));
}

async function adapterTensors(dir: string): Promise<Map<string, TensorInfo>> {
  return new Map((await readPeftAdapter(dir)).tensors.map((t) => [t.name, t]));
}

async function rawBytes(t: TensorInfo): Promise<Buffer> {
  return (await readFile(t.file)).subarray(t.offset, t.offset + t.byteLength);
}

/** Largest |x - y| relative to max(|y|, 1e-3). */
function maxRelativeError(x: Float32Array, y: Float64Array): number {
  let worst = 0;
  y.forEach((v, i) => {
    worst = Math.max(worst, Math.abs(x[i]! - v) / Math.max(Math.abs(v), 1e-3));
  });
  return worst;
}

const Q0 = "model.layers.0.self_attn.q_proj";
const lora = (module: string, side: "A" | "B"): string => `base_model.model.${module}.lora_${side}.weight`;

describe("mergeAdapter", () => {
  let root: string;
  let base: string;
  let n = 0;
  const fresh = (name: string): string => path.join(root, `${name}-${n++}`);
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-merge-"));
    base = path.join(root, "base");
    await writeTinyModel(base, { layers: 2, seed: 3 });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("writes W + (alpha/r)·B·A for each adapted module and leaves every other tensor bit-identical", async () => {
    const adapter = fresh("adapter");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, base, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "lm_head"], seed: 1 });
    await mergeAdapter(base, adapter, out);

    const before = await tensorMap(base);
    const after = await tensorMap(out);
    const lo = await adapterTensors(adapter);
    expect([...after.keys()]).toEqual([...before.keys()]);
    const adapted = new Set<string>();
    for (const module of [Q0, "model.layers.1.self_attn.v_proj", "lm_head"]) {
      const name = `${module}.weight`;
      adapted.add(name);
      const expected = await expectedMerge(before.get(name)!, lo.get(lora(module, "A"))!, lo.get(lora(module, "B"))!, 8 / 4);
      const merged = await readTensorF32(after.get(name)!);
      expect(maxRelativeError(merged, expected), name).toBeLessThan(1e-6);
      const original = await readTensorF32(before.get(name)!);
      expect(Math.max(...merged.map((v, i) => Math.abs(v - original[i]!))), name).toBeGreaterThan(1e-3);
    }
    for (const [name, t] of before) {
      // Every layer's q_proj and v_proj is adapted; three of them were checked above.
      if (adapted.has(name) || /\.(q|v)_proj\.weight$/.test(name)) continue;
      expect((await rawBytes(after.get(name)!)).equals(await rawBytes(t)), name).toBe(true);
    }

    expect((await readdir(out)).sort()).toEqual((await readdir(base)).sort());
    for (const file of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]) {
      expect((await readFile(path.join(out, file))).equals(await readFile(path.join(base, file))), file).toBe(true);
    }
    const inspection = await inspectModelFolder(out);
    expect(inspection.parameterCount).toBe((await inspectModelFolder(base)).parameterCount);
  });

  it("scales an rsLoRA adapter by alpha/sqrt(r)", async () => {
    const adapter = fresh("rslora");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, base, { r: 4, alpha: 8, targetModules: ["q_proj"], useRslora: true });
    await mergeAdapter(base, adapter, out);
    const lo = await adapterTensors(adapter);
    const w = (await tensorMap(base)).get(`${Q0}.weight`)!;
    const merged = await readTensorF32((await tensorMap(out)).get(`${Q0}.weight`)!);
    const rs = await expectedMerge(w, lo.get(lora(Q0, "A"))!, lo.get(lora(Q0, "B"))!, 8 / Math.sqrt(4));
    const plain = await expectedMerge(w, lo.get(lora(Q0, "A"))!, lo.get(lora(Q0, "B"))!, 8 / 4);
    expect(maxRelativeError(merged, rs)).toBeLessThan(1e-6);
    expect(maxRelativeError(merged, plain)).toBeGreaterThan(1e-2);
  });

  it("keeps bf16 weights in bf16, merged values rounded once", async () => {
    const bf16 = fresh("bf16-base");
    await writeTinyModel(bf16, { layers: 1, dtype: "BF16" });
    const adapter = fresh("adapter");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, bf16, { r: 2, targetModules: ["q_proj"] });
    await mergeAdapter(bf16, adapter, out);
    const lo = await adapterTensors(adapter);
    const merged = (await tensorMap(out)).get(`${Q0}.weight`)!;
    expect(merged.dtype).toBe("BF16");
    const expected = await expectedMerge((await tensorMap(bf16)).get(`${Q0}.weight`)!, lo.get(lora(Q0, "A"))!, lo.get(lora(Q0, "B"))!, 16 / 2);
    expect(maxRelativeError(await readTensorF32(merged), expected)).toBeLessThanOrEqual(2 ** -8);
  });

  it("unties a tied model whose lm_head is adapted, leaving the embeddings as they were", async () => {
    const tied = fresh("tied-base");
    await writeTinyModel(tied, { layers: 1, tied: true });
    const adapter = fresh("adapter");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, tied, { r: 2, targetModules: ["lm_head"] });
    await mergeAdapter(tied, adapter, out);
    expect((await readModelConfig(out)).tieWordEmbeddings).toBe(false);
    const before = await tensorMap(tied);
    const after = await tensorMap(out);
    const lo = await adapterTensors(adapter);
    const embed = before.get("model.embed_tokens.weight")!;
    expect((await rawBytes(after.get("model.embed_tokens.weight")!)).equals(await rawBytes(embed))).toBe(true);
    const expected = await expectedMerge(embed, lo.get(lora("lm_head", "A"))!, lo.get(lora("lm_head", "B"))!, 16 / 2);
    expect(maxRelativeError(await readTensorF32(after.get("lm_head.weight")!), expected)).toBeLessThan(1e-6);
    expect((await inspectModelFolder(out)).parameterCount).toBe((await inspectModelFolder(tied)).parameterCount + embed.shape[0]! * embed.shape[1]!);
  });

  it("keeps the shards of a sharded base and rewrites the index", async () => {
    const sharded = fresh("sharded-base");
    await writeTinyModel(sharded, { layers: 2 });
    const tensors = await listTensors(sharded);
    const weightMap: Record<string, string> = {};
    for (const shard of ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
      const part = tensors.filter((t) => (t.name.includes("layers.1.") || t.name === "lm_head.weight") === shard.startsWith("model-00002"));
      await writeSafetensors(path.join(sharded, shard), await Promise.all(part.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) }))));
      for (const t of part) weightMap[t.name] = shard;
    }
    await rm(path.join(sharded, "model.safetensors"));
    await writeFile(path.join(sharded, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 1 }, weight_map: weightMap }));
    const adapter = fresh("adapter");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, sharded, { r: 2, targetModules: ["q_proj"] });
    await mergeAdapter(sharded, adapter, out);
    const index = JSON.parse(await readFile(path.join(out, "model.safetensors.index.json"), "utf8")) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    expect(index.weight_map).toEqual(weightMap);
    expect(index.metadata.total_size).toBe(tensors.reduce((s, t) => s + t.byteLength, 0));
    const after = await tensorMap(out);
    expect(path.basename(after.get("model.layers.1.self_attn.q_proj.weight")!.file)).toBe("model-00002-of-00002.safetensors");
    await inspectModelFolder(out);
  });

  it("hands each adapted weight to the given kernel with its name and shape, and writes what the kernel computed", async () => {
    const tied = fresh("tied-base");
    await writeTinyModel(tied, { layers: 1, tied: true });
    const adapter = fresh("adapter");
    const out = fresh("merged");
    await writeTinyAdapter(adapter, tied, { r: 2, alpha: 6, targetModules: ["q_proj", "lm_head"] });
    const calls: { name: string; rows: number; cols: number; r: number; scale: number }[] = [];
    await mergeAdapter(tied, adapter, out, {
      kernel: async (w, _a, _b, shape, scale) => {
        calls.push({ ...shape, scale });
        w.fill(0.5);
      },
    });
    const config = await readModelConfig(tied);
    expect(calls).toEqual([
      { name: "lm_head.weight", rows: config.vocabSize, cols: config.hiddenSize, r: 2, scale: 3 },
      { name: `${Q0}.weight`, rows: config.numHeads * config.headDim, cols: config.hiddenSize, r: 2, scale: 3 },
    ]);
    const after = await tensorMap(out);
    expect((await readTensorF32(after.get("lm_head.weight")!)).every((v) => v === 0.5)).toBe(true);
    expect((await readTensorF32(after.get(`${Q0}.weight`)!)).every((v) => v === 0.5)).toBe(true);
  });

  it("refuses an adapter whose shapes or modules do not fit the base, naming the tensor", async () => {
    const wide = fresh("wide-base");
    await writeTinyModel(wide, { layers: 2, hidden: 32, heads: 2, kvHeads: 1 });
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, wide, { r: 2, targetModules: ["q_proj"] });
    const err = await mergeAdapter(base, adapter, fresh("merged")).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as ModelFormatError).file).toBe(path.join(adapter, "adapter_model.safetensors"));
    expect((err as Error).message).toContain(`tensor \`${lora(Q0, "A")}\` [2, 32] with \`${lora(Q0, "B")}\` [32, 2] does not fit \`${Q0}.weight\` [64, 64]`);

    const deep = fresh("deep-base");
    await writeTinyModel(deep, { layers: 3 });
    const deeper = fresh("adapter");
    await writeTinyAdapter(deeper, deep, { r: 2, targetModules: ["o_proj"] });
    await expect(mergeAdapter(base, deeper, fresh("merged"))).rejects.toThrow(
      "tensor `base_model.model.model.layers.2.self_attn.o_proj.lora_A.weight` adapts `model.layers.2.self_attn.o_proj.weight`, which the base model does not have",
    );
    await expect(mergeAdapter(base, deeper, base)).rejects.toThrow("a folder of its own");
  });
});
