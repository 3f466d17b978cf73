// The training loop end to end on a tiny random model: it learns a small format task, writes an
// adapter PEFT can load, is deterministic, accumulates gradients exactly, and stops when told.
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readPeftAdapter, readTensorF32, resolveRecipe, writeTinyModel, type Recipe } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CheckpointError, EngineError, evalLoss, recipeFromAdapter, sequencesFromFile, train as trainResolved, TrainingDataError, type TrainOptions, type TrainProgress } from "./index.js";

const CITIES: [string, string][] = [
  ["Paris", "France"], ["Lyon", "France"], ["Berlin", "Germany"], ["Munich", "Germany"], ["Madrid", "Spain"],
  ["Seville", "Spain"], ["Rome", "Italy"], ["Milan", "Italy"], ["Lisbon", "Portugal"], ["Porto", "Portugal"],
  ["Vienna", "Austria"], ["Salzburg", "Austria"], ["Oslo", "Norway"], ["Bergen", "Norway"], ["Dublin", "Ireland"],
  ["Cork", "Ireland"], ["Tokyo", "Japan"], ["Osaka", "Japan"], ["Lima", "Peru"], ["Cusco", "Peru"],
];

/** 40 deterministic examples whose answer is always `{"country": …}`: 32 to train on, 8 held out. */
function formatTask(): { train: string; eval: string } {
  const lines = CITIES.flatMap(([city, country]) => [
    { instruction: "Reply in JSON with the city's country.", input: city, output: JSON.stringify({ country }) },
    { prompt: `Which country is ${city} in? Reply in JSON.`, completion: JSON.stringify({ country }) },
  ].map((e) => JSON.stringify(e)));
  const heldOut = (i: number) => i % 5 === 4;
  return { train: lines.filter((_, i) => !heldOut(i)).join("\n") + "\n", eval: lines.filter((_, i) => heldOut(i)).join("\n") + "\n" };
}

let dir = "";
let modelDir = "";
let dataPath = "";
let evalPath = "";

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-train-"));
  modelDir = path.join(dir, "model");
  await writeTinyModel(modelDir, { hidden: 64, layers: 2, seed: 3 });
  const task = formatTask();
  dataPath = path.join(dir, "train.jsonl");
  evalPath = path.join(dir, "eval.jsonl");
  await writeFile(dataPath, task.train);
  await writeFile(evalPath, task.eval);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * These runs were written when `train` took optional settings with defaults of its own; it takes
 * a resolved recipe and tokenized sequences now. `Legacy` is the old shape (files of rows included); `train` below resolves it with the engine's
 * old defaults (no rsLoRA, no packing, no gradient accumulation or checkpointing, a checkpoint
 * every 500 steps), so every run trains exactly what it did.
 */
interface Legacy extends Omit<TrainOptions, "recipe" | "train" | "eval"> {
  dataPath: string; evalPath?: string;
  loraR?: number; loraAlpha?: number; loraDropout?: number; targetModules?: string[]; useRslora?: boolean; epochs?: number; batchSize?: number; gradAccum?: number;
  lr?: number; warmupRatio?: number; weightDecay?: number; maxGradNorm?: number; maxSeqLength?: number; packing?: boolean; trainOnInputs?: boolean; seed?: number;
  gradientCheckpointing?: boolean; saveSteps?: number; saveTotalLimit?: number;
}

async function train(o: Legacy, onProgress?: (p: TrainProgress) => void, signal?: AbortSignal) {
  const { loraR, loraAlpha, loraDropout, targetModules, useRslora, epochs, batchSize, gradAccum, lr, warmupRatio, weightDecay, maxGradNorm, maxSeqLength, packing, trainOnInputs, seed, gradientCheckpointing, saveSteps, saveTotalLimit, ...rest } = o;
  const given: Partial<Recipe> = Object.fromEntries(Object.entries({
    r: loraR, loraAlpha, loraDropout, targetModules, useRslora, numTrainEpochs: epochs, perDeviceTrainBatchSize: batchSize, learningRate: lr, warmupRatio, weightDecay, maxGradNorm, maxSeqLength, trainOnInputs, seed, saveTotalLimit,
    gradientAccumulationSteps: gradAccum ?? 1, packing: packing ?? false, gradientCheckpointing: gradientCheckpointing ?? false, saveSteps: saveSteps ?? 500,
  }).filter(([, v]) => v !== undefined));
  const asked = o.initAdapter === undefined ? { useRslora: false, ...given } : await recipeFromAdapter(o.initAdapter, given);
  const recipe = resolveRecipe(asked);
  const { dataPath: data, evalPath: evalData, ...run } = rest;
  const sequences = (file: string) => sequencesFromFile(run.modelDir, file, recipe);
  return trainResolved({ ...run, recipe, train: await sequences(data), eval: evalData === undefined ? undefined : await sequences(evalData) }, onProgress, signal);
}

