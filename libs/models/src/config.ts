import path from "node:path";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import { asObject, readJsonFile, shown } from "./read-json.js";

/** Architectures the engine implements (ARCHITECTURE.md §4). */
export const SUPPORTED_ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

/** Which architecture a config without `architectures` means, judged by its `model_type`. */
const ARCHITECTURE_BY_MODEL_TYPE: Record<string, Architecture> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
};

/** The fields of a Hugging Face config.json that a Llama-family decoder needs, with HF's defaults applied. */
export interface ModelConfig {
  architecture: Architecture;
  /** `model_type` (llama, mistral, qwen2). */
  modelType: string;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  /** `num_key_value_heads`; defaults to `num_attention_heads` (no grouped-query attention). */
  numKvHeads: number;
  /** `head_dim`; defaults to hidden_size / num_attention_heads. */
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  /** `max_position_embeddings`. */
  contextLength: number;
  /** `rms_norm_eps`; default 1e-6. */
  rmsNormEps: number;
  /** `rope_theta`; default 10000. */
  ropeTheta: number;
  /** `rope_scaling` as written (e.g. `{rope_type: "llama3", factor: 8, …}`), or null. */
  ropeScaling: Record<string, unknown> | null;
  /** `tie_word_embeddings`; default false (the default of LlamaConfig, MistralConfig and Qwen2Config). */
  tieWordEmbeddings: boolean;
  /** `torch_dtype` (or `dtype`, as transformers 5 writes it), or null when absent. */
  torchDtype: string | null;
  /** Biases on the q/k/v projections: always for Qwen2; Llama's `attention_bias` (which adds one to o_proj too). */
  attentionBias: boolean;
  /** The whole parsed config.json. */
  raw: Record<string, unknown>;
}

/**
 * Reads config.json of a Hugging Face model folder.
 * @throws ModelFormatError naming config.json and the field: missing file, invalid JSON, an
 * architecture Lathe does not train, a missing or invalid numeric field, a size past its maximum
 * in {@link LIMITS} (checked here, so nothing built from a config is larger than those allow).
 */
export async function readModelConfig(dir: string): Promise<ModelConfig> {
  const file = path.join(dir, "config.json");
  const raw = asObject(await readJsonFile(file));
  if (raw === null) throw new ModelFormatError(file, "expected a JSON object");
  const fail = (message: string): never => {
    throw new ModelFormatError(file, message);
  };

  const architecture = readArchitecture(raw, fail);
  const modelType = typeof raw["model_type"] === "string" ? raw["model_type"] : architecture.replace("ForCausalLM", "").toLowerCase();

  const int = (field: string, max: number, fallback?: number): number => {
    const value = raw[field] ?? fallback;
    if (value === undefined || value === null) return fail(`\`${field}\` is missing`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      return fail(`\`${field}\` must be a positive integer, got ${shown(value)}`);
    }
    if (value > max) return fail(`\`${field}\` is ${value}; at most ${max} are supported`);
    return value;
  };
  const positive = (field: string, value: unknown, fallback: number, max = Number.MAX_VALUE): number => {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      return fail(`\`${field}\` must be a positive number, got ${shown(value)}`);
    }
    if (value > max) return fail(`\`${field}\` is ${value}; at most ${max} is supported`);
    return value;
  };

  const hiddenSize = int("hidden_size", LIMITS.hiddenSize);
  const numLayers = int("num_hidden_layers", LIMITS.layers);
  const numHeads = int("num_attention_heads", LIMITS.heads);
  const numKvHeads = int("num_key_value_heads", LIMITS.heads, numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(`\`num_key_value_heads\` (${numKvHeads}) must divide \`num_attention_heads\` (${numHeads})`);
  }
  if (raw["head_dim"] == null && hiddenSize % numHeads !== 0) {
    fail(`\`hidden_size\` (${hiddenSize}) is not a multiple of \`num_attention_heads\` (${numHeads}) and there is no \`head_dim\``);
  }
  const headDim = int("head_dim", LIMITS.headDim, hiddenSize / numHeads);
  const intermediateSize = int("intermediate_size", LIMITS.intermediateSize);
  const vocabSize = int("vocab_size", LIMITS.vocabSize);
  const contextLength = int("max_position_embeddings", LIMITS.contextLength);

  // transformers 5 moves rope_theta into `rope_parameters`; older configs keep it at the top level.
  const ropeParameters = asObject(raw["rope_parameters"]);
  const ropeTheta = positive("rope_theta", raw["rope_theta"] ?? ropeParameters?.["rope_theta"], 10000, LIMITS.ropeTheta);
  const rmsNormEps = positive("rms_norm_eps", raw["rms_norm_eps"], 1e-6);

  const scaling = raw["rope_scaling"];
  if (scaling !== undefined && scaling !== null && asObject(scaling) === null) {
    fail(`\`rope_scaling\` must be an object or null, got ${shown(scaling)}`);
  }
  const ropeScaling = asObject(scaling);
  if (ropeScaling !== null) checkRopeScaling(ropeScaling, fail);

  const tie = raw["tie_word_embeddings"] ?? false;
  if (typeof tie !== "boolean") fail(`\`tie_word_embeddings\` must be true or false, got ${shown(tie)}`);
  const dtype = raw["torch_dtype"] ?? raw["dtype"] ?? null;
  const attentionBias = architecture === "Qwen2ForCausalLM" ? true : raw["attention_bias"] === true;

  return {
    architecture,
    modelType,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize,
    vocabSize,
    contextLength,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: tie === true,
    torchDtype: typeof dtype === "string" ? dtype : null,
    attentionBias,
    raw,
  };
}

