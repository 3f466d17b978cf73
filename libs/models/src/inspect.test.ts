import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ModelFormatError,
  chatmlTemplate,
  inspectModelFolder,
  listTensors,
  llama3Template,
  readModelConfig,
  readTensorF32,
  writeSafetensors,
  writeTinyModel,
  type ModelConfig,
} from "./index.js";

/** Parameters of a Llama-family model, from its config alone. */
function expectedParameters(c: ModelConfig): number {
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const biases = c.architecture === "Qwen2ForCausalLM" ? q + 2 * kv : 0;
  const layer = 2 * h + h * q + 2 * h * kv + q * h + biases + 3 * h * c.intermediateSize;
  return c.vocabSize * h + c.numLayers * layer + h + (c.tieWordEmbeddings ? 0 : c.vocabSize * h);
}

/** Rewrites a tiny model's weights through `edit` (drop a tensor by returning null). */
async function editWeights(dir: string, edit: (name: string, shape: number[], data: Float32Array) => { shape: number[]; data: Float32Array } | null): Promise<void> {
  const out = [];
  for (const t of await listTensors(dir)) {
    const edited = edit(t.name, t.shape, await readTensorF32(t));
    if (edited !== null) out.push({ name: t.name, dtype: t.dtype, ...edited });
  }
  await writeSafetensors(path.join(dir, "model.safetensors"), out, { format: "pt" });
}

async function editJson(file: string, edit: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
  edit(json);
  await writeFile(file, JSON.stringify(json, null, 2));
}

const sha256 = (text: string): string => `sha256:${createHash("sha256").update(text, "utf8").digest("hex")}`;

describe("inspectModelFolder", () => {
  let root: string;
  let n = 0;
  const fresh = (): string => path.join(root, String(n++));
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-inspect-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("inspects a tiny llama: parameter count, dtype, files and the ChatML template's fingerprint", async () => {
    const dir = fresh();
    await writeTinyModel(dir, { layers: 3, hidden: 48, heads: 6, kvHeads: 2, intermediate: 96 });
    const inspection = await inspectModelFolder(dir);
    expect(inspection.config.architecture).toBe("LlamaForCausalLM");
    expect(inspection.parameterCount).toBe(expectedParameters(inspection.config));
    expect(inspection.parameterCount).toBe(512 * 48 * 2 + 3 * (2 * 48 + 48 * 48 * 2 + 2 * 48 * 16 + 3 * 48 * 96) + 48);
    expect(inspection.dtype).toBe("F32");
    expect(inspection.files.map((f) => f.path)).toEqual(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
    const weights = await readFile(path.join(dir, "model.safetensors"));
    expect(inspection.files.find((f) => f.path === "model.safetensors")?.size).toBe(weights.length);
    expect(inspection.sizeBytes).toBe(inspection.files.reduce((s, f) => s + f.size, 0));
    expect(inspection.chatTemplate).toBe(chatmlTemplate);
    expect(inspection.chatTemplateFingerprint).toBe(sha256(chatmlTemplate));
  });

  it("inspects a tiny qwen2 with tied embeddings and biases in bf16", async () => {
    const dir = fresh();
    await writeTinyModel(dir, { arch: "qwen2", tied: true, dtype: "BF16", vocab: 300 });
    const inspection = await inspectModelFolder(dir);
    expect(inspection.config).toMatchObject({ architecture: "Qwen2ForCausalLM", tieWordEmbeddings: true, vocabSize: 300 });
    expect(inspection.parameterCount).toBe(expectedParameters(inspection.config));
    expect(inspection.dtype).toBe("BF16");
  });

  it("takes the chat template from the list form or chat_template.jinja, and fingerprints none as empty", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    const configFile = path.join(dir, "tokenizer_config.json");
    await editJson(configFile, (json) => {
      json["chat_template"] = [{ name: "tool_use", template: "{{ tools }}" }, { name: "default", template: llama3Template }];
    });
    expect((await inspectModelFolder(dir)).chatTemplateFingerprint).toBe(sha256(llama3Template));

    await editJson(configFile, (json) => {
      delete json["chat_template"];
    });
    const none = await inspectModelFolder(dir);
    expect(none.chatTemplate).toBeNull();
    expect(none.chatTemplateFingerprint).toBe("");

    await writeFile(path.join(dir, "chat_template.jinja"), "{{ messages }}");
    expect((await inspectModelFolder(dir)).chatTemplate).toBe("{{ messages }}");
  });

  it("inspects a sharded folder like the single file", async () => {
    const dir = fresh();
    await writeTinyModel(dir, { layers: 2 });
    const single = await inspectModelFolder(dir);
    const tensors = await listTensors(dir);
    const shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    const weightMap: Record<string, string> = {};
    for (const [i, shard] of shards.entries()) {
      const part = tensors.filter((_, j) => j % 2 === i);
      const withData = await Promise.all(part.map(async (t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, data: await readTensorF32(t) })));
      await writeSafetensors(path.join(dir, shard), withData, { format: "pt" });
      for (const t of part) weightMap[t.name] = shard;
    }
    await rm(path.join(dir, "model.safetensors"));
    await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const sharded = await inspectModelFolder(dir);
    expect(sharded.parameterCount).toBe(single.parameterCount);
    expect(sharded.files.map((f) => f.path)).toContain("model-00002-of-00002.safetensors");
  });

  it("names the first missing tensor and the file", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    await editWeights(dir, (name, shape, data) => (name === "model.layers.1.mlp.down_proj.weight" ? null : { shape, data }));
    const err = await inspectModelFolder(dir).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as ModelFormatError).file).toBe(path.join(dir, "model.safetensors"));
    expect((err as Error).message).toContain("tensor `model.layers.1.mlp.down_proj.weight` is missing");
  });

  it("names a tensor whose shape the config contradicts, and an untied model without lm_head", async () => {
    const dir = fresh();
    await writeTinyModel(dir, { tied: true });
    await editJson(path.join(dir, "config.json"), (json) => {
      json["tie_word_embeddings"] = false;
    });
    await expect(inspectModelFolder(dir)).rejects.toThrow("tensor `lm_head.weight` is missing (config.json has tie_word_embeddings false)");
    await editJson(path.join(dir, "config.json"), (json) => {
      json["tie_word_embeddings"] = true;
      json["intermediate_size"] = 100;
    });
    await expect(inspectModelFolder(dir)).rejects.toThrow(
      `${path.join(dir, "model.safetensors")}: tensor \`model.layers.0.mlp.gate_proj.weight\` has shape [128, 64], config.json implies [100, 64]`,
    );
    expect((await readModelConfig(dir)).intermediateSize).toBe(100);
  });

  it("refuses an unsupported architecture and corrupted weights with the file named", async () => {
    const dir = fresh();
    await writeTinyModel(dir);
    const weights = await readFile(path.join(dir, "model.safetensors"));
    await writeFile(path.join(dir, "model.safetensors"), weights.subarray(0, weights.length - 10));
    await expect(inspectModelFolder(dir)).rejects.toThrow(/model\.safetensors: tensor `model\.norm\.weight`: data ends at byte \d+ but the file has \d+ bytes \(truncated\?\)/);
    await editJson(path.join(dir, "config.json"), (json) => {
      json["architectures"] = ["GemmaForCausalLM"];
    });
    await expect(inspectModelFolder(dir)).rejects.toThrow(`${path.join(dir, "config.json")}: \`architectures\`: GemmaForCausalLM is not supported`);
  });
});
