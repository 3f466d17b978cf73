// Memory-mapped weights (lathe_model_load_safetensors) against the older path that reads every
// tensor into JS and calls setWeight; and gradient checkpointing through the binding.
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { listTensors, readModelConfig, readTensorF32, writeSafetensors, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, Model, engineConfig } from "./index.js";
import { nextTokenBatch } from "./test-support/steps.js";
import { caught } from "./test-support/caught.js";

let root = "";

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "lathe-engine-load-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function logitsOf(dir: string, viaJs: boolean): Promise<{ logits: Float32Array; loss: number }> {
  const model = await Model.load(dir, { numThreads: 2, viaJs });
  try {
    const r = await model.forwardBackward(nextTokenBatch(2, 9, model.config.vocabSize), { backward: false, training: false, logits: true });
    return { logits: r.logits!, loss: r.loss };
  } finally {
    model.free();
  }
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe("memory-mapped safetensors", () => {
  it.each([
    { arch: "llama" as const, tied: false, dtype: "F32" as const },
    { arch: "qwen2" as const, tied: true, dtype: "F32" as const },
    { arch: "llama" as const, tied: false, dtype: "BF16" as const },
    { arch: "qwen2" as const, tied: false, dtype: "F16" as const },
  ])("$arch tied=$tied $dtype: mmap load gives the same logits bit for bit as the setWeight path", async ({ arch, tied, dtype }) => {
    const dir = path.join(root, `${arch}-${tied}-${dtype}`);
    await writeTinyModel(dir, { arch, tied, dtype, hidden: 32, intermediate: 64, layers: 2, seed: 4 });
    const viaMmap = await logitsOf(dir, false);
    const viaJs = await logitsOf(dir, true);
    expect(viaMmap.logits.length).toBeGreaterThan(0);
    expect(sameBits(viaMmap.logits, viaJs.logits)).toBe(true);
    expect(viaMmap.loss).toBe(viaJs.loss);
  });

  it("bf16 and f16 weights load as their exact f32 conversion (an f32 copy of the model gives the same logits)", async () => {
    for (const dtype of ["BF16", "F16"] as const) {
      const dir = path.join(root, `conv-${dtype}`);
      await writeTinyModel(dir, { dtype, hidden: 32, intermediate: 64, seed: 6 });
      const f32dir = path.join(root, `conv-${dtype}-as-f32`);
      await writeTinyModel(f32dir, { dtype: "F32", hidden: 32, intermediate: 64, seed: 6 });
      const tensors = await listTensors(dir);
      await writeSafetensors(
        path.join(f32dir, "model.safetensors"),
        await Promise.all(tensors.map(async (t) => ({ name: t.name, dtype: "F32" as const, shape: t.shape, data: await readTensorF32(t) }))),
      );
      const half = await logitsOf(dir, false);
      const full = await logitsOf(f32dir, false);
      expect(sameBits(half.logits, full.logits)).toBe(true);
    }
  });

  it("loads every shard of model.safetensors.index.json", async () => {
    const single = path.join(root, "to-shard");
    await writeTinyModel(single, { hidden: 32, intermediate: 64, seed: 8 });
    const sharded = path.join(root, "sharded");
    await writeTinyModel(sharded, { hidden: 32, intermediate: 64, seed: 8 });
    await rm(path.join(sharded, "model.safetensors"));
    const tensors = await listTensors(single);
    const half = Math.ceil(tensors.length / 2);
    const parts = [tensors.slice(0, half), tensors.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, part] of parts.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await writeSafetensors(path.join(sharded, file), await Promise.all(part.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) }))));
      for (const t of part) weightMap[t.name] = file;
    }
    await writeFile(path.join(sharded, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const a = await logitsOf(single, false);
    const b = await logitsOf(sharded, false);
    expect(sameBits(a.logits, b.logits)).toBe(true);
  });

  it("a truncated file is INVALID_ARGUMENT saying it is truncated", async () => {
    const dir = path.join(root, "truncated");
    await writeTinyModel(dir, { hidden: 32, intermediate: 64, seed: 9 });
    const file = path.join(dir, "model.safetensors");
    const cut = path.join(root, "cut.safetensors");
    await copyFile(file, cut);
    const size = (await readFile(cut)).length;
    await truncate(cut, size - 100);
    const model = Model.create(engineConfig(await readModelConfig(dir)));
    try {
      const err = await caught(() => model.loadSafetensors(cut));
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
      expect((err as EngineError).message).toMatch(/truncated safetensors file: tensor '.*' ends at byte \d+/);
      expect((err as EngineError).message).toContain(cut);
      await truncate(cut, 5);
      const tiny = await caught(() => model.loadSafetensors(cut));
      expect((tiny as EngineError).message).toContain("truncated safetensors file");
      const missing = await caught(() => model.loadSafetensors(path.join(root, "nope.safetensors")));
      expect((missing as EngineError).message).toContain("cannot open");
    } finally {
      model.free();
    }
  });

  it("unknown tensor names are named; a dtype other than F32/F16/BF16 is UNSUPPORTED", async () => {
    const dir = path.join(root, "extra");
    await writeTinyModel(dir, { hidden: 32, intermediate: 64, seed: 10 });
    const extra = path.join(root, "extra.safetensors");
    await writeSafetensors(extra, [
      { name: "model.norm.weight", dtype: "F32", shape: [32], data: new Float32Array(32) },
      { name: "model.layers.0.mlp.extra_proj.weight", dtype: "F32", shape: [2, 2], data: new Float32Array(4) },
    ]);
    const model = Model.create(engineConfig(await readModelConfig(dir)));
    try {
      const err = await caught(() => model.loadSafetensors(extra));
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
      expect((err as EngineError).message).toContain("model.layers.0.mlp.extra_proj.weight");
      // hand-made file: one I8 tensor
      const header = Buffer.from(JSON.stringify({ "model.norm.weight": { dtype: "I8", shape: [32], data_offsets: [0, 32] } }));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(header.length));
      const i8 = path.join(root, "i8.safetensors");
      await writeFile(i8, Buffer.concat([len, header, Buffer.alloc(32)]));
      const unsupported = await caught(() => model.loadSafetensors(i8));
      expect((unsupported as EngineError).code).toBe("UNSUPPORTED");
      expect((unsupported as EngineError).message).toContain("I8");
      // a wrong shape names both shapes
      const wrong = path.join(root, "wrong.safetensors");
      await writeSafetensors(wrong, [{ name: "model.norm.weight", dtype: "F32", shape: [16], data: new Float32Array(16) }]);
      const shapeErr = await caught(() => model.loadSafetensors(wrong));
      expect((shapeErr as EngineError).message).toContain("[16], the model expects [32]");
    } finally {
      model.free();
    }
  });
});

