// hiddenStates against the PyTorch reference (test/reference.py --hidden-states: HF's
// output_hidden_states in f64, each sequence alone): every layer (0 the embeddings, the middle
// ones, the last after the final norm) of two sequences of different lengths, on a Llama and a
// Qwen2 tiny model, with and without a LoRA adapter. Tolerance: max |engine − reference| ≤
// 1e-5 · max |reference| per sequence and layer (observed ≤ 3e-7: f32 rounding against f64).
// Tighter than test/README.md's 1e-4, because a tiny model's residual updates are small against
// its embeddings: an error in one layer's update shows up as ~1e-3 of the states' scale.
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { writeTinyAdapter, writeTinyModel, type TinyModelOptions } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EngineError, Model, hiddenStates } from "./index.js";
import { ENGINE_DIR, expectCloseArrays, readF32Safetensors } from "./test-support/golden.js";

const run = promisify(execFile);
const PYTHON = "/usr/bin/python3";
const LAYERS = 3;
const VOCAB = 512;
const RTOL = 1e-5;
/** Two sequences of different lengths: they share the engine call and must not see each other. */
const SEQUENCES = [
  Array.from({ length: 7 }, (_, i) => (i * 37 + 11) % VOCAB),
  Array.from({ length: 12 }, (_, i) => (i * 101 + 5) % VOCAB),
];

const MODELS: { name: string; model: TinyModelOptions; adapter: { r: number; alpha: number; useRslora: boolean } }[] = [
  { name: "llama (GQA, untied)", model: { arch: "llama", layers: LAYERS, hidden: 32, heads: 4, kvHeads: 2, intermediate: 64, vocab: VOCAB, seed: 31 }, adapter: { r: 4, alpha: 8, useRslora: false } },
  { name: "qwen2 (q/k/v biases, tied)", model: { arch: "qwen2", layers: LAYERS, hidden: 32, heads: 4, kvHeads: 1, intermediate: 64, vocab: VOCAB, seed: 32, tied: true }, adapter: { r: 8, alpha: 16, useRslora: true } },
];

let root = "";
beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), "lathe-hidden-states-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** The reference's `seq{i}/layer{k}` tensors for SEQUENCES at every layer. */
async function reference(modelDir: string, adapterDir: string | null): Promise<Map<string, Float32Array>> {
  const request = path.join(modelDir, `request-${adapterDir === null ? "base" : "adapter"}.json`);
  const out = `${request}.safetensors`;
  await writeFile(request, JSON.stringify({ sequences: SEQUENCES, layers: Array.from({ length: LAYERS + 1 }, (_, k) => k) }));
  const args = [path.join(ENGINE_DIR, "test", "reference.py"), "--hidden-states", request, "--model", modelDir, "--out", out];
  if (adapterDir !== null) args.push("--adapter", adapterDir);
  await run(PYTHON, args, { cwd: ENGINE_DIR }).catch((err: Error & { stderr?: string }) => {
    throw new Error(`${PYTHON} test/reference.py --hidden-states failed (python3-torch installed? \`apt-get install -y python3-torch\`): ${err.stderr ?? err.message}`);
  });
  return readF32Safetensors(out);
}

