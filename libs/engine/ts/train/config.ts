/**
 * What `train` is asked to do (TrainOptions, named after HF TrainingArguments and PEFT
 * LoraConfig) and the same with every default filled in and every value checked.
 */
import { checkRecipe, type Recipe, type SequenceSet } from "@lathe/models";
import type { LoraModule } from "../native.js";
import type { SchedulerName } from "../schedule.js";

/** What `train` does; names follow HF TrainingArguments and PEFT LoraConfig. */
export interface TrainOptions {
  /** Hugging Face model folder (config.json, safetensors, tokenizer). */
  modelDir: string;
  /**
   * The tokenized, masked sequences to train on, made with this recipe's max_seq_length and
   * train_on_inputs (the trainer service pins them when a job is created; `sequencesFromFile`
   * makes them from a JSONL file).
   */
  train: SequenceSet;
  /** Sequences evaluated at the end of each epoch (or every recipe.evalSteps steps) and after the last step. Default none. */
  eval?: SequenceSet;
  /** Where the adapter and training_summary.json are written. */
  outDir: string;
  /**
   * The run's settings, resolved: `resolveRecipe` of `@lathe/models` applies the recipe's
   * defaults and ranges, as the CLI and the trainer service do. Checked again here.
   */
  recipe: Recipe;
  /**
   * `base_model_name_or_path` written into the adapter's config. Default `modelDir`. A service
   * that trains from a cache folder names the model instead, so the same job gives the same bytes.
   */
  baseModelNameOrPath?: string;
  /** Engine threads, 0: all. Default 0. */
  numThreads?: number;
  /**
   * The engine backend to train on: "cpu", "cuda", or "auto" (the first device backend usable
   * here, else "cpu"; see devices()). Not part of a checkpoint's settings: a run may resume on
   * another device. Default "auto".
   */
  device?: string;
  /**
   * The frozen base's dtype for compute: "f32", or "bf16" (the 7 projections and the LM head in
   * bf16, products summed in f32; with QLoRA the NF4 tiles are rounded to bf16). Not part of a
   * checkpoint's settings, like the device. Default "f32".
   */
  baseDtype?: "f32" | "bf16";
  /** QLoRA: store the 7 projections of every layer as NF4 (double quantised) before LoRA init. Default false. */
  qlora?: boolean;
  /** Continue an interrupted run from a checkpoint folder, or "latest" (the newest under outDir). Settings and data must match the checkpoint's. */
  resumeFrom?: string;
  /**
   * Start from an existing PEFT adapter (ours or PEFT's) instead of PEFT's initialisation. The
   * recipe's LoRA settings must match it (`recipeFromAdapter` fills those a caller left out).
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
  /** The share of the trained labels of the steps since the previous checkpoint that the argmax predicted (NaN when none had labels). */
  meanTokenAccuracy: number;
  /** The eval loss computed at this step, when one was. */
  evalLoss: number | null;
  /** The eval set's mean token accuracy computed with `evalLoss`, when one was. */
  evalMeanTokenAccuracy: number | null;
}

/** TrainOptions with every default filled in. */
export interface Resolved {
  loraR: number;
  loraAlpha: number;
  loraDropout: number;
  targetModules: LoraModule[];
  useRslora: boolean;
  epochs: number;
  /** 0: `epochs` decides. */
  maxSteps: number;
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
  device: string;
  baseDtype: "f32" | "bf16";
  qlora: boolean;
  gradientCheckpointing: boolean;
  evalSteps: number;
  saveSteps: number;
  saveTotalLimit: number;
  loadBestAtEnd: boolean;
}

/** The recipe in the names the loop and trainer_state.json use; the run's own options beside it. */
export function resolveOptions(o: TrainOptions): Resolved {
  const r = checkRecipe(o.recipe);
  return {
    loraR: r.r,
    loraAlpha: r.loraAlpha,
    loraDropout: r.loraDropout,
    targetModules: r.targetModules,
    useRslora: r.useRslora,
    epochs: r.numTrainEpochs,
    maxSteps: r.maxSteps,
    batchSize: r.perDeviceTrainBatchSize,
    gradAccum: r.gradientAccumulationSteps,
    lr: r.learningRate,
    scheduler: r.lrSchedulerType,
    warmupRatio: r.warmupRatio,
    weightDecay: r.weightDecay,
    maxGradNorm: r.maxGradNorm,
    maxSeqLength: r.maxSeqLength,
    packing: r.packing,
    trainOnInputs: r.trainOnInputs,
    seed: r.seed,
    numThreads: o.numThreads ?? 0,
    device: o.device ?? "auto",
    baseDtype: o.baseDtype ?? "f32",
    qlora: o.qlora ?? false,
    gradientCheckpointing: r.gradientCheckpointing,
    evalSteps: r.evalSteps,
    saveSteps: r.saveSteps,
    saveTotalLimit: r.saveTotalLimit,
    loadBestAtEnd: o.loadBestAtEnd ?? false,
  };
}

export function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}
