/**
 * LoRA adapters as Hugging Face PEFT saves them: adapter_config.json and adapter_model.safetensors
 * with tensors `base_model.model.<module>.lora_A.weight` ([r, in]) and `.lora_B.weight` ([out, r]).
 * The adapted layer computes W·x + scale·B·A·x, scale = lora_alpha / r (or / √r with rsLoRA).
 */
import { access, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import vm from "node:vm";
import { LORA_MODULES, modulePath, projectionShape, readModelConfig, type LoraModule } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import { asObject, errorKind, readJsonFile, shown } from "./read-json.js";
import { findNonFinite, readSafetensorsHeader, writeSafetensors, type TensorInfo } from "./safetensors.js";
import { jsonText, normalish } from "./tiny-model.js";

export const ADAPTER_CONFIG_FILE = "adapter_config.json";
export const ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors";

/** A PEFT LoRA adapter: its settings and where its tensors lie. */
export interface PeftAdapter {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  /** Module names as in `target_modules`; when that is a regex, the module leaf names the tensors adapt. */
  targetModules: string[];
  useRslora: boolean;
  /** `base_model_name_or_path`, "" when unset. */
  baseModelNameOrPath: string;
  /** lora_alpha / r, or lora_alpha / √r with rsLoRA. */
  scale: number;
  /** The lora_A and lora_B tensors, sorted by name. */
  tensors: TensorInfo[];
  /** The whole adapter_config.json. */
  config: Record<string, unknown>;
}

/** One adapted layer: its module path in the base model (`model.layers.0.self_attn.q_proj`) and its pair. */
export interface LoraPair<T> {
  module: string;
  a: T;
  b: T;
}

const PEFT_NAME = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/;

/**
 * Reads a LoRA adapter that PEFT (or Lathe) saved.
 * @throws ModelFormatError naming the file and, for weights, the tensor: not LORA, a task other
 * than CAUSAL_LM, settings Lathe does not apply (DoRA, rank/alpha patterns, trained biases,
 * modules_to_save), a size past {@link LIMITS} (r, lora_alpha, target_modules), a tensor that is not
 * a LoRA weight, an A without its B, shapes that disagree with r, a tensor for a module that
 * `target_modules` does not name (PEFT's matching: a list entry equal to the module path or to its
 * last dotted parts, or a pattern that matches the whole path), a NaN or infinity in any tensor
 * (every tensor's data is scanned, a chunk at a time).
 */
export async function readPeftAdapter(dir: string): Promise<PeftAdapter> {
  const configFile = path.join(dir, ADAPTER_CONFIG_FILE);
  const config = asObject(await readJsonFile(configFile));
  if (config === null) throw new ModelFormatError(configFile, "expected a JSON object");
  const fail = (message: string): never => {
    throw new ModelFormatError(configFile, message);
  };

  if (config["peft_type"] !== "LORA") fail(`\`peft_type\` must be "LORA", got ${shown(config["peft_type"])}`);
  const task = config["task_type"];
  // PEFT leaves task_type null when the user passed none; a LoRA on a causal LM loads the same way.
  if (task !== undefined && task !== null && task !== "CAUSAL_LM") fail(`\`task_type\` must be "CAUSAL_LM", got ${shown(task)}`);
  const r = config["r"];
  if (typeof r !== "number" || !Number.isSafeInteger(r) || r <= 0) return fail(`\`r\` must be a positive integer, got ${shown(r)}`);
  if (r > LIMITS.loraRank) fail(`\`r\` is ${r}; at most ${LIMITS.loraRank} is supported`);
  const loraAlpha = config["lora_alpha"] ?? 8;
  if (typeof loraAlpha !== "number" || !Number.isFinite(loraAlpha) || loraAlpha <= 0) {
    return fail(`\`lora_alpha\` must be a positive number, got ${shown(loraAlpha)}`);
  }
  if (loraAlpha > LIMITS.loraAlpha) fail(`\`lora_alpha\` is ${loraAlpha}; at most ${LIMITS.loraAlpha} is supported`);
  const loraDropout = config["lora_dropout"] ?? 0;
  if (typeof loraDropout !== "number" || !(loraDropout >= 0 && loraDropout < 1)) {
    return fail(`\`lora_dropout\` must be a number in [0, 1), got ${shown(loraDropout)}`);
  }
  const useRslora = config["use_rslora"] ?? false;
  if (typeof useRslora !== "boolean") return fail(`\`use_rslora\` must be true or false, got ${shown(useRslora)}`);
  if (config["use_dora"] === true) fail("`use_dora` is true: DoRA adapters are not supported");
  if (config["fan_in_fan_out"] === true) fail("`fan_in_fan_out` is true: Llama-family layers are not Conv1D");
  for (const field of ["rank_pattern", "alpha_pattern"]) {
    const pattern = asObject(config[field]);
    if (pattern !== null && Object.keys(pattern).length > 0) fail(`\`${field}\` is not supported: Lathe applies one r and lora_alpha to every module`);
  }
  const bias = config["bias"] ?? "none";
  if (bias !== "none") fail(`\`bias\` is ${shown(bias)}: adapters that train biases are not supported`);
  const toSave = config["modules_to_save"];
  if (Array.isArray(toSave) && toSave.length > 0) fail(`\`modules_to_save\` (${moduleNames(toSave)}) is not supported: Lathe adapters hold only LoRA weights`);
  const base = config["base_model_name_or_path"] ?? "";
  if (typeof base !== "string") fail(`\`base_model_name_or_path\` must be a string, got ${shown(base)}`);
  const targets = config["target_modules"];
  if (!(typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string")))) {
    fail(`\`target_modules\` must be a list of module names or a pattern, got ${shown(targets)}`);
  }
  if (Array.isArray(targets) && targets.length > LIMITS.targetModules) {
    fail(`\`target_modules\` lists ${targets.length} modules; at most ${LIMITS.targetModules} are supported`);
  }
  for (const target of typeof targets === "string" ? [targets] : (targets as string[])) {
    if (target.length > LIMITS.targetModuleChars) {
      fail(`\`target_modules\` holds a name or pattern of ${target.length} characters; at most ${LIMITS.targetModuleChars} are supported`);
    }
  }

  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  const hasWeights = await access(weightsFile).then(() => true, () => false);
  if (!hasWeights) {
    const hasPickle = await access(path.join(dir, "adapter_model.bin")).then(() => true, () => false);
    throw new ModelFormatError(weightsFile, hasPickle ? "file is missing (adapter_model.bin, a pickle, is not read; save with safe_serialization=True)" : "file is missing");
  }
  const { tensors } = await readSafetensorsHeader(weightsFile);
  const pairs = pairLoraTensors(weightsFile, tensors, r);
  if (pairs.length === 0) throw new ModelFormatError(weightsFile, "holds no LoRA tensors");
  checkTargets(configFile, weightsFile, targets as string | string[], pairs);
  for (const t of tensors) {
    const found = await findNonFinite(t);
    if (found !== null) throw new ModelFormatError(weightsFile, `tensor \`${t.name}\` holds ${found.value === "NaN" ? "a NaN" : "an infinity"} at element ${found.index}`);
  }

  const targetModules = typeof targets === "string"
    ? [...new Set(pairs.map((p) => p.module.split(".").at(-1) ?? p.module))].sort()
    : [...(targets as string[])];
  return {
    r,
    loraAlpha,
    loraDropout,
    targetModules,
    useRslora,
    baseModelNameOrPath: base as string,
    scale: useRslora ? loraAlpha / Math.sqrt(r) : loraAlpha / r,
    tensors,
    config,
  };
}

/** Module names of a list from a file, for a message: names as they are, anything else described, at most 8. */
function moduleNames(list: readonly unknown[]): string {
  const names = list.slice(0, 8).map((v) => (typeof v === "string" && /^[\w.-]{1,64}$/.test(v) ? v : shown(v)));
  return list.length > 8 ? `${names.join(", ")}, … ${list.length - 8} more` : names.join(", ");
}

/**
 * Refuses a pair whose module `target_modules` does not select, as PEFT selects them
 * (`check_target_module_exists`): a list selects a module path equal to an entry or ending in
 * `.` + entry; a string is a regular expression the whole path must match ("all-linear", PEFT's
 * shorthand, selects every layer but the output one). A pattern runs in a context with a time
 * limit, as a pattern can backtrack for longer than any request should wait.
 */
function checkTargets(configFile: string, weightsFile: string, targets: string | readonly string[], pairs: readonly LoraPair<TensorInfo>[]): void {
  const modules = pairs.map((p) => p.module);
  let miss: number;
  if (typeof targets !== "string") {
    const names = new Set(targets);
    miss = modules.findIndex((m) => !names.has(m) && !targets.some((t) => m.endsWith(`.${t}`)));
  } else if (targets === "all-linear") {
    miss = modules.findIndex((m) => m === "lm_head" || m.endsWith(".lm_head"));
  } else {
    let pattern: RegExp;
    try {
      // Python's named groups, which PEFT patterns may use, in JavaScript's spelling.
      pattern = new RegExp(`^(?:${targets.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>")})$`);
    } catch (err) {
      // No cause: V8's message quotes the pattern.
      throw new ModelFormatError(configFile, `\`target_modules\` is a pattern Lathe cannot read (${errorKind(err)})`);
    }
    try {
      const context = vm.createContext({ pattern, modules });
      miss = Number(vm.runInContext("modules.findIndex((m) => !pattern.test(m))", context, { timeout: LIMITS.targetPatternMs }));
    } catch (err) {
      throw new ModelFormatError(configFile, `\`target_modules\` takes over ${LIMITS.targetPatternMs} ms to match ${modules.length} modules (a pattern that backtracks?)`, { cause: err });
    }
  }
  const pair = pairs[miss];
  if (pair === undefined) return;
  const leaf = pair.module.split(".").at(-1) ?? pair.module;
  const which = typeof targets === "string" ? `which target_modules ${shown(targets)} does not select` : `which is not in target_modules [${moduleNames(targets)}]`;
  throw new ModelFormatError(weightsFile, `tensor \`${pair.a.name}\` adapts ${leaf}, ${which}`);
}

/**
 * Groups PEFT tensors into A/B pairs by module, checking names and shapes (A [r, in], B [out, r]).
 * @throws ModelFormatError naming `file` and the offending tensor.
 */
export function pairLoraTensors<T extends { name: string; shape: readonly number[] }>(file: string, tensors: readonly T[], r: number): LoraPair<T>[] {
  const byModule = new Map<string, { a?: T; b?: T }>();
  for (const t of tensors) {
    const match = PEFT_NAME.exec(t.name);
    if (match === null) {
      const hint = /lora_embedding_[AB]/.test(t.name) ? " (LoRA on embeddings is not supported)" : " (expected base_model.model.<module>.lora_A.weight or .lora_B.weight)";
      throw new ModelFormatError(file, `tensor \`${t.name}\` is not a LoRA weight${hint}`);
    }
    const module = match[1]!;
    const side = match[2] === "A" ? "a" : "b";
    const pair = byModule.get(module) ?? {};
    pair[side] = t;
    byModule.set(module, pair);
  }
  const pairs: LoraPair<T>[] = [];
  for (const [module, { a, b }] of [...byModule].sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) {
    const prefix = `base_model.model.${module}`;
    if (a === undefined) throw new ModelFormatError(file, `tensor \`${prefix}.lora_B.weight\` has no \`${prefix}.lora_A.weight\``);
    if (b === undefined) throw new ModelFormatError(file, `tensor \`${prefix}.lora_A.weight\` has no \`${prefix}.lora_B.weight\``);
    if (a.shape.length !== 2 || a.shape[0] !== r) {
      throw new ModelFormatError(file, `tensor \`${a.name}\` has shape [${a.shape.join(", ")}], expected [${r}, in] for r=${r}`);
    }
    if (b.shape.length !== 2 || b.shape[1] !== r) {
      throw new ModelFormatError(file, `tensor \`${b.name}\` has shape [${b.shape.join(", ")}], expected [out, ${r}] for r=${r}`);
    }
    pairs.push({ module, a, b });
  }
  return pairs;
}

/** What writePeftAdapter needs: LoraConfig's fields and the A/B tensors under PEFT's names, as f32. */
export interface PeftAdapterContents {
  r: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: string[];
  useRslora: boolean;
  baseModelNameOrPath: string;
  tensors: { name: string; shape: number[]; data: Float32Array }[];
}

/**
 * Writes an adapter as PEFT's save_pretrained does: adapter_config.json (every LoraConfig field,
 * keys sorted, two-space indent) and adapter_model.safetensors (f32, metadata `format: pt`), so
 * PEFT and vLLM load it unchanged.
 * @throws ModelFormatError when the tensors are not complete LoRA pairs of rank r.
 */
export async function writePeftAdapter(dir: string, a: PeftAdapterContents): Promise<void> {
  if (!Number.isInteger(a.r) || a.r <= 0) throw new RangeError(`r must be a positive integer, got ${a.r}`);
  const weightsFile = path.join(dir, ADAPTER_WEIGHTS_FILE);
  pairLoraTensors(weightsFile, a.tensors, a.r);
  const config = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: a.baseModelNameOrPath,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: a.loraAlpha,
    lora_dropout: a.loraDropout,
    megatron_config: null,
    megatron_core: "megatron.core",
    modules_to_save: null,
    peft_type: "LORA",
    r: a.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...a.targetModules].sort(),
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: a.useRslora,
  };
  await mkdir(dir, { recursive: true });
  await writeSafetensors(weightsFile, a.tensors.map((t) => ({ ...t, dtype: "F32" as const })), { format: "pt" });
  await writeFile(path.join(dir, ADAPTER_CONFIG_FILE), jsonText(config));
}

