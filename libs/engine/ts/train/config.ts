/**
 * What `train` is asked to do (TrainOptions, named after HF TrainingArguments and PEFT
 * LoraConfig) and the same with every default filled in and every value checked.
 */
import type { LoraModule } from "../native.js";
import { SCHEDULERS, type SchedulerName } from "../schedule.js";

/** Module names LoRA can adapt, in PEFT's spelling. */
export const LORA_MODULES: readonly LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];

/** What `train` does; names follow HF TrainingArguments and PEFT LoraConfig. */
export interface TrainOptions {
  /** Hugging Face model folder (config.json, safetensors, tokenizer). */
  modelDir: string;
  /** Training data, one TrainingExample per JSONL line. */
  dataPath: string;
  /** Evaluation data, evaluated at the end of each epoch. Default none. */
  evalPath?: string;
  /** Where the adapter and training_summary.json are written. */
  outDir: string;
  /** LoRA rank. Default 16. */
  loraR?: number;
  /** lora_alpha. Default 32. */
  loraAlpha?: number;
  /** lora_dropout. Default 0.05. */
  loraDropout?: number;
  /** Modules to adapt: PEFT names (q_proj) or short ones (q). Default q,k,v,o,gate,up,down. */
  targetModules?: string[];
  /** rsLoRA scaling alpha/√r. Default false. */
  useRslora?: boolean;
  /** Default 3. */
  epochs?: number;
  /** Examples (rows, with packing) per micro-batch. Default 4. */
  batchSize?: number;
  /** Micro-batches per optimizer step. Default 1. */
  gradAccum?: number;
  /** Peak learning rate. Default 2e-4. */
  lr?: number;
  /** Default "cosine". */
  scheduler?: SchedulerName;
  /** Warmup steps = ceil(warmupRatio × total steps). Default 0.03. */
  warmupRatio?: number;
  /** AdamW weight decay. Default 0. */
  weightDecay?: number;
  /** Clip the global gradient norm to this (<= 0: off). Default 1.0. */
  maxGradNorm?: number;
  /** Longer examples are truncated (and counted). Default 2048. */
  maxSeqLength?: number;
  /** Pack examples into rows of maxSeqLength (first-fit decreasing), rows then batched. Default false. */
  packing?: boolean;
  /** Train on prompt tokens too. Default false. */
  trainOnInputs?: boolean;
  /** Seeds LoRA's initialisation, dropout and the data order. Default 42. */
  seed?: number;
  /**
   * `base_model_name_or_path` written into the adapter's config. Default `modelDir`. A service
   * that trains from a cache folder names the model instead, so the same job gives the same bytes.
   */
  baseModelNameOrPath?: string;
  /** Engine threads, 0: all. Default 0. */
  numThreads?: number;
  /** QLoRA: store the 7 projections of every layer as NF4 (double quantised) before LoRA init. Default false. */
  qlora?: boolean;
  /**
   * Gradient checkpointing: keep only each layer's input in forward and recompute the layer in
   * backward (less activation memory, about one more forward of compute; same results bit for
   * bit). Default false.
   */
  gradientCheckpointing?: boolean;
  /** Write `<outDir>/checkpoint-<step>/` every this many optimizer steps (0: only at the end of each epoch). Default 500. */
  saveSteps?: number;
  /** Keep only the newest this many checkpoints (0: keep all). Default 2. */
  saveTotalLimit?: number;
  /** Continue an interrupted run from a checkpoint folder, or "latest" (the newest under outDir). Settings and data must match the checkpoint's. */
  resumeFrom?: string;
  /**
   * Start from an existing PEFT adapter (ours or PEFT's) instead of PEFT's initialisation. LoRA
   * settings not given are taken from it; given ones must match it.
   */
  initAdapter?: string;
  /** HF `load_best_model_at_end`: with eval data, the adapter in outDir is the best one by eval loss, not the last. Default false. */
  loadBestAtEnd?: boolean;
  /**
   * Called after each checkpoint folder is complete and before older ones are rotated away, so a
   * caller can keep it elsewhere (the trainer service copies it to the artifact store). Training
   * waits for it; an error it throws stops training.
   */
  onCheckpoint?: (c: SavedCheckpoint) => Promise<void> | void;
}

