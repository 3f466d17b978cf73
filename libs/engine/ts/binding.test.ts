// The Node-API binding's contract: typed errors that name what was wrong, calls that run off the
// event loop, and a model that refuses to be used while busy or after free.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { listTensors, readModelConfig, readTensorF32, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, Model, engineConfig, type Batch } from "./index.js";
import { caught } from "./test-support/caught.js";

let small = "";
let larger = "";

beforeAll(async () => {
  small = await mkdtemp(path.join(tmpdir(), "lathe-engine-small-"));
  await writeTinyModel(small, { hidden: 32, intermediate: 64, seed: 1 });
  // Big enough that one forward/backward takes many event-loop turns on any machine.
  larger = await mkdtemp(path.join(tmpdir(), "lathe-engine-larger-"));
  await writeTinyModel(larger, { layers: 4, hidden: 256, heads: 8, kvHeads: 4, intermediate: 768, seed: 2 });
});
afterAll(async () => {
  await rm(small, { recursive: true, force: true });
  await rm(larger, { recursive: true, force: true });
});

function randomBatch(batch: number, seq: number, vocab: number): Batch {
  const n = batch * seq;
  const tokens = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
  const labels = Int32Array.from({ length: n }, (_, i) => ((i + 1) % seq === 0 ? -100 : tokens[i + 1]!));
  const positions = Int32Array.from({ length: n }, (_, i) => i % seq);
  return { tokens, labels, positions, segments: null, batch, seq };
}

describe("errors", () => {
  it("an unknown weight name fails with EngineError INVALID_ARGUMENT naming it", async () => {
    const model = Model.create(engineConfig(await readModelConfig(small)));
    try {
      const err = await caught(() => model.setWeight("model.layers.0.self_attn.qq_proj.weight", new Float32Array(4)));
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
      expect((err as EngineError).message).toContain("model.layers.0.self_attn.qq_proj.weight");
    } finally {
      model.free();
    }
  });

  it("a weight of the wrong size fails with INVALID_ARGUMENT", async () => {
    const model = Model.create(engineConfig(await readModelConfig(small)));
    try {
      const err = await caught(() => model.setWeight("model.norm.weight", new Float32Array(3)));
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
    } finally {
      model.free();
    }
  });

  it("an invalid config fails with a typed error instead of aborting the process", async () => {
    const config = { ...engineConfig(await readModelConfig(small)), numKvHeads: 3 };
    const err = await caught(() => Model.create(config));
    expect(err).toBeInstanceOf(EngineError);
    expect(["INVALID_ARGUMENT", "UNSUPPORTED"]).toContain((err as EngineError).code);
  });

  it("arrays whose length is not batch*seq reject with INVALID_ARGUMENT naming the field", async () => {
    const model = await Model.load(small, { numThreads: 1 });
    try {
      model.loraInit({ r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] });
      const batch = { ...randomBatch(2, 8, 512), labels: new Int32Array(15) };
      const err = await caught(() => model.forwardBackward(batch));
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
      expect((err as EngineError).message).toContain("labels");
    } finally {
      model.free();
    }
  });

  it("an unknown LoRA module fails with INVALID_ARGUMENT naming it", async () => {
    const model = await Model.load(small, { numThreads: 1 });
    try {
      const err = await caught(() => model.loraInit({ r: 4, alpha: 8, targetModules: ["q_proj", "qkv_proj" as "q_proj"] }));
      expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
      expect((err as EngineError).message).toContain("qkv_proj");
    } finally {
      model.free();
    }
  });

  it("a freed model refuses calls with FAILED_PRECONDITION", async () => {
    const model = await Model.load(small, { numThreads: 1 });
    model.free();
    const err = await caught(() => model.zeroGrad());
    expect((err as EngineError).code).toBe("FAILED_PRECONDITION");
  });
});

describe("threading", () => {
  it("forwardBackward runs off the event loop: timers keep firing while a larger batch runs", async () => {
    const config = engineConfig(await readModelConfig(larger), 2);
    const model = Model.create(config);
    try {
      for (const tensor of await listTensors(larger)) model.setWeight(tensor.name, await readTensorF32(tensor));
      model.loraInit({ r: 8, alpha: 16, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] });
      let ticks = 0;
      const timer = setInterval(() => ticks++, 1);
      const pending = model.forwardBackward(randomBatch(8, 256, config.vocabSize));
      // While it runs the model is busy: a second call is refused rather than racing it.
      expect((await caught(() => model.zeroGrad()) as EngineError).code).toBe("FAILED_PRECONDITION");
      const result = await pending;
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(0);
      expect(Number.isFinite(result.loss)).toBe(true);
      expect(result.labelCount).toBe(8 * 255);
    } finally {
      model.free();
    }
  });

  it("free during a pending forwardBackward waits for it, then releases the model", async () => {
    const model = await Model.load(small, { numThreads: 1 });
    model.loraInit({ r: 4, alpha: 8, targetModules: ["q_proj"] });
    const pending = model.forwardBackward(randomBatch(2, 16, 512));
    model.free();
    const result = await pending;
    expect(Number.isFinite(result.loss)).toBe(true);
    expect((await caught(() => model.zeroGrad()) as EngineError).code).toBe("FAILED_PRECONDITION");
  });
});

describe("checkpoint state through the binding", () => {
  it("reads and restores AdamW moments, the step counter and the dropout RNG state, and names bad input", async () => {
    const model = await Model.load(small, { numThreads: 1 });
    try {
      model.loraInit({ r: 2, alpha: 4, dropout: 0.1, targetModules: ["q_proj"], seed: 3 });
      const name = "model.layers.0.self_attn.q_proj.lora_B.weight"; // A's first gradient is 0 (B starts at 0)
      expect(model.adamwStepCount()).toBe(0);
      const before = model.rngState();
      expect(before).toBeInstanceOf(BigUint64Array);
      expect(before).toHaveLength(4);
      await model.forwardBackward(randomBatch(1, 8, model.config.vocabSize));
      await model.adamwStep({ lr: 1e-2 });
      expect(model.adamwStepCount()).toBe(1);
      expect(model.rngState()).not.toEqual(before); // dropout drew masks
      const { m, v } = model.adamwStateGet(name);
      expect(m.some((x) => x !== 0)).toBe(true);
      expect(v.every((x) => x >= 0)).toBe(true);

      model.adamwStateSet(name, m.map((x) => x * 2), v);
      expect(model.adamwStateGet(name).m).toEqual(m.map((x) => x * 2));
      model.setAdamwStepCount(7);
      expect(model.adamwStepCount()).toBe(7);
      model.setRngState(before);
      expect(model.rngState()).toEqual(before);

      const short = (await caught(() => model.adamwStateSet(name, new Float32Array(3), new Float32Array(3)))) as EngineError;
      expect(short.code).toBe("INVALID_ARGUMENT");
      expect(short.message).toContain("got 3");
      expect(((await caught(() => model.setRngState(new BigUint64Array(4)))) as EngineError).message).toContain("all-zero");
      expect(((await caught(() => model.setAdamwStepCount(-1))) as EngineError).code).toBe("INVALID_ARGUMENT");
    } finally {
      model.free();
    }
  });
});
