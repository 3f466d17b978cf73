import { cpSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readPeftAdapter, writeTinyModel } from "@lathe/models";
import { beforeAll, describe, expect, it } from "vitest";
import { runCli } from "./cli-process.js";

const dir = mkdtempSync(join(tmpdir(), "lathe-cli-train-"));
const model = join(dir, "model");
const data = join(dir, "train.jsonl");
const evalData = join(dir, "eval.jsonl");

beforeAll(async () => {
  await writeTinyModel(model, { hidden: 64, layers: 2, seed: 3 });
  const cities = [["Paris", "France"], ["Berlin", "Germany"], ["Madrid", "Spain"], ["Rome", "Italy"], ["Lisbon", "Portugal"], ["Oslo", "Norway"], ["Dublin", "Ireland"], ["Tokyo", "Japan"], ["Lima", "Peru"], ["Vienna", "Austria"]];
  const line = ([city, country]: string[]) => JSON.stringify({ prompt: `Which country is ${city} in? Reply in JSON.`, completion: JSON.stringify({ country }) });
  writeFileSync(data, cities.slice(0, 8).map(line).join("\n") + "\n");
  writeFileSync(evalData, cities.slice(8).map(line).join("\n") + "\n");
});

// These runs were written when `lathe train` had defaults of its own; since it takes the
// recipe's (rsLoRA, packing, gradient accumulation 4, gradient checkpointing) they spell those
// out, so they train what they always trained.
const oldDefaults = ["--no-rslora", "--no-packing"];

