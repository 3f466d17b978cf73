import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import type { OpenAiJobRequest } from "../db/migrations.js";
import { OpenAiError, badRequest } from "./errors.js";
import { parseModelName } from "./model-name.js";

/*
 * The body of OpenAI's `POST /v1/fine_tuning/jobs`, checked and mapped onto the trainer's
 * settings (docs/openai-fine-tuning.md states the mapping). Every error names the field as
 * OpenAI's `param` (`method.supervised.hyperparameters.n_epochs`).
 */

/** The recipe's peak learning rate, which `learning_rate_multiplier` multiplies. */
export const BASE_LEARNING_RATE = 2e-4;

/** The `metadata` keys Lathe reads for what OpenAI's API has no field for. */
export const LORA_METADATA_KEYS = ["lathe.lora_r", "lathe.lora_alpha", "lathe.lora_dropout", "lathe.target_modules", "lathe.method", "lathe.max_seq_length"] as const;

const TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];

/** A checked request: OpenAI's fields, and the LoRA settings its metadata named (0/undefined: the recipe's). */
export interface FineTuningJobCreate {
  /** The base model as OpenAI names it (`tiny`). */
  model: string;
  trainingFile: string;
  validationFile: string | null;
  suffix: string | null;
  seed: number | null;
  metadata: Record<string, string> | null;
  request: OpenAiJobRequest;
  lora: { r: number; alpha: number; dropout: number | undefined; targetModules: string[]; method: FineTuningMethod; maxSeqLength: number };
}

const KNOWN = new Set(["model", "training_file", "validation_file", "suffix", "seed", "metadata", "method", "hyperparameters", "integrations"]);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

function fileId(body: Record<string, unknown>, key: string, required: boolean): string | null {
  const v = body[key];
  if (v === undefined || v === null) {
    if (required) throw badRequest(`Missing required parameter: '${key}'.`, key, "missing_required_parameter");
    return null;
  }
  if (typeof v !== "string" || v === "") throw badRequest(`Invalid type for '${key}': expected a file id (a string such as 'file-abc123').`, key, "invalid_type");
  return v;
}

type Hyper = OpenAiJobRequest["hyperparameters"];

/** One hyperparameter: "auto" (or absent) or a number within OpenAI's range. */
function hyperparameter(v: unknown, param: string, check: { integer: boolean; min: number; max: number; minExclusive?: boolean }): number | "auto" {
  if (v === undefined || v === null || v === "auto") return "auto";
  const range = `${check.minExclusive ? "greater than" : "at least"} ${check.min} and at most ${check.max}`;
  if (typeof v !== "number" || !Number.isFinite(v) || (check.integer && !Number.isInteger(v)) || (check.minExclusive ? v <= check.min : v < check.min) || v > check.max) {
    throw badRequest(`Invalid value for '${param}': ${JSON.stringify(v)}. Expected "auto" or ${check.integer ? "an integer" : "a number"} ${range}.`, param, "invalid_hyperparameter");
  }
  return v;
}

function hyperparameters(h: unknown, prefix: string): Hyper {
  if (h === undefined || h === null) return { n_epochs: "auto", batch_size: "auto", learning_rate_multiplier: "auto" };
  if (!isObject(h)) throw badRequest(`Invalid type for '${prefix}': expected an object.`, prefix, "invalid_type");
  for (const k of Object.keys(h)) {
    if (!["n_epochs", "batch_size", "learning_rate_multiplier"].includes(k)) throw badRequest(`Unrecognized hyperparameter '${prefix}.${k}'. Supported: n_epochs, batch_size, learning_rate_multiplier.`, `${prefix}.${k}`, "invalid_hyperparameter");
  }
  return {
    n_epochs: hyperparameter(h["n_epochs"], `${prefix}.n_epochs`, { integer: true, min: 1, max: 50 }),
    batch_size: hyperparameter(h["batch_size"], `${prefix}.batch_size`, { integer: true, min: 1, max: 256 }),
    // The learning rate is 2e-4 × the multiplier, and the trainer takes at most 1.
    learning_rate_multiplier: hyperparameter(h["learning_rate_multiplier"], `${prefix}.learning_rate_multiplier`, { integer: false, min: 0, max: 1 / BASE_LEARNING_RATE, minExclusive: true }),
  };
}

function numberIn(metadata: Record<string, string>, key: string, check: { integer: boolean; min: number; max: number; minExclusive?: boolean }): number | undefined {
  const raw = metadata[key];
  if (raw === undefined) return undefined;
  const v = Number(raw);
  const ok = raw.trim() !== "" && Number.isFinite(v) && (!check.integer || Number.isInteger(v)) && (check.minExclusive ? v > check.min : v >= check.min) && v <= check.max;
  if (!ok) {
    throw badRequest(
      `Invalid value for 'metadata.${key}': ${JSON.stringify(raw)}. Expected ${check.integer ? "an integer" : "a number"} ${check.minExclusive ? "greater than" : "from"} ${check.min} ${check.minExclusive ? "and at most" : "to"} ${check.max}, as a string.`,
      `metadata.${key}`,
      "invalid_metadata",
    );
  }
  return v;
}

