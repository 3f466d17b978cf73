// The engine's LoRA merge against @lathe/models' mergeAdapter (the JS reference): the same merged
// folder byte for byte, typed errors that name the tensor, and the arithmetic off the event loop.
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ModelFormatError, listTensors, mergeAdapter, readTensorF32, writeSafetensors, writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, loraMerge, mergeLoraFolder } from "./index.js";

let root = "";
let n = 0;
const fresh = (name: string): string => path.join(root, `${name}-${n++}`);
const ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "lathe-engine-merge-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Merges with both implementations and expects the same file names and the same bytes in each. */
async function expectSameMerge(base: string, adapter: string): Promise<string> {
  const js = fresh("js");
  const engine = fresh("engine");
  await mergeAdapter(base, adapter, js);
  await mergeLoraFolder({ baseDir: base, adapterDir: adapter, outDir: engine, numThreads: 2 });
  const files = (await readdir(js)).sort();
  expect((await readdir(engine)).sort()).toEqual(files);
  for (const file of files) {
    expect((await readFile(path.join(engine, file))).equals(await readFile(path.join(js, file))), file).toBe(true);
  }
  // The merge did something: an adapted weight differs from the base.
  const before = new Map((await listTensors(base)).map((t) => [t.name, t]));
  const changed = await Promise.all(
    (await listTensors(engine)).map(async (t) => {
      const original = before.get(t.name);
      return original === undefined || !(await readFile(t.file)).subarray(t.offset, t.offset + t.byteLength).equals((await readFile(original.file)).subarray(original.offset, original.offset + original.byteLength));
    }),
  );
  expect(changed.some(Boolean)).toBe(true);
  return engine;
}

describe("mergeLoraFolder", () => {
  it("writes the same bytes as mergeAdapter for LoRA on every projection and an untied lm_head", async () => {
    const base = fresh("base");
    await writeTinyModel(base, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 160, seed: 4 });
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, base, { r: 8, alpha: 16, targetModules: [...ALL, "lm_head"], seed: 2 });
    await expectSameMerge(base, adapter);
  });

  it("writes the same bytes as mergeAdapter for rsLoRA (alpha/sqrt(r)) with an r that is not a power of two", async () => {
    const base = fresh("base");
    await writeTinyModel(base, { layers: 1, seed: 5 });
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, base, { r: 6, alpha: 8, targetModules: ["q_proj", "down_proj"], useRslora: true, seed: 3 });
    await expectSameMerge(base, adapter);
  });

  it("unties a tied model whose lm_head is adapted, as mergeAdapter does", async () => {
    const base = fresh("tied");
    await writeTinyModel(base, { layers: 1, tied: true, seed: 6 });
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, base, { r: 4, targetModules: ["lm_head", "v_proj"] });
    const out = await expectSameMerge(base, adapter);
    expect(JSON.parse(await readFile(path.join(out, "config.json"), "utf8")).tie_word_embeddings).toBe(false);
    expect((await listTensors(out)).map((t) => t.name)).toContain("lm_head.weight");
  });

  it("keeps bf16 weights in bf16 and a sharded base's shards, as mergeAdapter does", async () => {
    const base = fresh("bf16");
    await writeTinyModel(base, { layers: 2, dtype: "BF16", seed: 7 });
    const tensors = await listTensors(base);
    const weightMap: Record<string, string> = {};
    for (const shard of ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
      const part = tensors.filter((t) => t.name.includes("layers.1.") === shard.startsWith("model-00002"));
      await writeSafetensors(path.join(base, shard), await Promise.all(part.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) }))));
      for (const t of part) weightMap[t.name] = shard;
    }
    await rm(path.join(base, "model.safetensors"));
    await writeFile(path.join(base, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 1 }, weight_map: weightMap }));
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, base, { r: 2, targetModules: ["q_proj", "up_proj"] });
    const out = await expectSameMerge(base, adapter);
    expect(new Set((await listTensors(out)).map((t) => t.dtype))).toEqual(new Set(["BF16"]));
  });

  it("refuses an adapter made for another shape with a ModelFormatError naming the tensor", async () => {
    const base = fresh("base");
    await writeTinyModel(base, { layers: 2 });
    const wide = fresh("wide");
    await writeTinyModel(wide, { layers: 2, hidden: 32, heads: 2, kvHeads: 1 });
    const adapter = fresh("adapter");
    await writeTinyAdapter(adapter, wide, { r: 2, targetModules: ["q_proj"] });
    const err = await mergeLoraFolder({ baseDir: base, adapterDir: adapter, outDir: fresh("merged") }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as Error).message).toContain("`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` [2, 32]");
    expect((err as Error).message).toContain("does not fit `model.layers.0.self_attn.q_proj.weight` [64, 64]");
  });
});

describe("loraMerge", () => {
  it("rejects arrays whose lengths do not fit the shape with EngineError INVALID_ARGUMENT naming the tensor", async () => {
    const shape = { name: "model.layers.3.mlp.up_proj.weight", rows: 4, cols: 3, r: 2 };
    const err = await loraMerge(new Float32Array(12), new Float32Array(5), new Float32Array(8), shape, 1).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
    expect((err as EngineError).message).toBe("model.layers.3.mlp.up_proj.weight: merge.a has 5 elements, expected r*cols = 6");
    const zero = await loraMerge(new Float32Array(0), new Float32Array(0), new Float32Array(0), { ...shape, rows: 0 }, 1).then(() => undefined, (e: unknown) => e);
    expect((zero as EngineError).code).toBe("INVALID_ARGUMENT");
  });

  it("computes W + scale·B·A off the event loop: timers keep firing while a large weight merges", async () => {
    const rows = 2048;
    const cols = 2048;
    const r = 64;
    const w = Float32Array.from({ length: rows * cols }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const a = Float32Array.from({ length: r * cols }, (_, i) => ((i * 104729) % 997) / 997 - 0.5);
    const b = Float32Array.from({ length: rows * r }, (_, i) => ((i * 31) % 101) / 1010 - 0.05);
    const want = Float32Array.from(w);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await loraMerge(w, a, b, { name: "w", rows, cols, r }, 0.5, { numThreads: 2 });
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    // Row 1000 by hand, in f64 rounded once, as the kernel promises.
    const o = 1000;
    for (let i = 0; i < cols; i++) {
      let sum = 0;
      for (let k = 0; k < r; k++) if (b[o * r + k] !== 0) sum += b[o * r + k]! * a[k * cols + i]!;
      want[o * cols + i] = want[o * cols + i]! + 0.5 * sum;
    }
    expect(w.subarray(o * cols, (o + 1) * cols)).toEqual(want.subarray(o * cols, (o + 1) * cols));
  });
});
