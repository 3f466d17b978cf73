// The training loop end to end on a tiny random model: it learns a small format task, writes an
// adapter PEFT can load, is deterministic, accumulates gradients exactly, and stops when told.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { readPeftAdapter, readTensorF32, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, evalLoss, train, TrainingDataError, type TrainOptions, type TrainProgress } from "./index.js";

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

const options = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
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
