// Teacher-forced scores: the engine's count of labels its argmax predicts (mean token accuracy)
// against the argmax of the logits it returns, and ReferenceScorer against evalLoss on the same
// example, with few-shot turns labelled as prompt.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { evalLoss, Model, ReferenceScorer } from "../index.js";

let dir = "";
let modelDir = "";
let adapterDir = "";
const VOCAB = 512;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "lathe-reference-score-"));
  modelDir = path.join(dir, "model");
  adapterDir = path.join(dir, "adapter");
  await writeTinyModel(modelDir, { hidden: 32, layers: 2, vocab: VOCAB, seed: 5 });
  await writeTinyAdapter(adapterDir, modelDir, { r: 4, alpha: 8, seed: 9, targetModules: ["q_proj", "v_proj", "lm_head"] });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The first index of the row's maximum, as torch.argmax. */
function argmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

describe("correctCount", () => {
  it("counts the labelled positions whose first maximal logit is the label", async () => {
    const model = await Model.load(modelDir, { numThreads: 1 });
    try {
      const seq = 24;
      const tokens = Int32Array.from({ length: 2 * seq }, (_, i) => (i * 53 + 7) % VOCAB);
      const positions = Int32Array.from({ length: 2 * seq }, (_, i) => i % seq);
      const probe = await model.forwardBackward({ tokens, labels: new Int32Array(2 * seq).fill(-100), positions, segments: null, batch: 2, seq }, { backward: false, training: false, logits: true });
      const logits = probe.logits!;
      const predicted = Array.from({ length: 2 * seq }, (_, t) => argmax(logits.subarray(t * VOCAB, (t + 1) * VOCAB)));
      // Every third position unlabelled; of the rest, every other one labelled with the argmax, the others with another token.
      const labels = new Int32Array(2 * seq);
      let expected = 0;
      for (let t = 0; t < 2 * seq; t++) {
        if (t % 3 === 0) labels[t] = -100;
        else if (t % 2 === 0) {
          labels[t] = predicted[t]!;
          expected++;
        } else labels[t] = (predicted[t]! + 1 + t) % VOCAB;
      }
      const r = await model.forwardBackward({ tokens, labels, positions, segments: null, batch: 2, seq }, { backward: false, training: false });
      expect(r.labelCount).toBe(2 * seq - Math.ceil((2 * seq) / 3));
      expect(expected).toBeGreaterThan(10);
      expect(r.correctCount).toBe(expected);
      // The count does not depend on the threads.
      const four = await Model.load(modelDir, { numThreads: 4 });
      try {
        expect((await four.forwardBackward({ tokens, labels, positions, segments: null, batch: 2, seq }, { backward: false, training: false })).correctCount).toBe(expected);
      } finally {
        four.free();
      }
    } finally {
      model.free();
    }
  });
});

describe("ReferenceScorer", () => {
  const question = { role: "user" as const, content: "What is the capital of France? Answer in one word." };
  const answer = { role: "assistant" as const, content: "Paris, the city of light and of the Seine." };
  const shots = [
    { role: "user" as const, content: "What is the capital of Italy?" },
    { role: "assistant" as const, content: "Rome, of course, with a long and storied history." },
    { role: "user" as const, content: "And of Spain?" },
    { role: "assistant" as const, content: "Madrid." },
  ];

  it.each([
    ["the base model", undefined],
    ["base + adapter", "adapter"],
  ])("on %s equals evalLoss on the same example, and labels only the last answer of a few-shot chat", async (_, adapter) => {
    const file = path.join(dir, "one.jsonl");
    await writeFile(file, JSON.stringify({ messages: [question, answer] }) + "\n");
    const adapterPath = adapter === undefined ? undefined : adapterDir;
    const whole = await evalLoss(modelDir, file, { numThreads: 1, adapterDir: adapterPath });
    const scorer = await ReferenceScorer.open(modelDir, { numThreads: 1, adapterDir: adapterPath });
    try {
      const [alone, withShots] = await Promise.all([scorer.score([question, answer]), scorer.score([...shots, question, answer])]);
      expect(alone.tokens).toBe(whole.tokens);
      expect(alone.lossSum / alone.tokens).toBeCloseTo(whole.loss, 5);
      expect(alone.correct / alone.tokens).toBe(whole.meanTokenAccuracy);
      expect(alone.truncated).toBe(false);
      // The shots' answers are prompt: the same answer's tokens are scored, no more.
      expect(withShots.tokens).toBe(alone.tokens);
      expect(withShots.lossSum).not.toBe(alone.lossSum);
      // Cut to fewer tokens than the prompt: nothing of the answer is left to score.
      const short = await ReferenceScorer.open(modelDir, { numThreads: 1, adapterDir: adapterPath, maxSeqLength: 8 });
      try {
        expect(await short.score([question, answer])).toEqual({ lossSum: 0, tokens: 0, correct: 0, truncated: true });
      } finally {
        await short.free();
      }
    } finally {
      await scorer.free();
    }
  });

  it("refuses a chat without a final answer", async () => {
    const scorer = await ReferenceScorer.open(modelDir, { numThreads: 1 });
    try {
      expect(() => scorer.score([question])).toThrow(/assistant/);
    } finally {
      await scorer.free();
    }
  });
});
