/**
 * The training recipe: every setting of a LoRA/QLoRA run with Hugging Face's name (PEFT's
 * `LoraConfig`, transformers' `TrainingArguments`), its default, its range and its help text.
 * `lathe train`, `lathe jobs create`, the trainer service and the engine all take them from here,
 * so an empty spec means the same run everywhere. The defaults are the reference recipe: r 16,
 * alpha 32, dropout 0.05, rsLoRA, 3 epochs, batch 4 × 4, lr 2e-4 cosine with 3 % warmup,
 * packing and gradient checkpointing, eval and checkpoints at the end of every epoch.
 */

/** LoRA module names in PEFT's spelling. */
export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"] as const;
export type LoraModuleName = (typeof LORA_MODULES)[number];

/** Learning-rate schedules after warmup, in transformers' `lr_scheduler_type` spelling. */
export const SCHEDULER_NAMES = ["cosine", "linear", "constant"] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** A run's settings, every one resolved. */
export interface Recipe {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: LoraModuleName[];
  useRslora: boolean;
  numTrainEpochs: number;
  /** Optimizer steps of the whole run; 0: num_train_epochs decides. */
  maxSteps: number;
  perDeviceTrainBatchSize: number;
  gradientAccumulationSteps: number;
  learningRate: number;
  lrSchedulerType: SchedulerName;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  maxSeqLength: number;
  packing: boolean;
  gradientCheckpointing: boolean;
  trainOnInputs: boolean;
  seed: number;
  loggingSteps: number;
  /** The eval loss every n optimizer steps; 0: at the end of every epoch. */
  evalSteps: number;
  saveSteps: number;
  saveTotalLimit: number;
}

export type RecipeKey = keyof Recipe;

interface Common {
  /** Hugging Face's name (PEFT LoraConfig or TrainingArguments). */
  hf: string;
  /** The `lathe` flag, without the leading dashes. */
  flag: string;
  /** Whether the setting is PEFT's (the adapter's shape) rather than the trainer's. */
  lora: boolean;
  help: string;
}
export type SettingSpec = Common &
  (
    | { kind: "int" | "float"; default: number; min: number; max: number; minExclusive?: boolean; zero?: string }
    | { kind: "bool"; default: boolean; off: string }
    | { kind: "choice"; default: string; choices: readonly string[] }
    | { kind: "modules"; default: readonly LoraModuleName[] }
  );

const DEFAULT_MODULES = LORA_MODULES.filter((m) => m !== "lm_head");