describe.each(MODELS)("hidden states of a $name tiny model", ({ name, model, adapter }) => {
  let modelDir = "";
  let adapterDir = "";

  beforeAll(async () => {
    modelDir = path.join(root, name.split(" ")[0]!);
    adapterDir = path.join(modelDir, "adapter");
    await writeTinyModel(modelDir, model);
    // Non-zero A and B on every projection; its lora_dropout (0.05) must not apply here.
    await writeTinyAdapter(adapterDir, modelDir, { ...adapter, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], seed: 7 });
  });

  it.each([
    ["without an adapter", false],
    ["with a LoRA adapter", true],
  ])("match PyTorch at every layer for two sequences of different lengths, %s", async (_, withAdapter) => {
    const want = await reference(modelDir, withAdapter ? adapterDir : null);
    for (let layer = 0; layer <= LAYERS; layer++) {
      const got = await hiddenStates(modelDir, SEQUENCES, { layer, numThreads: 2, ...(withAdapter ? { adapterDir } : {}) });
      expect(got.map((g) => g.length)).toEqual(SEQUENCES.map((s) => s.length * 32));
      got.forEach((states, i) => expectCloseArrays(`sequence ${i} layer ${layer}`, states, want.get(`seq${i}/layer${layer}`)!, RTOL));
    }
  });

  it("changes with the adapter above the embeddings only", async () => {
    const base = await hiddenStates(modelDir, SEQUENCES, { layer: 0 });
    const adapted = await hiddenStates(modelDir, SEQUENCES, { layer: 0, adapterDir });
    expect(adapted).toEqual(base);
    const [baseLast] = await hiddenStates(modelDir, SEQUENCES, { layer: LAYERS });
    const [adaptedLast] = await hiddenStates(modelDir, SEQUENCES, { layer: LAYERS, adapterDir });
    expect(adaptedLast).not.toEqual(baseLast);
  });
});

describe("Model.hiddenStates", () => {
  let modelDir = "";
  beforeAll(async () => {
    modelDir = path.join(root, "model");
    await writeTinyModel(modelDir, MODELS[0]!.model);
  });

  it("gives each sequence the same states whether grouped in one engine call or run one per call", async () => {
    const model = await Model.load(modelDir, { numThreads: 2 });
    try {
      const together = await model.hiddenStates(SEQUENCES, 2);
      const apart = await model.hiddenStates(SEQUENCES.map((s) => Int32Array.from(s)), 2, { maxBatchTokens: 1 });
      together.forEach((states, i) => expectCloseArrays(`sequence ${i}`, states, apart[i]!, 1e-6));
      expect(await model.hiddenStates([], 2)).toEqual([]);
    } finally {
      model.free();
    }
  });

  it("runs off the event loop, the model busy until it settles", async () => {
    const model = await Model.load(modelDir, { numThreads: 1 });
    try {
      const pending = model.hiddenStates(SEQUENCES, LAYERS);
      const busy = await model.hiddenStates(SEQUENCES, 0).then(() => null, (e: unknown) => e);
      expect(busy).toBeInstanceOf(EngineError);
      expect((busy as EngineError).code).toBe("FAILED_PRECONDITION");
      expect((await pending).length).toBe(2);
    } finally {
      model.free();
    }
  });

  async function rejection(promise: Promise<unknown>): Promise<EngineError> {
    const err = await promise.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe("INVALID_ARGUMENT");
    return err as EngineError;
  }

  it("rejects a layer outside [0, num_hidden_layers], an empty sequence and a token outside the vocabulary, naming them", async () => {
    expect((await rejection(hiddenStates(modelDir, SEQUENCES, { layer: LAYERS + 1 }))).message).toContain("layer 4 is outside [0, 3]");
    expect((await rejection(hiddenStates(modelDir, SEQUENCES, { layer: -1 }))).message).toContain("layer -1 is outside [0, 3]");
    expect((await rejection(hiddenStates(modelDir, [[1, 2], []], { layer: 1 }))).message).toContain("sequence 1 is empty");
    expect((await rejection(hiddenStates(modelDir, [[1, 2], [3, VOCAB]], { layer: 1 }))).message).toContain(`sequence 1, token 1: id ${VOCAB} is outside the vocabulary [0, ${VOCAB})`);
    expect((await rejection(hiddenStates(modelDir, [[1, 2.5]], { layer: 1 }))).message).toContain("sequence 0, token 1: id 2.5");
    const model = await Model.load(modelDir, { numThreads: 1 });
    try {
      expect((await rejection(model.hiddenStates([Int32Array.of(-1)], 0))).message).toContain("sequence 0, token 0: id -1");
      expect((await rejection(model.hiddenStates(SEQUENCES, 1, { maxBatchTokens: 0 }))).message).toContain("maxBatchTokens");
    } finally {
      model.free();
    }
  });
});
