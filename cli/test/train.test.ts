import { mkdtempSync, writeFileSync } from "node:fs";
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

describe("lathe train and eval-loss", () => {
  it("trains an adapter with HF-style flags, shows progress on stderr and prints a JSON summary", async () => {
    const out = join(dir, "adapter");
    const r = await runCli(["train", "--model", model, "--data", data, "--eval", evalData, "--out", out, "--lora-r", "4", "--lora-alpha", "8",
      "--target-modules", "q_proj,v_proj,lm_head", "--epochs", "2", "--batch-size", "2", "--grad-accum", "2", "--lr", "1e-2",
      "--scheduler", "linear", "--warmup-ratio", "0", "--max-seq-length", "256", "--seed", "1", "--threads", "1", "--json"]);
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

  it("rejects a bad flag value and a malformed data line with what and where", async () => {
    const flag = await runCli(["train", "--model", model, "--data", data, "--out", join(dir, "x"), "--lora-r", "0"]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toContain("--lora-r 0");
    const bad = join(dir, "bad.jsonl");
    writeFileSync(bad, `{"prompt": "a", "completion": "b"}\n{"prompt": 3, "completion": "b"}\n`);
    const line = await runCli(["eval-loss", "--model", model, "--data", bad, "--json"]);
    expect(line.code).toBe(1);
    expect(line.stderr).toContain(`${bad}:2: \`prompt\` must be a string`);
  });
});