function readArchitecture(raw: Record<string, unknown>, fail: (message: string) => never): Architecture {
  const supported = "Lathe trains LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM";
  const architectures = raw["architectures"];
  if (architectures === undefined || architectures === null) {
    const byType = typeof raw["model_type"] === "string" ? ARCHITECTURE_BY_MODEL_TYPE[raw["model_type"]] : undefined;
    if (byType !== undefined) return byType;
    return fail(`\`architectures\` is missing and \`model_type\` ${shown(raw["model_type"])} is not supported: ${supported}`);
  }
  if (!Array.isArray(architectures) || typeof architectures[0] !== "string") {
    return fail(`\`architectures\` must be a list of names, got ${shown(architectures)}`);
  }
  const name = architectures[0];
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(name)) {
    // A class name is shown as is; anything else only described, as every value from a file is.
    return fail(`\`architectures\`: ${/^[\w.-]{1,64}$/.test(name) ? name : shown(name)} is not supported: ${supported}`);
  }
  return name as Architecture;
}

/** Numbers of `rope_scaling` that rotary embeddings compute with, by the names transformers gives them. */
const ROPE_SCALING_NUMBERS = ["factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim"];

function checkRopeScaling(scaling: Record<string, unknown>, fail: (message: string) => never): void {
  for (const key of ROPE_SCALING_NUMBERS) {
    const value = scaling[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) fail(`\`rope_scaling.${key}\` must be a non-negative number, got ${shown(value)}`);
    if (value > LIMITS.ropeScalingValue) fail(`\`rope_scaling.${key}\` is ${value}; at most ${LIMITS.ropeScalingValue} is supported`);
  }
  const original = scaling["original_max_position_embeddings"];
  if (original === undefined || original === null) return;
  if (typeof original !== "number" || !Number.isSafeInteger(original) || original <= 0) {
    fail(`\`rope_scaling.original_max_position_embeddings\` must be a positive integer, got ${shown(original)}`);
  }
  if ((original as number) > LIMITS.contextLength) {
    fail(`\`rope_scaling.original_max_position_embeddings\` is ${String(original)}; at most ${LIMITS.contextLength} are supported`);
  }
}

/** Linear layers LoRA can adapt, by the leaf name PEFT's `target_modules` uses. */
export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

/** Module path of a linear layer in HF naming: `model.layers.3.self_attn.q_proj`, `lm_head`. */
export function modulePath(module: LoraModule, layer: number): string {
  if (module === "lm_head") return "lm_head";
  const block = module === "gate_proj" || module === "up_proj" || module === "down_proj" ? "mlp" : "self_attn";
  return `model.layers.${layer}.${block}.${module}`;
}

/** `[out, in]` of a linear layer's weight, as the config implies it. */
export function projectionShape(config: ModelConfig, module: LoraModule): [number, number] {
  const q = config.numHeads * config.headDim;
  const kv = config.numKvHeads * config.headDim;
  const h = config.hiddenSize;
  switch (module) {
    case "q_proj":
      return [q, h];
    case "k_proj":
    case "v_proj":
      return [kv, h];
    case "o_proj":
      return [h, q];
    case "gate_proj":
    case "up_proj":
      return [config.intermediateSize, h];
    case "down_proj":
      return [h, config.intermediateSize];
    case "lm_head":
      return [config.vocabSize, h];
  }
}