describe("gradient checkpointing through the binding", () => {
  it("same loss and gradients bit for bit, fewer activation bytes", async () => {
    const dir = path.join(root, "ckpt");
    await writeTinyModel(dir, { layers: 4, hidden: 32, intermediate: 64, seed: 11 });
    const run = async (ckpt: boolean) => {
      const model = await Model.load(dir, { numThreads: 2 });
      try {
        model.setGradientCheckpointing(ckpt);
        expect(model.activationBytes()).toBe(0);
        model.loraInit({ r: 4, alpha: 8, dropout: 0.1, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"], seed: 3 });
        const r = await model.forwardBackward(nextTokenBatch(2, 9, model.config.vocabSize));
        const grads = [...model.loraShapes().keys()].map((n) => model.loraGrad(n));
        return { loss: r.loss, grads, bytes: model.activationBytes() };
      } finally {
        model.free();
      }
    };
    const plain = await run(false);
    const ckpt = await run(true);
    expect(ckpt.loss).toBe(plain.loss);
    expect(ckpt.grads.every((g, i) => sameBits(g, plain.grads[i]!))).toBe(true);
    expect(plain.bytes).toBeGreaterThan(0);
    expect(ckpt.bytes).toBeLessThan(plain.bytes);
    const model = Model.create(engineConfig(await readModelConfig(dir)));
    try {
      expect(() => (model as unknown as { handle: { setGradientCheckpointing(x: unknown): void } }).handle.setGradientCheckpointing("yes")).toThrow(/boolean/);
    } finally {
      model.free();
    }
  });
});
