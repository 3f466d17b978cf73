// The engine against the PyTorch reference (test/reference.py): logits, masked loss, every LoRA
// gradient, the LoRA parameters after 3 clipped AdamW steps, and the base with the initial LoRA
// tensors merged in, for each case of test/golden, within the tolerance of test/README.md.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { listTensors, readTensorF32, writePeftAdapter } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Model, mergeLoraFolder, type Batch } from "./index.js";
import { ADAM_MOVE_TOL, MERGE_RTOL, RTOL, expectCloseArrays, expectCloseScalar, goldenCaseNames, readGoldenCase, writeCaseModel, type GoldenCase } from "./test-support/golden.js";

const names = await goldenCaseNames();

function batchOf(c: GoldenCase): Batch {
  return {
    tokens: Int32Array.from(c.tokens),
    labels: Int32Array.from(c.labels),
    positions: Int32Array.from(c.positions),
    segments: c.segments === null ? null : Int32Array.from(c.segments),
    batch: c.batch,
    seq: c.seq,
  };
}

describe.each(names)("golden case %s", (name) => {
  let dir = "";
  let golden: Awaited<ReturnType<typeof readGoldenCase>>;

  beforeAll(async () => {
    golden = await readGoldenCase(name);
    dir = await mkdtemp(path.join(tmpdir(), `lathe-engine-${name}-`));
    await writeCaseModel(golden.testCase, dir);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** The case's model with its LoRA tensors set to the reference's initial values. */
  async function loadCaseModel(): Promise<Model> {
    const model = await Model.load(dir, { numThreads: 2 });
    const lora = golden.testCase.lora;
    model.loraInit({ r: lora.r, alpha: lora.alpha, dropout: lora.dropout, useRslora: lora.useRslora, targetModules: lora.targetModules, seed: 0 });
    expect([...model.loraShapes().keys()].sort()).toEqual([...golden.init.keys()].sort());
    for (const [tensor, data] of golden.init) model.loraSet(tensor, data);
    return model;
  }

  it("gives the reference's logits, masked loss and every LoRA gradient", async () => {
    const model = await loadCaseModel();
    try {
      const result = await model.forwardBackward(batchOf(golden.testCase), { logits: true });
      expect(result.labelCount).toBe(golden.expected.labelCount);
      expectCloseScalar("loss", result.loss, golden.expected.loss);
      expectCloseArrays("logits", result.logits!, golden.tensors.get("logits")!);
      for (const tensor of golden.init.keys()) expectCloseArrays(`grad of ${tensor}`, model.loraGrad(tensor), golden.tensors.get(`grad/${tensor}`)!);
    } finally {
      model.free();
    }
  });

  it("merges the initial LoRA tensors into the base as the reference's W + scale·B·A", async () => {
    const lora = golden.testCase.lora;
    const adapter = path.join(dir, "adapter");
    const out = path.join(dir, "merged");
    const tensors = [...golden.init].map(([name, data]) => {
      const other = data.length / lora.r;
      return { name: `base_model.model.${name}`, shape: name.endsWith(".lora_A.weight") ? [lora.r, other] : [other, lora.r], data };
    });
    await writePeftAdapter(adapter, { r: lora.r, loraAlpha: lora.alpha, loraDropout: 0, targetModules: lora.targetModules, useRslora: lora.useRslora, baseModelNameOrPath: dir, tensors });
    await mergeLoraFolder({ baseDir: dir, adapterDir: adapter, outDir: out, numThreads: 2 });
    const merged = new Map((await listTensors(out)).map((t) => [t.name, t]));
    const expected = [...golden.tensors.keys()].filter((k) => k.startsWith("merged/"));
    expect(expected.length).toBe(golden.init.size / 2);
    for (const key of expected) {
      const name = key.slice("merged/".length);
      expect(merged.has(name), name).toBe(true);
      expectCloseArrays(`merged ${name}`, await readTensorF32(merged.get(name)!), golden.tensors.get(key)!, MERGE_RTOL);
    }
  });

  it("gives the reference's losses, gradient norms and LoRA parameters over 3 clipped AdamW steps", async () => {
    const model = await loadCaseModel();
    const opt = golden.testCase.optimizer;
    try {
      for (let step = 0; step < opt.steps; step++) {
        model.zeroGrad();
        const { loss } = await model.forwardBackward(batchOf(golden.testCase));
        expectCloseScalar(`loss at step ${step}`, loss, golden.expected.losses[step]!);
        const { gradNorm } = await model.adamwStep(opt);
        expectCloseScalar(`grad norm at step ${step}`, gradNorm, golden.expected.gradNorms[step]!);
      }
      for (const tensor of golden.init.keys()) {
        const want = golden.tensors.get(`step${opt.steps}/${tensor}`)!;
        expectCloseArrays(`${tensor} after ${opt.steps} steps`, model.loraGet(tensor), want, RTOL, ADAM_MOVE_TOL * opt.lr * opt.steps);
      }
    } finally {
      model.free();
    }
  });
});
