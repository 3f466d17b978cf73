import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelFormatError, readModelConfig } from "./index.js";

/** Llama-3.2-1B's config.json, trimmed to the fields that matter here. */
const llama32 = {
  architectures: ["LlamaForCausalLM"],
  hidden_size: 2048,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: "llama3" },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};

describe("readModelConfig", () => {
  let root: string;
  let n = 0;
  /** A folder holding `config` as config.json (a string is written as is). */
  async function folder(config: unknown): Promise<string> {
    const dir = path.join(root, String(n++));
    await mkdir(dir);
    await writeFile(path.join(dir, "config.json"), typeof config === "string" ? config : JSON.stringify(config, null, 2));
    return dir;
  }
  async function refusal(config: unknown): Promise<ModelFormatError> {
    const dir = await folder(config);
    const err = await readModelConfig(dir).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as ModelFormatError).file).toBe(path.join(dir, "config.json"));
    return err as ModelFormatError;
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-config-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("reads a Llama 3.2 config with GQA, llama3 rope scaling and tied embeddings", async () => {
    const config = await readModelConfig(await folder(llama32));
    expect(config).toMatchObject({
      architecture: "LlamaForCausalLM",
      modelType: "llama",
      hiddenSize: 2048,
      numLayers: 16,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 64,
      intermediateSize: 8192,
      vocabSize: 128256,
      contextLength: 131072,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      tieWordEmbeddings: true,
      torchDtype: "bfloat16",
      attentionBias: false,
    });
    expect(config.ropeScaling).toEqual(llama32.rope_scaling);
    expect(config.raw["rope_scaling"]).toEqual(llama32.rope_scaling);
  });

  it("applies Hugging Face's defaults and infers the architecture from model_type", async () => {
    const { architectures: _, num_key_value_heads: _kv, rope_theta: _theta, rms_norm_eps: _eps, tie_word_embeddings: _tie, torch_dtype: _dtype, rope_scaling: _s, ...minimal } = llama32;
    const config = await readModelConfig(await folder({ ...minimal, model_type: "mistral", head_dim: 128 }));
    expect(config).toMatchObject({
      architecture: "MistralForCausalLM",
      numKvHeads: 32,
      headDim: 128,
      ropeTheta: 10000,
      rmsNormEps: 1e-6,
      tieWordEmbeddings: false,
      torchDtype: null,
      ropeScaling: null,
    });
  });

  it("gives Qwen2 its q/k/v biases", async () => {
    const config = await readModelConfig(await folder({ ...llama32, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2" }));
    expect(config.architecture).toBe("Qwen2ForCausalLM");
    expect(config.attentionBias).toBe(true);
  });

  it("refuses an architecture Lathe does not train, saying which ones it does", async () => {
    const err = await refusal({ ...llama32, architectures: ["GPT2LMHeadModel"], model_type: "gpt2" });
    expect(err.message).toContain("GPT2LMHeadModel is not supported: Lathe trains LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM");
  });

  it("names the field that is missing or invalid", async () => {
    const { hidden_size: _, ...noHidden } = llama32;
    expect((await refusal(noHidden)).message).toContain("`hidden_size` is missing");
    expect((await refusal({ ...llama32, num_hidden_layers: "16" })).message).toContain('`num_hidden_layers` must be a positive integer, got "16"');
    expect((await refusal({ ...llama32, vocab_size: 0 })).message).toContain("`vocab_size` must be a positive integer, got 0");
    expect((await refusal({ ...llama32, num_key_value_heads: 5 })).message).toContain("`num_key_value_heads` (5) must divide `num_attention_heads` (32)");
    expect((await refusal({ ...llama32, rms_norm_eps: -1 })).message).toContain("`rms_norm_eps` must be a positive number");
    expect((await refusal({ ...llama32, rope_scaling: "llama3" })).message).toContain("`rope_scaling` must be an object or null");
  });

  it("names config.json when it is missing or not JSON", async () => {
    const empty = path.join(root, "empty");
    await mkdir(empty);
    await expect(readModelConfig(empty)).rejects.toThrow(`${path.join(empty, "config.json")}: file is missing`);
    expect((await refusal('{\n  "hidden_size": 64,\n}')).message).toMatch(/invalid JSON at line 3/);
  });
});