function loraOf(metadata: Record<string, string> | null): FineTuningJobCreate["lora"] {
  const m = metadata ?? {};
  for (const k of Object.keys(m)) {
    if (k.startsWith("lathe.") && !(LORA_METADATA_KEYS as readonly string[]).includes(k)) {
      throw badRequest(`Unknown Lathe metadata key 'metadata.${k}'. Lathe reads: ${LORA_METADATA_KEYS.join(", ")}.`, `metadata.${k}`, "invalid_metadata");
    }
  }
  const modules = m["lathe.target_modules"];
  const targetModules = modules === undefined ? [] : modules.split(",").map((s) => s.trim()).filter((s) => s !== "");
  for (const t of targetModules) {
    if (!TARGET_MODULES.includes(t)) throw badRequest(`Invalid value for 'metadata.lathe.target_modules': '${t}' is not one of ${TARGET_MODULES.join(", ")} (comma-separated).`, "metadata.lathe.target_modules", "invalid_metadata");
  }
  if (modules !== undefined && targetModules.length === 0) throw badRequest("Invalid value for 'metadata.lathe.target_modules': it names no module.", "metadata.lathe.target_modules", "invalid_metadata");
  const method = m["lathe.method"];
  if (method !== undefined && method !== "lora" && method !== "qlora") throw badRequest(`Invalid value for 'metadata.lathe.method': ${JSON.stringify(method)}. Expected "lora" or "qlora".`, "metadata.lathe.method", "invalid_metadata");
  return {
    r: numberIn(m, "lathe.lora_r", { integer: true, min: 1, max: 256 }) ?? 0,
    alpha: numberIn(m, "lathe.lora_alpha", { integer: false, min: 0, max: 1024, minExclusive: true }) ?? 0,
    dropout: numberIn(m, "lathe.lora_dropout", { integer: false, min: 0, max: 0.5 }),
    targetModules,
    method: method === "qlora" ? FineTuningMethod.FINE_TUNING_METHOD_QLORA : FineTuningMethod.FINE_TUNING_METHOD_LORA,
    maxSeqLength: numberIn(m, "lathe.max_seq_length", { integer: true, min: 16, max: 1_048_576 }) ?? 0,
  };
}

function metadataOf(v: unknown): Record<string, string> | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw badRequest("Invalid type for 'metadata': expected an object of strings.", "metadata", "invalid_type");
  const entries = Object.entries(v);
  if (entries.length > 16) throw badRequest(`Invalid 'metadata': at most 16 keys, got ${entries.length}.`, "metadata", "invalid_metadata");
  const out: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (k.length > 64) throw badRequest(`Invalid 'metadata': the key '${k.slice(0, 20)}…' is longer than 64 characters.`, "metadata", "invalid_metadata");
    if (typeof val !== "string" || val.length > 512) throw badRequest(`Invalid value for 'metadata.${k}': expected a string of at most 512 characters.`, `metadata.${k}`, "invalid_metadata");
    out[k] = val;
  }
  return out;
}

