// The bf16 base (Model.convertBaseToBf16, `--base-dtype bf16`): half the bytes for the frozen
// linears and an untied head (a tied head: a bf16 copy beside the table), a loss within the bf16 tolerance of the f32 base (test/README.md), and it trains.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readModelConfig, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, NF4_MODULES } from "./index.js";
import { lossBeforeAndAfterSteps, nextTokenBatch } from "./test-support/steps.js";

let dir = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-engine-bf16-"));
  await writeTinyModel(dir, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, seed: 5 });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("convertBaseToBf16", () => {
  it("halves the base linears' bytes (and the head's), keeps the loss within 2e-2 of the f32 base, and trains", async () => {
    const f32 = await Model.load(dir, { numThreads: 2 });
    const b16 = await Model.load(dir, { numThreads: 2 });
    try {
      const config = await readModelConfig(dir);
      const batch = nextTokenBatch(2, 16, config.vocabSize);
      for (const m of [f32, b16]) m.loraInit({ r: 4, alpha: 8, targetModules: [...NF4_MODULES], seed: 1 });
      const before = b16.memory();
      b16.convertBaseToBf16();
      const after = b16.memory();
      const c = b16.config;
      const perLayer = c.hiddenSize * (c.numHeads * c.headDim) * 2 + c.hiddenSize * (c.numKvHeads * c.headDim) * 2 + 3 * c.hiddenSize * c.intermediateSize;
      const head = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? -2 : 2); // an untied head halves; a tied one adds its bf16 copy
      expect(before.baseBytes - after.baseBytes).toBe(2 * perLayer * c.numLayers + head);
      expect(after.baseParams).toBe(before.baseParams);

      const lossF32 = (await f32.forwardBackward(batch, { backward: false, training: false })).loss;
      const { first, last } = await lossBeforeAndAfterSteps(b16, batch);
      expect(Math.abs(first - lossF32) / lossF32).toBeLessThan(2e-2);
      expect(last).toBeLessThan(first);
    } finally {
      f32.free();
      b16.free();
    }
  });

  it("refuses setWeight on a converted weight, the head's included, with INVALID_ARGUMENT", async () => {
    const model = await Model.load(dir, { numThreads: 1 });
    try {
      model.convertBaseToBf16(["q_proj", "lm_head"]);
      const c = model.config;
      const headName = c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
      expect(() => model.setWeight(headName, new Float32Array(c.vocabSize * c.hiddenSize))).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining("bf16") }),
      );
      expect(() => model.setWeight("model.layers.0.self_attn.q_proj.weight", new Float32Array(c.numHeads * c.headDim * c.hiddenSize))).toThrow(
        expect.objectContaining({ code: "INVALID_ARGUMENT", message: expect.stringContaining("bf16") }),
      );
    } finally {
      model.free();
    }
  });
});
