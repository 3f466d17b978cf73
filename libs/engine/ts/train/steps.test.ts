// How long `train` runs and what it does along the way, as HF's Trainer does it: max_steps over
// epochs, eval_steps, save_steps, a schedule that would change nothing refused, and a diverging
// run stopped at the step its loss stopped being finite.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { listTensors, readPeftAdapter, readTensorF32, resolveRecipe, writeSafetensors, writeTinyModel, type Recipe } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LossNotFiniteError, sequencesFromFile, train, type TrainProgress } from "../index.js";

let dir = "";
let modelDir = "";
let dataPath = "";

/** 16 short question/answer rows. */
const rows = (n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ prompt: `Question ${i}: what is ${i} plus ${i}?`, completion: `It is ${2 * i}.` })).join("\n");

const small = (over: Partial<Recipe> = {}): Recipe =>
  resolveRecipe({ r: 4, loraAlpha: 8, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"], perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, packing: false, maxSeqLength: 64, saveTotalLimit: 0, ...over });

async function run(name: string, recipe: Recipe, opts: { eval?: boolean; model?: string } = {}) {
  const model = opts.model ?? modelDir;
  const data = await sequencesFromFile(model, dataPath, recipe);
  const progress: TrainProgress[] = [];
  const checkpoints: { step: number; evalLoss: number | null }[] = [];
  const outDir = path.join(dir, name);
  const summary = await train({ modelDir: model, train: data, eval: opts.eval ? data : undefined, outDir, recipe, onCheckpoint: (c) => void checkpoints.push({ step: c.step, evalLoss: c.evalLoss }) }, (p) => progress.push(p));
  return { summary, progress, checkpoints, outDir };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-steps-"));
  modelDir = path.join(dir, "model");
  await writeTinyModel(modelDir, { hidden: 64, layers: 2, seed: 3 });
  dataPath = path.join(dir, "train.jsonl");
  await writeFile(dataPath, rows(16));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("train's steps", () => {
  it("max_steps overrides the epochs: 5 steps of 4 per epoch run into a second epoch and stop there, checkpointed at save_steps and at the last step", async () => {
    const { summary, progress, checkpoints } = await run("max-steps", small({ numTrainEpochs: 1, maxSteps: 5, saveSteps: 2, warmupRatio: 0 }));
    expect(summary.steps).toBe(5);
    expect(progress.map((p) => [p.step, p.totalSteps, p.epoch])).toEqual([[1, 5, 1], [2, 5, 1], [3, 5, 1], [4, 5, 1], [5, 5, 2]]);
    expect(progress.every((p) => p.stepsPerEpoch === 4)).toBe(true);
    // save_steps 2 and the end of epoch 1 (step 4) and of the run (step 5).
    expect(checkpoints.map((c) => c.step)).toEqual([2, 4, 5]);
    expect(summary.checkpoints.map((c) => path.basename(c))).toEqual(["checkpoint-2", "checkpoint-4", "checkpoint-5"]);
    // The schedule spans the 5 steps: cosine reaches (almost) 0 at the last, not at the end of epoch 2.
    expect(progress[4]!.lr).toBeLessThan(progress[3]!.lr);
    expect(progress[4]!.lr).toBeCloseTo(1e-2 * 0.5 * (1 + Math.cos((Math.PI * 4) / 5)), 8);
    expect(summary.trainLossPerEpoch).toHaveLength(2);
  });

  it("eval_steps computes the eval loss every n steps and after the last; without it, at each epoch's end and after the last", async () => {
    const every = await run("eval-steps", small({ numTrainEpochs: 2, evalSteps: 3 }), { eval: true });
    expect(every.summary.evalLosses.map((e) => e.step)).toEqual([3, 6, 8]);
    expect(every.summary.evalLosses.every((e) => Number.isFinite(e.loss))).toBe(true);
    // The epoch-end checkpoint at step 4 had no evaluation; the last one has.
    expect(every.checkpoints).toEqual([{ step: 4, evalLoss: null }, { step: 8, evalLoss: every.summary.evalLosses[2]!.loss }]);
    expect(every.summary.bestStep).toBe(every.summary.evalLosses.reduce((b, e) => (e.loss < b.loss ? e : b)).step);

    const perEpoch = await run("eval-epochs", small({ numTrainEpochs: 2, maxSteps: 6 }), { eval: true });
    expect(perEpoch.summary.evalLosses.map((e) => e.step)).toEqual([4, 6]);
    expect(perEpoch.summary.evalLossPerEpoch).toHaveLength(2);
  });

  it("refuses a run whose learning rate is 0 at every step (one step, with warmup) instead of writing an adapter that changes nothing", async () => {
    // The case: everything packs into one optimizer step, and warmup makes its lr 0.
    const oneStep = small({ numTrainEpochs: 1, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 4, warmupRatio: 0.03 });
    await expect(run("lr-zero", oneStep)).rejects.toThrow(/learning rate is 0 at every step: the run has 1 optimizer step and warmup takes 1; set warmup_ratio 0/);
    // Without warmup the one step trains: LoRA B is no longer all zeros.
    const { outDir } = await run("one-step", { ...oneStep, warmupRatio: 0 });
    const adapter = await readPeftAdapter(outDir);
    const b = adapter.tensors.filter((t) => t.name.includes("lora_B"));
    expect(b.length).toBeGreaterThan(0);
    const values = await Promise.all(b.map((t) => readTensorF32(t)));
    expect(values.some((v) => v.some((x) => x !== 0))).toBe(true);
  });

  it("stops a diverging run at the step its loss stops being finite, naming the step and what to lower", async () => {
    // A base model with a huge final-norm scale: losses near 1e35, so learning rate 1 overflows within a few steps.
    const hot = path.join(dir, "hot");
    await writeTinyModel(hot, { hidden: 64, layers: 2, seed: 3 });
    const tensors = await listTensors(hot);
    const scaled = [];
    for (const t of tensors) {
      const data = await readTensorF32(t);
      if (t.name === "model.norm.weight") data.forEach((v, i) => (data[i] = v * 1e36));
      scaled.push({ name: t.name, dtype: "F32" as const, shape: t.shape, data });
    }
    await writeSafetensors(tensors[0]!.file, scaled);
    const diverging = small({ learningRate: 1, loraAlpha: 16, r: 8, warmupRatio: 0, numTrainEpochs: 3 });
    const err = await run("diverging", diverging, { model: hot }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(LossNotFiniteError);
    expect((err as LossNotFiniteError).step).toBe(3);
    expect((err as Error).message).toMatch(/not finite at step 3 \(learning rate .*\): the run diverged; lower learning_rate/);
    // The same model trains at a small learning rate: it is the rate, not the data.
    const calm = await run("calm", { ...diverging, learningRate: 1e-5 }, { model: hot });
    expect(calm.summary.steps).toBe(12);
  });
});
