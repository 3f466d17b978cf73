import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { LORA_MODULES, modulePath, projectionShape, readModelConfig, type ModelConfig } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import { asObject, readBoundedFile, readJsonFile } from "./read-json.js";
import { INDEX_FILE, SINGLE_FILE, compareNames, elementCount, listTensors, parameterCount, type Dtype, type TensorInfo } from "./safetensors.js";

/** What the registry records of a model folder. */
export interface ModelInspection {
  config: ModelConfig;
  /** Elements over all tensors of the weights (a tied head counted once). */
  parameterCount: number;
  /** The dtype that holds most of the parameters. */
  dtype: Dtype;
  /** Bytes of all files in `files`. */
  sizeBytes: number;
  /** Every file under the folder (symbolic links followed), paths relative with `/`, sorted. */
  files: { path: string; size: number }[];
  /** The chat template from tokenizer_config.json (string, or the "default" of the list form) or chat_template.jinja; null when none. */
  chatTemplate: string | null;
  /** "sha256:<hex>" of the template's UTF-8 text; "" when there is none. */
  chatTemplateFingerprint: string;
}

/**
 * Reads and checks a Hugging Face model folder: config.json, the safetensors weights, and the
 * chat template. Every tensor the config implies must exist with the implied shape (embeddings,
 * each layer's norms and projections, q/k/v biases where the architecture has them, the final
 * norm, lm_head unless tied); extra tensors are allowed.
 * @throws ModelFormatError naming the file and the first missing or mismatched tensor, or whatever
 * readModelConfig and listTensors refuse.
 */
export async function inspectModelFolder(dir: string): Promise<ModelInspection> {
  const config = await readModelConfig(dir);
  const tensors = await listTensors(dir);
  const weightsFile = (await isFile(path.join(dir, SINGLE_FILE))) ? path.join(dir, SINGLE_FILE) : path.join(dir, INDEX_FILE);
  checkTensors(weightsFile, config, tensors);

  const files = await listFiles(dir);
  const chatTemplate = await readChatTemplate(dir);
  return {
    config,
    parameterCount: parameterCount(tensors),
    dtype: dominantDtype(tensors),
    sizeBytes: files.reduce((sum, f) => sum + f.size, 0),
    files,
    chatTemplate,
    chatTemplateFingerprint: chatTemplate === null ? "" : `sha256:${createHash("sha256").update(chatTemplate, "utf8").digest("hex")}`,
  };
}

/**
 * Tensor names and shapes a Llama-family config implies, in the order a reader meets them. A
 * generator: a checker that stops at the first missing tensor has then built no more of the list
 * than the weights hold, whatever num_hidden_layers says.
 */
export function* expectedTensors(config: ModelConfig): Generator<{ name: string; shape: number[] }> {
  const h = config.hiddenSize;
  yield { name: "model.embed_tokens.weight", shape: [config.vocabSize, h] };
  // Llama's attention_bias puts a bias on o_proj too; Qwen2 has them on q, k and v only.
  const biased = config.architecture === "Qwen2ForCausalLM" ? ["q_proj", "k_proj", "v_proj"] : config.attentionBias ? ["q_proj", "k_proj", "v_proj", "o_proj"] : [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    yield { name: `model.layers.${layer}.input_layernorm.weight`, shape: [h] };
    for (const module of LORA_MODULES) {
      if (module === "lm_head") continue;
      const shape = projectionShape(config, module);
      yield { name: `${modulePath(module, layer)}.weight`, shape };
      if (biased.includes(module)) yield { name: `${modulePath(module, layer)}.bias`, shape: [shape[0]] };
    }
    yield { name: `model.layers.${layer}.post_attention_layernorm.weight`, shape: [h] };
  }
  yield { name: "model.norm.weight", shape: [h] };
  if (!config.tieWordEmbeddings) yield { name: "lm_head.weight", shape: projectionShape(config, "lm_head") };
}

function checkTensors(weightsFile: string, config: ModelConfig, tensors: readonly TensorInfo[]): void {
  const byName = new Map(tensors.map((t) => [t.name, t]));
  // Lazily: each expected name is distinct, so at most tensors.length + 1 of them are made before one is missing.
  for (const { name, shape } of expectedTensors(config)) {
    const t = byName.get(name);
    if (t === undefined) {
      const why = name === "lm_head.weight" ? " (config.json has tie_word_embeddings false)" : "";
      throw new ModelFormatError(weightsFile, `tensor \`${name}\` is missing${why}`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(t.file, `tensor \`${name}\` has shape [${t.shape.join(", ")}], config.json implies [${shape.join(", ")}]`);
    }
  }
}

function dominantDtype(tensors: readonly TensorInfo[]): Dtype {
  const counts = new Map<Dtype, number>();
  for (const t of tensors) counts.set(t.dtype, (counts.get(t.dtype) ?? 0) + elementCount(t.shape));
  let best: Dtype = "F32";
  let most = -1;
  for (const [dtype, count] of counts) {
    if (count > most) {
      best = dtype;
      most = count;
    }
  }
  return best;
}

/** chat_template of tokenizer_config.json (a string, or a list of {name, template} whose "default" is the chat one), else chat_template.jinja. */
async function readChatTemplate(dir: string): Promise<string | null> {
  const configFile = path.join(dir, "tokenizer_config.json");
  if (await isFile(configFile)) {
    const field = asObject(await readJsonFile(configFile))?.["chat_template"];
    if (typeof field === "string") return field;
    if (Array.isArray(field)) {
      const named = field.map(asObject).find((entry) => entry?.["name"] === "default");
      if (typeof named?.["template"] === "string") return named["template"];
    }
  }
  const jinja = path.join(dir, "chat_template.jinja");
  return (await isFile(jinja)) ? (await readBoundedFile(jinja, LIMITS.chatTemplateBytes)).toString("utf8") : null;
}

async function listFiles(dir: string, prefix = ""): Promise<{ path: string; size: number }[]> {
  const files: { path: string; size: number }[] = [];
  for (const entry of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const relative = prefix === "" ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) {
      files.push(...(await listFiles(dir, relative)));
      continue;
    }
    // Links (as in the Hugging Face cache) count with the size of what they point to; links to folders are not followed.
    const info = await stat(path.join(dir, relative)).catch(() => null);
    if (info?.isFile() === true) files.push({ path: relative, size: info.size });
  }
  return files.sort((a, b) => compareNames(a.path, b.path));
}

async function isFile(file: string): Promise<boolean> {
  return stat(file).then((s) => s.isFile(), () => false);
}