/** Every setting of the recipe, in the order help lists them. */
export const RECIPE: { readonly [K in RecipeKey]: SettingSpec } = {
  r: { hf: "r", flag: "lora-r", lora: true, kind: "int", default: 16, min: 1, max: 256, help: "LoRA rank r of the matrices A (d × r) and B (r × d)" },
  loraAlpha: { hf: "lora_alpha", flag: "lora-alpha", lora: true, kind: "float", default: 32, min: 0, minExclusive: true, max: 1024, help: "lora_alpha: the update is scaled by alpha/r (alpha/√r with rsLoRA)" },
  loraDropout: { hf: "lora_dropout", flag: "lora-dropout", lora: true, kind: "float", default: 0.05, min: 0, max: 0.5, help: "dropout on the LoRA path's input" },
  targetModules: { hf: "target_modules", flag: "target-modules", lora: true, kind: "modules", default: DEFAULT_MODULES, help: `comma-separated layers to adapt, of ${LORA_MODULES.join(",")}` },
  useRslora: { hf: "use_rslora", flag: "rslora", lora: true, kind: "bool", default: true, off: "scale the update by alpha/r", help: "rank-stabilised LoRA: scale the update by alpha/√r" },
  numTrainEpochs: { hf: "num_train_epochs", flag: "epochs", lora: false, kind: "int", default: 3, min: 1, max: 100, help: "passes over the train set" },
  maxSteps: { hf: "max_steps", flag: "max-steps", lora: false, kind: "int", default: 0, min: 0, max: 10_000_000, zero: "num_train_epochs decides", help: "stop after n optimizer steps, overriding num_train_epochs (the data is reshuffled for every epoch it takes)" },
  perDeviceTrainBatchSize: { hf: "per_device_train_batch_size", flag: "batch-size", lora: false, kind: "int", default: 4, min: 1, max: 1024, help: "sequences per forward pass (packed rows with packing)" },
  gradientAccumulationSteps: { hf: "gradient_accumulation_steps", flag: "grad-accum", lora: false, kind: "int", default: 4, min: 1, max: 1024, help: "forward passes per optimizer step" },
  learningRate: { hf: "learning_rate", flag: "lr", lora: false, kind: "float", default: 2e-4, min: 0, minExclusive: true, max: 1, help: "peak learning rate of AdamW" },
  lrSchedulerType: { hf: "lr_scheduler_type", flag: "scheduler", lora: false, kind: "choice", default: "cosine", choices: SCHEDULER_NAMES, help: "learning-rate schedule after warmup" },
  warmupRatio: { hf: "warmup_ratio", flag: "warmup-ratio", lora: false, kind: "float", default: 0.03, min: 0, max: 0.5, help: "share of the steps warming the learning rate up linearly" },
  weightDecay: { hf: "weight_decay", flag: "weight-decay", lora: false, kind: "float", default: 0, min: 0, max: 1, help: "AdamW's decoupled weight decay" },
  maxGradNorm: { hf: "max_grad_norm", flag: "max-grad-norm", lora: false, kind: "float", default: 1, min: 0, max: 1e6, zero: "no clipping", help: "clip the global gradient norm to this" },
  maxSeqLength: { hf: "max_seq_length", flag: "max-seq-length", lora: false, kind: "int", default: 2048, min: 16, max: 1_048_576, help: "longer rows are truncated" },
  packing: { hf: "packing", flag: "packing", lora: false, kind: "bool", default: true, off: "one row per sequence", help: "pack short rows into shared sequences of max_seq_length (rows never attend to each other)" },
  gradientCheckpointing: { hf: "gradient_checkpointing", flag: "grad-checkpointing", lora: false, kind: "bool", default: true, off: "keep activations: faster, more memory", help: "recompute each layer in backward instead of keeping its activations (same results, less memory)" },
  trainOnInputs: { hf: "train_on_inputs", flag: "train-on-inputs", lora: false, kind: "bool", default: false, off: "train only on the answers", help: "train on prompt tokens too, not only the answers" },
  seed: { hf: "seed", flag: "seed", lora: false, kind: "int", default: 42, min: 0, max: 0xffffffff, help: "seed of LoRA's initialisation, dropout and the data order" },
  loggingSteps: { hf: "logging_steps", flag: "logging-steps", lora: false, kind: "int", default: 10, min: 1, max: 10_000, help: "report progress every n optimizer steps" },
  evalSteps: { hf: "eval_steps", flag: "eval-steps", lora: false, kind: "int", default: 0, min: 0, max: 10_000_000, zero: "at the end of every epoch", help: "with eval data, compute the eval loss every n optimizer steps (and after the last step)" },
  saveSteps: { hf: "save_steps", flag: "save-steps", lora: false, kind: "int", default: 0, min: 0, max: 10_000_000, zero: "only at the end of every epoch", help: "save a checkpoint every n optimizer steps (and at the end of every epoch)" },
  saveTotalLimit: { hf: "save_total_limit", flag: "save-total-limit", lora: false, kind: "int", default: 2, min: 0, max: 1000, zero: "keep all", help: "keep only the newest n checkpoints" },
};

export const RECIPE_KEYS = Object.keys(RECIPE) as RecipeKey[];

/** A setting out of its range: `setting` is the recipe key, `field` what the caller named it. */
export class RecipeError extends RangeError {
  constructor(
    readonly setting: RecipeKey,
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = "RecipeError";
  }
}

const describe = (v: unknown) => (typeof v === "string" ? JSON.stringify(v) : Array.isArray(v) ? JSON.stringify(v) : String(v));

/** The range of a numeric setting as words: `from 1 to 256`, `greater than 0 and at most 1`. */
export function rangeText(s: SettingSpec): string {
  if (s.kind !== "int" && s.kind !== "float") return "";
  const lo = s.minExclusive ? `greater than ${s.min} and at most ${s.max}` : `from ${s.min} to ${s.max}`;
  return s.kind === "int" ? `an integer ${lo}` : `a number ${lo}`;
}