/** A checkpoint `train` just wrote. */
export interface SavedCheckpoint {
  /** The complete `checkpoint-<step>` folder. */
  dir: string;
  /** The optimizer steps done. */
  step: number;
  /** The epochs done, fractional. */
  epoch: number;
  /** The mean training loss of the steps since the previous checkpoint (NaN when none had labels). */
  loss: number;
  /** The eval loss computed at this step, when one was. */
  evalLoss: number | null;
}

/** TrainOptions with every default filled in. */
export interface Resolved {
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: LoraModule[];
  useRslora: boolean;
  epochs: number;
  batchSize: number;
  gradAccum: number;
  lr: number;
  scheduler: SchedulerName;
  warmupRatio: number;
  weightDecay: number;
  maxGradNorm: number;
  maxSeqLength: number;
  packing: boolean;
  trainOnInputs: boolean;
  seed: number;
  numThreads: number;
  qlora: boolean;
  gradientCheckpointing: boolean;
  saveSteps: number;
  saveTotalLimit: number;
  loadBestAtEnd: boolean;
}

/** PEFT module names from PEFT's or short spellings (q → q_proj). */
export function parseTargetModules(names: readonly string[]): LoraModule[] {
  const out: LoraModule[] = [];
  for (const raw of names) {
    const name = raw.trim();
    const full = name === "lm_head" || name.endsWith("_proj") ? name : `${name}_proj`;
    if (!(LORA_MODULES as readonly string[]).includes(full)) {
      throw new RangeError(`target module ${JSON.stringify(raw)} is not one of ${LORA_MODULES.join(", ")}`);
    }
    if (!out.includes(full as LoraModule)) out.push(full as LoraModule);
  }
  if (out.length === 0) throw new RangeError("targetModules is empty");
  return out;
}

export function resolveOptions(o: TrainOptions): Resolved {
  const scheduler = o.scheduler ?? "cosine";
  if (!SCHEDULERS.includes(scheduler)) throw new RangeError(`scheduler must be one of ${SCHEDULERS.join(", ")}, got ${JSON.stringify(scheduler)}`);
  const loraDropout = o.loraDropout ?? 0.05;
  if (!(loraDropout >= 0 && loraDropout < 1)) throw new RangeError(`loraDropout must be in [0, 1), got ${loraDropout}`);
  return {
    loraR: positiveInt("loraR", o.loraR ?? 16),
    loraAlpha: positiveNumber("loraAlpha", o.loraAlpha ?? 32),
    loraDropout,
    targetModules: parseTargetModules(o.targetModules ?? ["q", "k", "v", "o", "gate", "up", "down"]),
    useRslora: o.useRslora ?? false,
    epochs: positiveInt("epochs", o.epochs ?? 3),
    batchSize: positiveInt("batchSize", o.batchSize ?? 4),
    gradAccum: positiveInt("gradAccum", o.gradAccum ?? 1),
    lr: positiveNumber("lr", o.lr ?? 2e-4),
    scheduler,
    warmupRatio: o.warmupRatio ?? 0.03,
    weightDecay: o.weightDecay ?? 0,
    maxGradNorm: o.maxGradNorm ?? 1.0,
    maxSeqLength: positiveInt("maxSeqLength", o.maxSeqLength ?? 2048),
    packing: o.packing ?? false,
    trainOnInputs: o.trainOnInputs ?? false,
    seed: o.seed ?? 42,
    numThreads: o.numThreads ?? 0,
    qlora: o.qlora ?? false,
    gradientCheckpointing: o.gradientCheckpointing ?? false,
    saveSteps: nonNegativeInt("saveSteps", o.saveSteps ?? 500),
    saveTotalLimit: nonNegativeInt("saveTotalLimit", o.saveTotalLimit ?? 2),
    loadBestAtEnd: o.loadBestAtEnd ?? false,
  };
}

export function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

function nonNegativeInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be an integer >= 0, got ${v}`);
  return v;
}

function positiveNumber(name: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`${name} must be a positive number, got ${v}`);
  return v;
}