describe("lathe train and eval-loss", () => {
  it("trains an adapter with HF-style flags, shows progress on stderr and prints a JSON summary", async () => {
    const out = join(dir, "adapter");
    const r = await runCli(["train", "--model", model, "--data", data, "--eval", evalData, "--out", out, "--lora-r", "4", "--lora-alpha", "8",
      "--target-modules", "q_proj,v_proj,lm_head", "--epochs", "2", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2",
      "--scheduler", "linear", "--warmup-ratio", "0", "--max-seq-length", "256", "--seed", "1", "--threads", "1", "--json", ...oldDefaults]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { trainLossPerEpoch: number[]; evalLossPerEpoch: number[]; tokens: number; steps: number };
    expect(summary.steps).toBe(4);
    expect(summary.trainLossPerEpoch).toHaveLength(2);
    expect(summary.evalLossPerEpoch).toHaveLength(2);
    expect(r.stderr).toMatch(/step 4\/4 epoch 2 loss \d+\.\d+ .* tok\/s ETA 0:00/);
    const adapter = await readPeftAdapter(out);
    expect(adapter.r).toBe(4);
    expect(adapter.targetModules).toEqual(["lm_head", "q_proj", "v_proj"]);

    const base = await runCli(["eval-loss", "--model", model, "--data", evalData, "--threads", "1", "--json"]);
    const tuned = await runCli(["eval-loss", "--model", model, "--adapter", out, "--data", evalData, "--threads", "1", "--json"]);
    expect(base.code, base.stderr).toBe(0);
    expect(tuned.code, tuned.stderr).toBe(0);
    const b = JSON.parse(base.stdout) as { loss: number; perplexity: number; tokens: number };
    const t = JSON.parse(tuned.stdout) as { loss: number; perplexity: number; tokens: number };
    expect(t.loss).toBeLessThan(b.loss);
    expect(t.loss).toBeCloseTo(summary.evalLossPerEpoch.at(-1)!, 4);
    expect(b.perplexity).toBeCloseTo(Math.exp(b.loss), 6);
  });

  it("checkpoints with --save-steps, and `--resume latest` continues to a byte-identical adapter (with --qlora)", async () => {
    const flags = ["--model", model, "--data", data, "--eval", evalData, "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj,lm_head",
      "--epochs", "2", "--batch-size", "2", "--lr", "1e-2", "--max-seq-length", "256", "--seed", "5", "--threads", "1", "--qlora", "--save-steps", "3", "--json", ...oldDefaults, "--grad-accum", "1"];
    const whole = join(dir, "whole");
    const a = await runCli(["train", ...flags, "--out", whole, "--save-total-limit", "0"]);
    expect(a.code, a.stderr).toBe(0);
    const summary = JSON.parse(a.stdout) as { steps: number; checkpointsWritten: string[]; bestEvalLoss: number; evalLossPerEpoch: number[]; linearBytesPerParameter: number; baseBytesPerParameter: number; peakMemoryBytes: number; qlora: boolean };
    expect(summary.steps).toBe(8);
    expect(readdirSync(whole).filter((n) => n.startsWith("checkpoint-")).sort()).toEqual(["checkpoint-3", "checkpoint-4", "checkpoint-6", "checkpoint-8"]);
    expect(summary.checkpointsWritten).toHaveLength(4);
    expect(summary.bestEvalLoss).toBe(Math.min(...summary.evalLossPerEpoch));
    expect(summary.qlora).toBe(true);
    expect(summary.linearBytesPerParameter).toBeLessThan(0.6);
    expect(summary.baseBytesPerParameter).toBeGreaterThan(0);
    expect(summary.peakMemoryBytes).toBeGreaterThan(10 * 2 ** 20);

    // An interrupted run's output folder: only its checkpoint after step 3.
    const cut = join(dir, "cut");
    mkdirSync(cut);
    cpSync(join(whole, "checkpoint-3"), join(cut, "checkpoint-3"), { recursive: true });
    const b = await runCli(["train", ...flags, "--out", cut, "--resume", "latest"]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stderr).not.toMatch(/step 3\//);
    expect(b.stderr).toMatch(/step 4\/8/);
    expect((JSON.parse(b.stdout) as { resumedFromStep: number }).resumedFromStep).toBe(3);
    expect(readFileSync(join(cut, "adapter_model.safetensors")).equals(readFileSync(join(whole, "adapter_model.safetensors")))).toBe(true);
    expect(readdirSync(cut).filter((n) => n.startsWith("checkpoint-")).sort()).toEqual(["checkpoint-6", "checkpoint-8"]);

    // Without --qlora the checkpoint does not fit, and the error says why.
    const bad = await runCli(["train", ...flags.filter((f) => f !== "--qlora"), "--out", cut, "--resume", join(cut, "checkpoint-6")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("qlora was true, now false");
  });

  it("--grad-checkpointing gives the same adapter bytes with less peak activation memory", async () => {
    const flags = ["train", "--model", model, "--data", data, "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--epochs", "1",
      "--batch-size", "2", "--lr", "1e-2", "--max-seq-length", "256", "--seed", "2", "--threads", "1", "--save-steps", "0", "--json", ...oldDefaults, "--grad-accum", "1"];
    const plainOut = join(dir, "ckpt-off");
    const ckptOut = join(dir, "ckpt-on");
    const plain = await runCli([...flags, "--out", plainOut, "--no-grad-checkpointing"]);
    const ckpt = await runCli([...flags, "--out", ckptOut, "--grad-checkpointing"]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(ckpt.code, ckpt.stderr).toBe(0);
    type S = { gradientCheckpointing: boolean; peakActivationBytes: number; trainLossPerEpoch: number[] };
    const a = JSON.parse(plain.stdout) as S;
    const b = JSON.parse(ckpt.stdout) as S;
    expect(a.gradientCheckpointing).toBe(false);
    expect(b.gradientCheckpointing).toBe(true);
    expect(a.peakActivationBytes).toBeGreaterThan(0);
    expect(b.peakActivationBytes).toBeLessThan(a.peakActivationBytes);
    expect(b.trainLossPerEpoch).toEqual(a.trainLossPerEpoch);
    expect(readFileSync(join(ckptOut, "adapter_model.safetensors")).equals(readFileSync(join(plainOut, "adapter_model.safetensors")))).toBe(true);
  });

  it("rejects a bad flag value and a malformed data line with what and where", async () => {
    const flag = await runCli(["train", "--model", model, "--data", data, "--out", join(dir, "x"), "--lora-r", "0"]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toContain("--lora-r 0");
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, `{"prompt": "a", "completion": "b"}\n{"prompt": 3, "completion": "b"}\n`);
    const line = await runCli(["eval-loss", "--model", model, "--data", bad, "--json"]);
    expect(line.code).toBe(1);
    expect(line.stderr).toContain(`${bad}:2: \`prompt\` must be a string`);
    // a device the engine cannot use here: the error names the ones it can
    const device = await runCli(["train", "--model", model, "--data", data, "--out", join(dir, "y"), "--device", "tpu", "--threads", "1"]);
    expect(device.code).toBe(1);
    expect(device.stderr).toMatch(/config\.backend: unknown backend 'tpu'; available here: cpu/);
  });
});