const options = (out: string, extra: Partial<Legacy> = {}): Legacy => ({
  modelDir, dataPath, outDir: path.join(dir, out), numThreads: 1, loraR: 8, loraAlpha: 16, lr: 1e-2, epochs: 1, batchSize: 4, seed: 7, ...extra,
});

async function adapterTensors(out: string): Promise<Map<string, Float32Array>> {
  const adapter = await readPeftAdapter(path.join(dir, out));
  return new Map(await Promise.all(adapter.tensors.map(async (t) => [t.name, await readTensorF32(t)] as const)));
}

describe("train", () => {
  it("lowers the held-out loss of a format task by far and writes a PEFT adapter that evalLoss applies", async () => {
    // The tiny model's head is frozen random (std 0.02) behind an RMSNorm: without LoRA on
    // lm_head its logits stay within about ±1.3 and the loss cannot fall far, so adapt it too.
    const targetModules = ["q", "k", "v", "o", "gate", "up", "down", "lm_head"];
    const progress: TrainProgress[] = [];
    const summary = await train(options("run", { evalPath, epochs: 6, targetModules }), (p) => progress.push(p));

    const base = await evalLoss(modelDir, evalPath, { numThreads: 1 });
    const tuned = await evalLoss(modelDir, evalPath, { numThreads: 1, adapterDir: path.join(dir, "run") });
    // Measured: 6.26 → 1.11 (an 82% drop); the threshold leaves a wide margin.
    expect(tuned.loss).toBeLessThan(base.loss * 0.5);
    expect(tuned.perplexity).toBeCloseTo(Math.exp(tuned.loss), 6);
    expect(tuned.tokens).toBe(base.tokens);
    expect(summary.evalLossPerEpoch).toHaveLength(6);
    expect(summary.evalLossPerEpoch.at(-1)).toBeCloseTo(tuned.loss, 4);
    expect(summary.trainLossPerEpoch.at(-1)!).toBeLessThan(summary.trainLossPerEpoch[0]!);
    expect(summary.tokens).toBeGreaterThan(0);
    expect(summary.truncatedExamples).toBe(0);

    // 32 examples / batch 4 = 8 steps per epoch.
    expect(progress.map((p) => p.step)).toEqual(Array.from({ length: 48 }, (_, i) => i + 1));
    expect(progress.every((p) => p.totalSteps === 48 && Number.isFinite(p.loss) && p.tokensPerSecond > 0 && p.etaSeconds >= 0)).toBe(true);
    expect(progress[0]!.lr).toBe(0); // HF warmup: ceil(0.03·48) = 2 steps from 0
    expect(progress.at(-1)!.epoch).toBe(6);

    const adapter = await readPeftAdapter(path.join(dir, "run"));
    expect(adapter.r).toBe(8);
    expect(adapter.loraAlpha).toBe(16);
    expect(adapter.loraDropout).toBe(0.05);
    expect(adapter.baseModelNameOrPath).toBe(modelDir);
    expect(adapter.targetModules).toEqual(["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"]);
    const names = adapter.tensors.map((t) => t.name);
    expect(names).toContain("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    expect(names).toContain("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
    expect(names).toContain("base_model.model.lm_head.lora_B.weight");
    expect(names).toHaveLength(2 * (2 * 7 + 1));
    const config = JSON.parse(await readFile(path.join(dir, "run", "adapter_config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ peft_type: "LORA", task_type: "CAUSAL_LM", use_rslora: false });
    const written = JSON.parse(await readFile(path.join(dir, "run", "training_summary.json"), "utf8")) as Record<string, unknown>;
    expect(written["trainLossPerEpoch"]).toEqual(summary.trainLossPerEpoch);
  });

  it("trains on the device it names: one this engine cannot use here is an EngineError UNSUPPORTED and no adapter", async () => {
    await expect(train(options("no-device", { device: "tpu" }))).rejects.toSatisfy(
      (err: unknown) => err instanceof EngineError && err.code === "UNSUPPORTED" && err.message.includes("'tpu'"),
    );
    expect(existsSync(path.join(dir, "no-device", "adapter_model.safetensors"))).toBe(false);
  });

  it("gives byte-identical adapters for the same seed, and a different one for another seed", async () => {
    await train(options("seed-a"));
    await train(options("seed-b"));
    await train(options("seed-c", { seed: 8 }));
    const bytes = (d: string) => readFile(path.join(dir, d, "adapter_model.safetensors"));
    expect((await bytes("seed-a")).equals(await bytes("seed-b"))).toBe(true);
    expect((await bytes("seed-a")).equals(await bytes("seed-c"))).toBe(false);
  });

  it("accumulating 2 micro-batches of 2 gives the update of one batch of 4", async () => {
    // No dropout: its masks depend on how rows are split into calls.
    await train(options("full", { batchSize: 4, gradAccum: 1, loraDropout: 0 }));
    await train(options("accum", { batchSize: 2, gradAccum: 2, loraDropout: 0 }));
    const full = await adapterTensors("full");
    const accum = await adapterTensors("accum");
    let worst = 0;
    for (const [name, a] of full) {
      const b = accum.get(name)!;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (Math.abs(a[i]!) + 1e-3));
    }
    // Only float summation order differs (padding to 2 vs 4 rows' longest).
    expect(worst).toBeLessThan(1e-3);
    const base = await adapterTensors("seed-a");
    const name = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
    expect(full.get(name)!.some((x, i) => x !== base.get(name)![i])).toBe(true);
  });

  it("packs examples into rows when asked, and counts truncated examples", async () => {
    const packed = await train(options("packed", { packing: true, maxSeqLength: 256, batchSize: 2 }));
    expect(packed.steps).toBeGreaterThan(0);
    expect(packed.steps).toBeLessThan(8); // 32 examples of about 56 tokens fill about 8 rows of 256, not 32
    expect(Number.isFinite(packed.trainLossPerEpoch[0])).toBe(true);
    const cut = await train(options("cut", { maxSeqLength: 24 }));
    expect(cut.truncatedExamples).toBeGreaterThan(0);
  });

  it("stops within one step when its signal is aborted, writing nothing", async () => {
    const controller = new AbortController();
    const steps: number[] = [];
    const run = train(options("cancelled", { epochs: 3 }), (p) => {
      steps.push(p.step);
      if (p.step === 2) controller.abort();
    }, controller.signal);
    await expect(run).rejects.toSatisfy((err: unknown) => err instanceof EngineError && err.code === "CANCELLED");
    expect(steps).toEqual([1, 2]);
    expect(existsSync(path.join(dir, "cancelled", "adapter_model.safetensors"))).toBe(false);
  });

  it("names file:line of a malformed JSONL line", async () => {
    const bad = path.join(dir, "bad.jsonl");
    await writeFile(bad, `${formatTask().train.split("\n").slice(0, 2).join("\n")}\n\n{"prompt": "x"\n`);
    const err = await train(options("bad", { dataPath: bad })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TrainingDataError);
    expect((err as Error).message).toContain(`${bad}:4: not valid JSON`);
    await writeFile(bad, `{"prompt": "x", "completion": "y"}\n{"question": "x"}\n`);
    const shape = await evalLoss(modelDir, bad).catch((e: unknown) => e);
    expect((shape as Error).message).toMatch(new RegExp(`${bad.replace(/[.]/g, "\\.")}:2: example must have`));
  });
});

describe("checkpoints, resume, keep-best, initAdapter and QLoRA", () => {
  const bytes = (d: string) => readFile(path.join(dir, d, "adapter_model.safetensors"));
  const checkpointsOf = (d: string) => readdirSync(path.join(dir, d)).filter((n) => n.startsWith("checkpoint-")).sort();

  it("an interrupted run resumed from its latest checkpoint ends with a byte-identical adapter", async () => {
    // Dropout on, 2 epochs of 8 steps, accumulation: every piece of state matters.
    const run = { epochs: 2, batchSize: 2, gradAccum: 2, loraDropout: 0.1, evalPath, saveSteps: 3, saveTotalLimit: 10 };
    const whole = await train(options("resume-a", run));
    expect(whole.checkpointsWritten.map((c) => path.basename(c))).toEqual(["checkpoint-3", "checkpoint-6", "checkpoint-8", "checkpoint-9", "checkpoint-12", "checkpoint-15", "checkpoint-16"]);

    // Interrupted after step 10 (of 16): the newest checkpoint is step 9, in epoch 2.
    const controller = new AbortController();
    await expect(train(options("resume-b", run), (p) => { if (p.step === 10) controller.abort(); }, controller.signal)).rejects.toBeInstanceOf(EngineError);
    expect(checkpointsOf("resume-b")).toEqual(["checkpoint-3", "checkpoint-6", "checkpoint-8", "checkpoint-9"]);
    const state = JSON.parse(await readFile(path.join(dir, "resume-b", "checkpoint-9", "trainer_state.json"), "utf8")) as Record<string, unknown>;
    expect(state).toMatchObject({ globalStep: 9, epoch: 1, stepInEpoch: 1, adamwStepCount: 9 });
    expect((state["rng"] as { dropout: string[] }).dropout).toHaveLength(4);

    const steps: number[] = [];
    const resumed = await train(options("resume-b", { ...run, resumeFrom: "latest" }), (p) => steps.push(p.step));
    expect(steps).toEqual([10, 11, 12, 13, 14, 15, 16]);
    expect(resumed.resumedFromStep).toBe(9);
    expect((await bytes("resume-b")).equals(await bytes("resume-a"))).toBe(true);
    expect(resumed.trainLossPerEpoch).toEqual(whole.trainLossPerEpoch);
    expect(resumed.evalLossPerEpoch).toEqual(whole.evalLossPerEpoch);
    expect(resumed.tokens).toBe(whole.tokens);

    // A resume from the end of epoch 1 (an explicit folder) also lands on the same bytes.
    await train(options("resume-b", { ...run, resumeFrom: path.join(dir, "resume-a", "checkpoint-8") }));
    expect((await bytes("resume-b")).equals(await bytes("resume-a"))).toBe(true);

    // Other settings or no checkpoint: a clear error.
    const other = await train(options("resume-b", { ...run, lr: 5e-3, resumeFrom: "latest" })).catch((e: unknown) => e);
    expect(other).toBeInstanceOf(CheckpointError);
    expect((other as Error).message).toMatch(/lr was 0\.01, now 0\.005/);
    await expect(train(options("resume-none", { ...run, resumeFrom: "latest" }))).rejects.toThrow(/no checkpoint-<step> folder/);
  });

  it("keeps the newest saveTotalLimit checkpoints and writes best/ when eval loss improves", async () => {
    const seen: { step: number; epoch: number; evalLoss: number | null; complete: boolean }[] = [];
    const onCheckpoint = async (c: { dir: string; step: number; epoch: number; evalLoss: number | null }) => {
      // Called while the folder is complete and not yet rotated away.
      const complete = (await readdir(c.dir)).includes("trainer_state.json");
      seen.push({ step: c.step, epoch: c.epoch, evalLoss: c.evalLoss, complete });
    };
    const summary = await train(options("rotate", { epochs: 3, evalPath, saveSteps: 2, saveTotalLimit: 2, lr: 5e-2, targetModules: ["q", "v", "lm_head"], onCheckpoint }));
    expect(summary.checkpointsWritten).toHaveLength(3 * 4);
    expect(seen.map((c) => c.step)).toEqual(summary.checkpointsWritten.map((c) => Number(path.basename(c).slice("checkpoint-".length))));
    expect(seen.every((c) => c.complete)).toBe(true);
    expect(seen.filter((c) => c.evalLoss !== null).map((c) => [c.step, c.epoch, c.evalLoss])).toEqual(summary.evalLossPerEpoch.map((l, i) => [8 * (i + 1), i + 1, l]));
    expect(seen[0]?.epoch).toBeCloseTo(2 / 8, 10);
    expect(checkpointsOf("rotate")).toEqual(["checkpoint-22", "checkpoint-24"]);
    expect(summary.checkpoints.map((c) => path.basename(c))).toEqual(["checkpoint-22", "checkpoint-24"]);
    const best = Math.min(...summary.evalLossPerEpoch);
    expect(summary.bestEvalLoss).toBe(best);
    const bestState = JSON.parse(await readFile(path.join(dir, "rotate", "best", "best_state.json"), "utf8")) as { evalLoss: number; step: number };
    expect(bestState.evalLoss).toBe(best);
    expect(bestState.step).toBe(8 * (summary.evalLossPerEpoch.indexOf(best) + 1));
    const scored = await evalLoss(modelDir, evalPath, { numThreads: 1, adapterDir: path.join(dir, "rotate", "best") });
    expect(scored.loss).toBeCloseTo(best, 4);
  });

  it("continues from an existing adapter (first-step loss = its eval loss); loadBestAtEnd leaves the best adapter in outDir", async () => {
    const first = await train(options("init-a", { evalPath, loraDropout: 0, targetModules: ["q", "v", "lm_head"], epochs: 2 }));
    const progress: TrainProgress[] = [];
    // All 8 eval examples in one step, dropout off: step 1's training loss is the mean loss over them.
    // No warmup: a single warmup step would have lr 0, which train refuses.
    const second = await train({ modelDir, dataPath: evalPath, outDir: path.join(dir, "init-b"), numThreads: 1, lr: 1e-2, epochs: 1, batchSize: 8, warmupRatio: 0, initAdapter: path.join(dir, "init-a") }, (p) => progress.push(p));
    expect(progress[0]!.loss).toBeCloseTo(first.evalLossPerEpoch.at(-1)!, 4);
    expect(second.steps).toBe(1);
    const adapter = await readPeftAdapter(path.join(dir, "init-b"));
    expect(adapter.r).toBe(8);
    expect(adapter.loraDropout).toBe(0);
    expect(adapter.targetModules).toEqual(["lm_head", "q_proj", "v_proj"]);
    const mismatch = await train(options("init-c", { initAdapter: path.join(dir, "init-a"), loraR: 4 })).catch((e: unknown) => e);
    expect(mismatch).toBeInstanceOf(CheckpointError);
    expect((mismatch as Error).message).toMatch(/loraR 4 but the adapter's r is 8/);

    // From that good adapter, training on wrong answers only makes eval loss worse: the best is
    // epoch 1's, not the last, and loadBestAtEnd leaves it in outDir.
    const wrong = path.join(dir, "wrong.jsonl");
    await writeFile(wrong, CITIES.map(([city]) => JSON.stringify({ prompt: `Which country is ${city} in? Reply in JSON.`, completion: "no idea" })).join("\n") + "\n");
    const worse = await train({ ...options("best-end", { evalPath, dataPath: wrong, epochs: 3, initAdapter: path.join(dir, "init-a") }), loraDropout: undefined, loraR: undefined, loraAlpha: undefined, loadBestAtEnd: true });
    expect(worse.evalLossPerEpoch[2]!).toBeGreaterThan(worse.evalLossPerEpoch[0]!);
    expect(worse.bestStep).toBe(worse.evalLossPerEpoch.indexOf(worse.bestEvalLoss!) * 5 + 5);
    expect(worse.bestStep).toBeLessThan(worse.steps);
    expect((await bytes("best-end")).equals(await bytes(path.join("best-end", "best")))).toBe(true);
    const last = await readFile(path.join(dir, "best-end", checkpointsOf("best-end").at(-1)!, "adapter_model.safetensors"));
    expect(last.equals(await bytes("best-end"))).toBe(false);
  });

  it("trains with QLoRA: eval loss drops and the quantised linears take under 0.6 bytes per parameter", async () => {
    const base = await evalLoss(modelDir, evalPath, { numThreads: 1 });
    const q = await train(options("qlora", { qlora: true, evalPath, epochs: 2, targetModules: ["q", "k", "v", "o", "gate", "up", "down", "lm_head"] }));
    expect(q.qlora).toBe(true);
    expect(q.linearBytesPerParameter).toBeLessThan(0.6);
    expect(q.baseBytesPerParameter).toBeLessThan(4);
    expect(q.peakMemoryBytes).toBeGreaterThan(0);
    expect(q.evalLossPerEpoch.at(-1)!).toBeLessThan(base.loss * 0.8);
  });

  it("trains on a bf16 base (projections and head in bf16, and bf16 tiles under QLoRA): eval loss drops as on f32, 2 bytes per projection parameter", async () => {
    const base = await evalLoss(modelDir, evalPath, { numThreads: 1 });
    const targetModules = ["q", "k", "v", "o", "gate", "up", "down", "lm_head"];
    const f32 = await train(options("base-f32", { evalPath, epochs: 2, targetModules }));
    const b16 = await train(options("base-bf16", { baseDtype: "bf16", evalPath, epochs: 2, targetModules }));
    expect([f32.baseDtype, b16.baseDtype]).toEqual(["f32", "bf16"]);
    expect(f32.linearBytesPerParameter).toBe(4);
    expect(b16.linearBytesPerParameter).toBe(2);
    expect(b16.evalLossPerEpoch.at(-1)!).toBeLessThan(base.loss * 0.8);
    expect(Math.abs(b16.evalLossPerEpoch.at(-1)! - f32.evalLossPerEpoch.at(-1)!) / f32.evalLossPerEpoch.at(-1)!).toBeLessThan(5e-2);
    const q16 = await train(options("qlora-bf16", { qlora: true, baseDtype: "bf16", evalPath, epochs: 2, targetModules }));
    expect(q16.linearBytesPerParameter).toBeLessThan(0.6);
    expect(q16.evalLossPerEpoch.at(-1)!).toBeLessThan(base.loss * 0.8);
  });
});