/** The checked request, or an OpenAI-shaped 400 naming the field. */
export function parseFineTuningJobCreate(body: unknown): FineTuningJobCreate {
  if (!isObject(body)) throw badRequest("The request body must be a JSON object.", null, "invalid_request_body");
  for (const k of Object.keys(body)) if (!KNOWN.has(k)) throw badRequest(`Unrecognized request argument supplied: ${k}`, k, "unknown_parameter");

  const model = body["model"];
  if (model === undefined || model === null) throw badRequest("Missing required parameter: 'model'.", "model", "missing_required_parameter");
  if (typeof model !== "string") throw badRequest("Invalid type for 'model': expected a string.", "model", "invalid_type");
  if (model.startsWith("ft:")) throw badRequest(`Fine-tuning a fine-tuned model (${model}) is not supported: name its base model.`, "model", "model_not_supported");
  const parsed = parseModelName(model);
  if (parsed === undefined || parsed.adapter !== undefined) throw new OpenAiError(400, "invalid_request_error", `Model ${model} is not available for fine-tuning: name a base model of the registry (see GET /v1/models).`, "model_not_available", "model");

  const trainingFile = fileId(body, "training_file", true)!;
  const validationFile = fileId(body, "validation_file", false);

  let suffix: string | null = null;
  if (body["suffix"] !== undefined && body["suffix"] !== null) {
    const s = body["suffix"];
    if (typeof s !== "string" || !/^[A-Za-z0-9._-]{1,64}$/.test(s)) throw badRequest("Invalid 'suffix': 1 to 64 characters of letters, digits, '.', '_' and '-'.", "suffix", "invalid_value");
    suffix = s;
  }

  let seed: number | null = null;
  if (body["seed"] !== undefined && body["seed"] !== null) {
    const s = body["seed"];
    if (typeof s !== "number" || !Number.isInteger(s) || s < 0 || s > 2_147_483_647) throw badRequest(`Invalid 'seed': ${JSON.stringify(s)}. Expected an integer from 0 to 2147483647.`, "seed", "invalid_value");
    seed = s;
  }

  const integrations = body["integrations"];
  if (Array.isArray(integrations) && integrations.length > 0) throw badRequest("Integrations (for example wandb) are not supported by Lathe: read the job's events and results file instead.", "integrations", "unsupported_parameter");

  const method = body["method"];
  let hyper: Hyper;
  if (method !== undefined && method !== null) {
    if (!isObject(method)) throw badRequest("Invalid type for 'method': expected an object.", "method", "invalid_type");
    if (method["type"] !== "supervised") throw badRequest(`Unsupported 'method.type': ${JSON.stringify(method["type"])}. Lathe trains "supervised" (LoRA or QLoRA).`, "method.type", "unsupported_method");
    if (body["hyperparameters"] !== undefined && body["hyperparameters"] !== null) {
      throw badRequest("Give hyperparameters in 'method.supervised.hyperparameters' or in the deprecated top-level 'hyperparameters', not both.", "hyperparameters", "invalid_value");
    }
    const supervised = method["supervised"];
    if (supervised !== undefined && supervised !== null && !isObject(supervised)) throw badRequest("Invalid type for 'method.supervised': expected an object.", "method.supervised", "invalid_type");
    hyper = hyperparameters(supervised?.["hyperparameters"], "method.supervised.hyperparameters");
  } else {
    hyper = hyperparameters(body["hyperparameters"], "hyperparameters");
  }

  const metadata = metadataOf(body["metadata"]);
  return { model, trainingFile, validationFile, suffix, seed, metadata, request: { hyperparameters: hyper, method: "supervised" }, lora: loraOf(metadata) };
}

/** The trainer's training arguments of OpenAI's hyperparameters: a number is kept, "auto" is picked by the trainer's rule. */
export function trainingArgumentsOf(h: Hyper): { numTrainEpochs: number; perDeviceTrainBatchSize: number; gradientAccumulationSteps: number; learningRate: number; autoHyperparameters: boolean } {
  return {
    numTrainEpochs: h.n_epochs === "auto" ? 0 : h.n_epochs,
    // OpenAI's batch is sequences per optimizer step: one pass of that many, no accumulation.
    perDeviceTrainBatchSize: h.batch_size === "auto" ? 0 : h.batch_size,
    gradientAccumulationSteps: h.batch_size === "auto" ? 0 : 1,
    learningRate: h.learning_rate_multiplier === "auto" ? 0 : h.learning_rate_multiplier * BASE_LEARNING_RATE,
    autoHyperparameters: h.n_epochs === "auto" || h.batch_size === "auto" || h.learning_rate_multiplier === "auto",
  };
}

/** OpenAI's `param` for a field the trainer named (`fine_tuning_job.training_arguments.learning_rate`). */
export function openAiParamOf(field: string | undefined, viaMethod: boolean): string | null {
  if (field === undefined || field === "") return null;
  const hp = viaMethod ? "method.supervised.hyperparameters" : "hyperparameters";
  const f = field.replace(/^fine_tuning_job\./, "");
  if (f.startsWith("training_arguments.num_train_epochs")) return `${hp}.n_epochs`;
  if (f.startsWith("training_arguments.per_device_train_batch_size") || f.startsWith("training_arguments.gradient_accumulation_steps")) return `${hp}.batch_size`;
  if (f.startsWith("training_arguments.learning_rate") || f.startsWith("training_arguments.warmup_ratio")) return `${hp}.learning_rate_multiplier`;
  if (f.startsWith("training_arguments.max_seq_length")) return "metadata.lathe.max_seq_length";
  if (f.startsWith("training_arguments.seed")) return "seed";
  if (f.startsWith("train_dataset_version")) return "training_file";
  if (f.startsWith("eval_dataset_version")) return "validation_file";
  if (f.startsWith("base_model")) return "model";
  if (f.startsWith("lora_config.r")) return "metadata.lathe.lora_r";
  if (f.startsWith("lora_config.lora_alpha")) return "metadata.lathe.lora_alpha";
  if (f.startsWith("lora_config.lora_dropout")) return "metadata.lathe.lora_dropout";
  if (f.startsWith("lora_config.target_modules")) return "metadata.lathe.target_modules";
  if (f.startsWith("method")) return "metadata.lathe.method";
  return f;
}