/** The default as help shows it: `16`, `cosine`, `on`, `q_proj,…`, with what 0 means. */
export function defaultText(s: SettingSpec): string {
  switch (s.kind) {
    case "bool":
      return s.default ? "on" : "off";
    case "modules":
      return s.default.join(",");
    case "choice":
      return s.default;
    default:
      return s.zero !== undefined && s.default === 0 ? `0, ${s.zero}` : String(s.default);
  }
}

/** One line of help for a setting: what it is, its range and its default. The same in every command. */
export function settingHelp(key: RecipeKey): string {
  const s = RECIPE[key];
  const range = s.kind === "int" || s.kind === "float" ? `${rangeText(s)}${s.zero !== undefined && s.default !== 0 ? `, 0: ${s.zero}` : ""}` : "";
  return `${s.help}${range === "" ? "" : `; ${range}`} (${s.hf}, default ${defaultText(s)})`;
}

function resolveOne(key: RecipeKey, value: unknown, field: string): Recipe[RecipeKey] {
  const s = RECIPE[key];
  const fail = (reason: string): never => {
    throw new RecipeError(key, field, reason);
  };
  switch (s.kind) {
    case "int":
    case "float": {
      const n = typeof value === "bigint" ? Number(value) : value;
      if (typeof n !== "number" || !Number.isFinite(n)) return fail(`must be ${rangeText(s)}, got ${describe(value)}`);
      if (s.kind === "int" && !Number.isInteger(n)) return fail(`must be ${rangeText(s)}, got ${n}`);
      if (n > s.max || n < s.min || (s.minExclusive === true && n === s.min)) return fail(`must be ${rangeText(s)}, got ${n}`);
      return n;
    }
    case "bool":
      if (typeof value !== "boolean") return fail(`must be true or false, got ${describe(value)}`);
      return value;
    case "choice":
      if (typeof value !== "string" || !s.choices.includes(value)) return fail(`must be one of ${s.choices.join(", ")}, got ${describe(value)}`);
      return value as SchedulerName;
    case "modules": {
      if (!Array.isArray(value)) return fail(`must be a list of module names, got ${describe(value)}`);
      const out: LoraModuleName[] = [];
      for (const [i, m] of (value as unknown[]).entries()) {
        // Short names (q, gate) as the engine's flags have always taken them.
        const full = typeof m === "string" && m !== "lm_head" && !m.endsWith("_proj") ? `${m}_proj` : m;
        if (typeof full !== "string" || !(LORA_MODULES as readonly string[]).includes(full)) {
          throw new RecipeError(key, `${field}[${i}]`, `${describe(m)} is not one of ${LORA_MODULES.join(", ")}`);
        }
        if (!out.includes(full as LoraModuleName)) out.push(full as LoraModuleName);
      }
      if (out.length === 0) return fail("must name at least one module");
      return out;
    }
  }
}

/**
 * The recipe with `given` applied: a setting left out (undefined) takes its default, a given one
 * must be in its range. `field` names a setting in errors (default its Hugging Face name), so
 * the trainer says `fine_tuning_job.training_arguments.learning_rate` and the CLI `--lr`.
 * @throws RecipeError for the first setting out of range.
 */
export function resolveRecipe(given: { readonly [K in RecipeKey]?: unknown } = {}, field: (key: RecipeKey) => string = (k) => RECIPE[k].hf): Recipe {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(given)) {
    if (!(key in RECIPE)) throw new RangeError(`${key} is not a setting of the recipe (${RECIPE_KEYS.join(", ")})`);
  }
  for (const key of RECIPE_KEYS) {
    const v = given[key];
    const s = RECIPE[key];
    out[key] = v === undefined ? (s.kind === "modules" ? [...s.default] : s.default) : resolveOne(key, v, field(key));
  }
  return out as unknown as Recipe;
}

/** Checks that `recipe` is whole and in range (what the engine accepts); returns it. */
export function checkRecipe(recipe: Recipe): Recipe {
  for (const key of RECIPE_KEYS) {
    if (recipe[key] === undefined) throw new RecipeError(key, RECIPE[key].hf, "is not resolved (call resolveRecipe first)");
  }
  return resolveRecipe(recipe);
}
