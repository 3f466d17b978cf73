import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listTensors, loadTokenizer, readModelConfig, readTensorF32, writeTinyModel } from "./index.js";

describe("writeTinyModel", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-tiny-model-"));
    await writeTinyModel(path.join(root, "a"), { seed: 7 });
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("writes the same bytes for the same seed, and other weights for another seed", async () => {
    await writeTinyModel(path.join(root, "b"), { seed: 7 });
    await writeTinyModel(path.join(root, "c"), { seed: 8 });
    const files = (await readdir(path.join(root, "a"))).sort();
    expect(files).toEqual(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
    for (const file of files) {
      const a = await readFile(path.join(root, "a", file));
      expect(a.equals(await readFile(path.join(root, "b", file))), file).toBe(true);
      expect(a.equals(await readFile(path.join(root, "c", file))), file).toBe(file !== "model.safetensors");
    }
  });

  it("writes a Llama config and HF tensor names, with lm_head when untied", async () => {
    const dir = path.join(root, "a");
    const config = await readModelConfig(dir);
    expect(config).toMatchObject({
      architecture: "LlamaForCausalLM", hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
      intermediateSize: 128, vocabSize: 512, tieWordEmbeddings: false, torchDtype: "float32", attentionBias: false,
    });
    const names = (await listTensors(dir)).map((t) => t.name);
    const layer = (n: number): string[] => [
      `model.layers.${n}.input_layernorm.weight`,
      `model.layers.${n}.mlp.down_proj.weight`,
      `model.layers.${n}.mlp.gate_proj.weight`,
      `model.layers.${n}.mlp.up_proj.weight`,
      `model.layers.${n}.post_attention_layernorm.weight`,
      `model.layers.${n}.self_attn.k_proj.weight`,
      `model.layers.${n}.self_attn.o_proj.weight`,
      `model.layers.${n}.self_attn.q_proj.weight`,
      `model.layers.${n}.self_attn.v_proj.weight`,
    ];
    expect(names).toEqual(["lm_head.weight", "model.embed_tokens.weight", ...layer(0), ...layer(1), "model.norm.weight"]);
  });

  it("gives qwen2 q/k/v biases, and no lm_head when tied", async () => {
    const dir = path.join(root, "qwen2");
    await writeTinyModel(dir, { arch: "qwen2", layers: 1, tied: true, dtype: "BF16" });
    const config = await readModelConfig(dir);
    expect(config).toMatchObject({ architecture: "Qwen2ForCausalLM", tieWordEmbeddings: true, torchDtype: "bfloat16", ropeTheta: 1e6 });
    const tensors = await listTensors(dir);
    expect(tensors.map((t) => t.name).filter((n) => n.endsWith(".bias"))).toEqual([
      "model.layers.0.self_attn.k_proj.bias",
      "model.layers.0.self_attn.q_proj.bias",
      "model.layers.0.self_attn.v_proj.bias",
    ]);
    expect(tensors.some((t) => t.name === "lm_head.weight")).toBe(false);
    expect(new Set(tensors.map((t) => t.dtype))).toEqual(new Set(["BF16"]));
  });

  it("draws weights of mean 0 and std 0.02, and sets norm weights to 1", async () => {
    for (const t of await listTensors(path.join(root, "a"))) {
      const values = await readTensorF32(t);
      if (t.name.endsWith("norm.weight")) {
        expect(values.every((v) => v === 1), t.name).toBe(true);
        continue;
      }
      const mean = values.reduce((s, v) => s + v, 0) / values.length;
      const std = Math.sqrt(values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length);
      expect(Math.abs(mean), t.name).toBeLessThan(0.001);
      expect(std, t.name).toBeGreaterThan(0.019);
      expect(std, t.name).toBeLessThan(0.021);
    }
  });

  it("writes the tiny tokenizer with the config's special token ids", async () => {
    const dir = path.join(root, "a");
    const tokenizer = await loadTokenizer(dir);
    const config = JSON.parse(await readFile(path.join(dir, "config.json"), "utf8")) as { eos_token_id: number; bos_token_id: number };
    const generation = JSON.parse(await readFile(path.join(dir, "generation_config.json"), "utf8")) as { eos_token_id: number; pad_token_id: number };
    expect(tokenizer.encode("<|im_end|>")).toEqual([config.eos_token_id]);
    expect(tokenizer.encode("<|endoftext|>")).toEqual([config.bos_token_id]);
    expect(generation.eos_token_id).toBe(511);
    expect(generation.pad_token_id).toBe(509);
    expect(tokenizer.renderChat([{ role: "user", content: "hi" }])).toBe("<|im_start|>user\nhi<|im_end|>\n");
  });

  it("refuses shapes that do not divide", async () => {
    await expect(writeTinyModel(path.join(root, "bad"), { hidden: 60, heads: 8 })).rejects.toThrow("heads (8) must divide hidden (60)");
    await expect(writeTinyModel(path.join(root, "bad"), { heads: 4, kvHeads: 3 })).rejects.toThrow("kvHeads (3) must divide heads (4)");
    await expect(writeTinyModel(path.join(root, "bad"), { layers: 0 })).rejects.toThrow("layers must be a positive integer");
  });
});