/**
 * Writes a LoRA adapter for the model in `baseDir` with random non-zero A and B (PEFT initialises
 * B to zero, which would make merging a no-op), for tests. Defaults: r 8, alpha 16, q_proj and
 * v_proj (PEFT's default for Llama), seed 0, no rsLoRA.
 */
export async function writeTinyAdapter(
  dir: string,
  baseDir: string,
  opts: { r?: number; alpha?: number; targetModules?: string[]; seed?: number; useRslora?: boolean } = {},
): Promise<void> {
  const config = await readModelConfig(baseDir);
  const r = opts.r ?? 8;
  const alpha = opts.alpha ?? 16;
  const targets = opts.targetModules ?? ["q_proj", "v_proj"];
  const seed = opts.seed ?? 0;
  const tensors: PeftAdapterContents["tensors"] = [];
  for (const target of targets) {
    if (!(LORA_MODULES as readonly string[]).includes(target)) throw new RangeError(`target module ${target} is not one of ${LORA_MODULES.join(", ")}`);
    const module = target as LoraModule;
    const [out, inp] = projectionShape(config, module);
    const layers = module === "lm_head" ? [0] : Array.from({ length: config.numLayers }, (_, i) => i);
    for (const layer of layers) {
      const prefix = `base_model.model.${modulePath(module, layer)}`;
      const aName = `${prefix}.lora_A.weight`;
      const bName = `${prefix}.lora_B.weight`;
      // A's spread is that of PEFT's kaiming-uniform init; B gets a modest non-zero one.
      tensors.push({ name: aName, shape: [r, inp], data: normalish(seed, aName, r * inp, 1 / Math.sqrt(3 * inp)) });
      tensors.push({ name: bName, shape: [out, r], data: normalish(seed, bName, out * r, 0.05) });
    }
  }
  await writePeftAdapter(dir, {
    r,
    loraAlpha: alpha,
    loraDropout: 0.05,
    targetModules: targets,
    useRslora: opts.useRslora ?? false,
    baseModelNameOrPath: baseDir,
    tensors,
  });
}
