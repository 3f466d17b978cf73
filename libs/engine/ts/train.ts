/**
 * The LoRA training loop over the engine: JSONL in, PEFT adapter and a JSON summary out.
 *
 * Data: every line of the JSONL file is a TrainingExample, tokenized with the model's tokenizer
 * and chat template (only answers trained unless trainOnInputs). Each epoch shuffles the
 * examples (or, with packing, the packed rows) with a seeded generator; consecutive chunks of
 * batchSize form micro-batches and gradAccum micro-batches form one optimizer step.
 *
 * Gradient accumulation weights micro-batches by their label counts: the engine's loss is the
 * mean over a micro-batch's labels, so micro-batch i runs with gradScale = n_i / N (n_i its
 * labels, N those of the whole optimizer step). The summed gradient is then that of the mean
 * loss over all N labels, i.e. exactly the update one batch of all those examples would give
 * (HF's newer `num_items_in_batch` behaviour, not the older mean of micro-batch means).
 */
import { createHash } from "node:crypto";
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import {
  IGNORE_INDEX,
  loadTokenizer,
  packExamples,
  padExamples,
  readPeftAdapter,
  readTensorF32,
  shiftLabels,
  tokenizeExample,
  writePeftAdapter,
  writeSafetensors,
  type PeftAdapter,
  type LabeledSequence,
  type ModelTokenizer,
  type PackedRow,
  type TrainingExample,
} from "@lathe/models";
import { EngineError, Model, NF4_MODULES, type Batch } from "./index.js";
import type { LoraModule } from "./native.js";
import { lrAt, SCHEDULERS, warmupSteps as warmupStepsFor, type SchedulerName } from "./schedule.js";

/** Module names LoRA can adapt, in PEFT's spelling. */
const LORA_MODULES: readonly LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"];

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

/** Sent after every optimizer step. */
export interface TrainProgress {
  /** 1-based optimizer step just taken. */
  step: number;
  totalSteps: number;
  /** 1-based epoch. */
  epoch: number;
  /** Mean loss over the step's labels. */
  loss: number;
  /** Learning rate the step used. */
  lr: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  /** Tokens (padding excluded) per second since the start. */
  tokensPerSecond: number;
  etaSeconds: number;
}

export interface TrainSummary {
  /** Label-weighted mean training loss of each epoch. */
  trainLossPerEpoch: number[];
  /** Mean eval loss after each epoch; empty without eval data. */
  evalLossPerEpoch: number[];
  /** Tokens processed (padding excluded), all epochs. */
  tokens: number;
  seconds: number;
  /** Examples longer than maxSeqLength, cut (train and eval). */
  truncatedExamples: number;
  steps: number;
  adapterDir: string;
  /** Checkpoint folders written by this call (rotation may have removed older ones since). */
  checkpointsWritten: string[];
  /** Checkpoint folders present at the end (the newest saveTotalLimit). */
  checkpoints: string[];
  /** Lowest eval loss seen (its adapter is in `<outDir>/best/`); null without eval data. */
  bestEvalLoss: number | null;
  /** Optimizer step of the best eval loss; null without eval data. */
  bestStep: number | null;
  /** The step this call resumed from; null for a fresh run. */
  resumedFromStep: number | null;
  /** Frozen base weights as stored (all of them: embeddings and lm_head stay f32): bytes / parameters. */
  baseBytesPerParameter: number;
  /** The same for the layer projections alone: 4 in f32, about 0.52 with QLoRA. */
  linearBytesPerParameter: number;
  qlora: boolean;
  /** Highest resident set size of the process sampled at each step. */
  peakMemoryBytes: number;
  gradientCheckpointing: boolean;
  /** The most bytes the engine held for backward in any training forwardBackward of this call (0 when no step ran). */
  peakActivationBytes: number;
}

/** A checkpoint that cannot be resumed (missing, malformed, or from a run with other settings or data). */
export class CheckpointError extends Error {
  override readonly name = "CheckpointError";
}

/** A data file line that is not a usable example; the message names file:line. */
export class TrainingDataError extends Error {
  override readonly name = "TrainingDataError";
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${file}:${line}: ${message}`, options);
  }
}

interface Resolved {
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

/** The settings that fix a run's trajectory; a resumed run must have the same. */
const TRAJECTORY_KEYS = [
  "loraR", "loraAlpha", "loraDropout", "targetModules", "useRslora", "epochs", "batchSize", "gradAccum", "lr", "scheduler", "warmupRatio",
  "weightDecay", "maxGradNorm", "maxSeqLength", "packing", "trainOnInputs", "seed", "qlora",
] as const;

const STATE_FORMAT = "lathe-trainer-state/1";
const TRAINER_STATE = "trainer_state.json";
const OPTIMIZER_FILE = "optimizer.safetensors";
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;

/** trainer_state.json of a checkpoint: everything but the tensors that a resumed run needs to continue exactly. */
interface TrainerState {
  format: typeof STATE_FORMAT;
  /** Optimizer steps taken. */
  globalStep: number;
  /** 0-based epoch to continue in (== epochs when the run is complete). */
  epoch: number;
  /** Optimizer steps of that epoch already taken: the position in its batch order. */
  stepInEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  /** How the batch order is made: a Fisher–Yates permutation driven by mulberry32, reseeded each epoch. */
  dataOrder: { algorithm: "mulberry32-fisher-yates"; seed: number; epochSeed: number; units: number; fingerprint: string };
  rng: {
    /** The shuffle generator's state at the start of the current epoch (it is reseeded per epoch). */
    shuffle: number;
    /** The engine's dropout PRNG (xoshiro256**), four 64-bit words in hex. */
    dropout: string[];
  };
  /** AdamW's bias-correction step counter (steps with labels). */
  adamwStepCount: number;
  schedule: { scheduler: SchedulerName; baseLr: number; totalSteps: number; warmupSteps: number };
  /** Tokens processed so far, and the running sums of the current epoch's train loss. */
  tokens: number;
  epochLossSum: number;
  epochLabels: number;
  trainLossPerEpoch: number[];
  evalLossPerEpoch: number[];
  logHistory: { step: number; epoch: number; loss: number; lr: number; gradNorm: number }[];
  bestEvalLoss: number | null;
  bestStep: number | null;
  settings: Record<(typeof TRAJECTORY_KEYS)[number], unknown>;
}

/**
 * Trains LoRA adapters on `dataPath` and writes a PEFT adapter (adapter_config.json,
 * adapter_model.safetensors) and training_summary.json into `outDir`.
 *
 * Checkpoints: every `saveSteps` optimizer steps and at the end of each epoch,
 * `<outDir>/checkpoint-<step>/` receives the adapter (PEFT files), `optimizer.safetensors`
 * (AdamW's `exp_avg` and `exp_avg_sq` of every LoRA tensor) and `trainer_state.json` (step,
 * epoch and position in its batch order, the shuffle and dropout RNG states, schedule, losses,
 * best eval loss); only the newest `saveTotalLimit` are kept. `resumeFrom` continues from one
 * exactly: the final adapter is byte-identical to an uninterrupted run's with the same seed.
 * With eval data `<outDir>/best/` holds the adapter of the lowest eval loss so far.
 *
 * Aborting `signal` stops before the next micro-batch (within one step) and rejects with
 * EngineError CANCELLED; the final adapter is not written then (checkpoints already written stay).
 * @throws TrainingDataError naming file:line for a bad JSONL line; RangeError for a bad option;
 *   CheckpointError for a checkpoint or initial adapter that does not fit.
 */
export async function train(options: TrainOptions, onProgress?: (p: TrainProgress) => void, signal?: AbortSignal): Promise<TrainSummary> {
  const initAdapter = options.initAdapter === undefined ? null : await readInitAdapter(options.initAdapter);
  const o = resolveOptions(initAdapter === null ? options : adoptAdapterSettings(options, initAdapter.adapter, initAdapter.modules));
  const started = performance.now();
  let peakMemoryBytes = process.memoryUsage().rss;
  const sampleMemory = (): void => {
    peakMemoryBytes = Math.max(peakMemoryBytes, process.memoryUsage().rss);
  };
  const tok = await loadTokenizer(options.modelDir);
  const trainSet = await readExamples(options.dataPath, tok, o);
  const evalSet = options.evalPath === undefined ? null : await readExamples(options.evalPath, tok, o);
  const padId = padTokenId(tok);

  // With packing the unit of shuffling and batching is a packed row, else an example.
  const units: LabeledSequence[] = o.packing
    ? packExamples(trainSet.examples, o.maxSeqLength, padId).map((r) => trimmedRow(r))
    : trainSet.examples;
  const microPerEpoch = Math.ceil(units.length / o.batchSize);
  const stepsPerEpoch = Math.ceil(microPerEpoch / o.gradAccum);
  const totalSteps = stepsPerEpoch * o.epochs;
  const schedule = { scheduler: o.scheduler, baseLr: o.lr, totalSteps, warmupSteps: warmupStepsFor(o.warmupRatio, totalSteps) };
  const fingerprint = dataFingerprint(units);
  const epochSeed = (epoch: number): number => (o.seed + epoch * 0x9e3779b9) >>> 0;
  const settings = Object.fromEntries(TRAJECTORY_KEYS.map((k) => [k, k === "targetModules" ? [...o.targetModules].sort() : o[k]])) as TrainerState["settings"];

  const resumeDir = options.resumeFrom === undefined ? null : await resolveCheckpoint(options.resumeFrom, options.outDir);
  const resumed = resumeDir === null ? null : await readTrainerState(resumeDir);
  if (resumed !== null && resumeDir !== null) checkResumable(resumeDir, resumed, settings, { units: units.length, fingerprint, stepsPerEpoch });

  const model = await Model.load(options.modelDir, { numThreads: o.numThreads });
  try {
    const f32 = model.memory();
    if (o.qlora) model.quantizeNf4(NF4_MODULES);
    model.setGradientCheckpointing(o.gradientCheckpointing);
    let peakActivationBytes = 0;
    const memory = model.memory();
    const linearParams = projectionParams(model);
    const linearBytes = memory.baseBytes - (f32.baseBytes - 4 * linearParams);
    model.loraInit({ r: o.loraR, alpha: o.loraAlpha, dropout: o.loraDropout, useRslora: o.useRslora, targetModules: o.targetModules, seed: o.seed });
    if (resumeDir !== null && resumed !== null) {
      await loadAdapterTensors(model, resumeDir);
      await loadOptimizer(model, resumeDir);
      model.setAdamwStepCount(resumed.adamwStepCount);
      model.setRngState(BigUint64Array.from(resumed.rng.dropout, (h) => BigInt(`0x${h}`)));
    } else if (initAdapter !== null && options.initAdapter !== undefined) {
      await loadAdapterTensors(model, options.initAdapter, initAdapter.adapter);
    }

    const trainLossPerEpoch: number[] = resumed?.trainLossPerEpoch.slice() ?? [];
    const evalLossPerEpoch: number[] = resumed?.evalLossPerEpoch.slice() ?? [];
    const logHistory: TrainerState["logHistory"] = resumed?.logHistory.slice() ?? [];
    let bestEvalLoss = resumed?.bestEvalLoss ?? null;
    let bestStep = resumed?.bestStep ?? null;
    const startTokens = resumed?.tokens ?? 0;
    let tokens = startTokens;
    let step = resumed?.globalStep ?? 0;
    const startStep = step;
    const checkpointsWritten: string[] = [];
    const checkCancel = (): void => {
      if (signal?.aborted === true) throw new EngineError("CANCELLED", `training was cancelled after ${step} of ${totalSteps} steps`);
    };
    const adapterContents = () => ({
      r: o.loraR,
      loraAlpha: o.loraAlpha,
      loraDropout: o.loraDropout,
      targetModules: o.targetModules,
      useRslora: o.useRslora,
      baseModelNameOrPath: options.baseModelNameOrPath ?? options.modelDir,
      tensors: [...model.loraShapes()].map(([name, shape]) => ({ name: `base_model.model.${name}`, shape: [...shape], data: model.loraGet(name) })),
    });
    let lastCheckpointStep = step;
    const saveCheckpoint = async (epoch: number, stepInEpoch: number, epochLossSum: number, epochLabels: number, evalLoss: number | null = null): Promise<void> => {
      const state: TrainerState = {
        format: STATE_FORMAT,
        globalStep: step,
        epoch,
        stepInEpoch,
        stepsPerEpoch,
        totalSteps,
        dataOrder: { algorithm: "mulberry32-fisher-yates", seed: o.seed, epochSeed: epochSeed(epoch), units: units.length, fingerprint },
        rng: { shuffle: epochSeed(epoch), dropout: [...model.rngState()].map((w) => w.toString(16).padStart(16, "0")) },
        adamwStepCount: model.adamwStepCount(),
        schedule,
        tokens,
        epochLossSum,
        epochLabels,
        trainLossPerEpoch,
        evalLossPerEpoch,
        logHistory,
        bestEvalLoss,
        bestStep,
        settings,
      };
      const dir = path.join(options.outDir, `checkpoint-${step}`);
      const tmp = `${dir}.tmp`;
      await rm(tmp, { recursive: true, force: true });
      await writePeftAdapter(tmp, adapterContents());
      await writeSafetensors(
        path.join(tmp, OPTIMIZER_FILE),
        [...model.loraShapes()].flatMap(([name, shape]) => {
          const { m, v } = model.adamwStateGet(name);
          return [
            { name: `${name}.exp_avg`, dtype: "F32" as const, shape: [...shape], data: m },
            { name: `${name}.exp_avg_sq`, dtype: "F32" as const, shape: [...shape], data: v },
          ];
        }),
        { format: "pt", optimizer: "adamw" },
      );
      await writeFile(path.join(tmp, TRAINER_STATE), `${JSON.stringify(state, null, 2)}\n`);
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir); // a checkpoint is complete or absent, never half-written
      checkpointsWritten.push(dir);
      const since = logHistory.filter((h) => h.step > lastCheckpointStep && Number.isFinite(h.loss));
      lastCheckpointStep = step;
      await options.onCheckpoint?.({
        dir,
        step,
        epoch: epoch + stepInEpoch / stepsPerEpoch,
        loss: since.length === 0 ? Number.NaN : since.reduce((a, h) => a + h.loss, 0) / since.length,
        evalLoss,
      });
      await rotateCheckpoints(options.outDir, o.saveTotalLimit);
    };

    const startEpoch = resumed?.epoch ?? 0;
    for (let epoch = startEpoch; epoch < o.epochs; epoch++) {
      const order = shuffled(units.length, epochSeed(epoch));
      const resuming = resumed !== null && epoch === startEpoch;
      let epochLossSum = resuming ? resumed.epochLossSum : 0;
      let epochLabels = resuming ? resumed.epochLabels : 0;
      for (let s = resuming ? resumed.stepInEpoch : 0; s < stepsPerEpoch; s++) {
        const micro: Batch[] = [];
        for (let m = 0; m < o.gradAccum; m++) {
          const first = (s * o.gradAccum + m) * o.batchSize;
          if (first >= units.length) break;
          const members = order.slice(first, first + o.batchSize).map((i) => units[i] as LabeledSequence);
          micro.push(toBatch(o.packing ? members.map(asRow) : padExamples(members, padId)));
        }
        const counts = micro.map(labelCount);
        const labels = counts.reduce((a, b) => a + b, 0);
        let stepLossSum = 0;
        model.zeroGrad();
        for (const [i, batch] of micro.entries()) {
          checkCancel();
          const n = counts[i] ?? 0;
          if (n === 0) continue;
          const r = await model.forwardBackward(batch, { gradScale: n / labels, training: true, backward: true });
          peakActivationBytes = Math.max(peakActivationBytes, model.activationBytes());
          stepLossSum += r.loss * n;
          tokens += realTokens(batch);
        }
        checkCancel();
        const lr = lrAt(step, schedule);
        const { gradNorm } = labels === 0 ? { gradNorm: 0 } : await model.adamwStep({ lr, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm });
        step++;
        epochLossSum += stepLossSum;
        epochLabels += labels;
        const loss = labels === 0 ? Number.NaN : stepLossSum / labels;
        logHistory.push({ step, epoch: epoch + 1, loss, lr, gradNorm });
        sampleMemory();
        // The end of an epoch is checkpointed below, after its evaluation.
        if (o.saveSteps > 0 && step % o.saveSteps === 0 && s + 1 < stepsPerEpoch) await saveCheckpoint(epoch, s + 1, epochLossSum, epochLabels);
        const elapsed = (performance.now() - started) / 1000;
        onProgress?.({
          step,
          totalSteps,
          epoch: epoch + 1,
          loss,
          lr,
          gradNorm,
          tokensPerSecond: elapsed > 0 ? (tokens - startTokens) / elapsed : 0,
          etaSeconds: (elapsed / (step - startStep)) * (totalSteps - step),
        });
      }
      trainLossPerEpoch.push(epochLabels === 0 ? Number.NaN : epochLossSum / epochLabels);
      if (evalSet !== null) {
        checkCancel();
        const evalLoss = (await meanLoss(model, evalSet.examples, o.batchSize, padId)).loss;
        evalLossPerEpoch.push(evalLoss);
        if (bestEvalLoss === null || evalLoss < bestEvalLoss) {
          bestEvalLoss = evalLoss;
          bestStep = step;
          const best = path.join(options.outDir, "best");
          await writePeftAdapter(best, adapterContents());
          await writeFile(path.join(best, "best_state.json"), `${JSON.stringify({ step, epoch: epoch + 1, evalLoss }, null, 2)}\n`);
        }
      }
      checkCancel();
      await saveCheckpoint(epoch + 1, 0, 0, 0, evalSet === null ? null : (evalLossPerEpoch[evalLossPerEpoch.length - 1] ?? null));
    }

    if (o.loadBestAtEnd && bestEvalLoss !== null) {
      await mkdir(options.outDir, { recursive: true });
      for (const file of ["adapter_config.json", "adapter_model.safetensors"]) {
        await copyFile(path.join(options.outDir, "best", file), path.join(options.outDir, file));
      }
    } else {
      await writePeftAdapter(options.outDir, adapterContents());
    }
    sampleMemory();
    const summary: TrainSummary = {
      trainLossPerEpoch,
      evalLossPerEpoch,
      tokens,
      seconds: (performance.now() - started) / 1000,
      truncatedExamples: trainSet.truncated + (evalSet?.truncated ?? 0),
      steps: step,
      adapterDir: options.outDir,
      checkpointsWritten,
      checkpoints: (await listCheckpoints(options.outDir)).map((c) => c.dir),
      bestEvalLoss,
      bestStep,
      resumedFromStep: resumed === null ? null : resumed.globalStep,
      baseBytesPerParameter: memory.baseParams > 0 ? memory.baseBytes / memory.baseParams : 0,
      linearBytesPerParameter: linearParams > 0 ? linearBytes / linearParams : 0,
      qlora: o.qlora,
      peakMemoryBytes,
      gradientCheckpointing: o.gradientCheckpointing,
      peakActivationBytes,
    };
    await mkdir(options.outDir, { recursive: true });
    await writeFile(path.join(options.outDir, "training_summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
    return summary;
  } finally {
    model.free();
  }
}

/** Element count of the 7 projections of every layer (what QLoRA quantises). */
function projectionParams(model: Model): number {
  const c = model.config;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  return c.numLayers * (2 * q * c.hiddenSize + 2 * kv * c.hiddenSize + 3 * c.intermediateSize * c.hiddenSize);
}

/** sha256 over every training unit's ids and labels: a resumed run must see the same data. */
function dataFingerprint(units: readonly LabeledSequence[]): string {
  const hash = createHash("sha256");
  for (const u of units) hash.update(`${u.ids.join(",")}|${u.labels.join(",")}\n`);
  return hash.digest("hex");
}

/** checkpoint-N folders of `outDir`, oldest first. */
async function listCheckpoints(outDir: string): Promise<{ step: number; dir: string }[]> {
  let names: string[];
  try {
    names = await readdir(outDir);
  } catch {
    return [];
  }
  const found: { step: number; dir: string }[] = [];
  for (const name of names) {
    const m = CHECKPOINT_DIR.exec(name);
    if (m !== null) found.push({ step: Number(m[1]), dir: path.join(outDir, name) });
  }
  return found.sort((a, b) => a.step - b.step);
}

async function rotateCheckpoints(outDir: string, keep: number): Promise<void> {
  if (keep <= 0) return;
  const all = await listCheckpoints(outDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await rm(old.dir, { recursive: true, force: true });
}

/** A checkpoint folder from `resumeFrom`: a folder, or "latest" (the newest checkpoint-N under outDir). */
async function resolveCheckpoint(resumeFrom: string, outDir: string): Promise<string> {
  if (resumeFrom === "latest") {
    const newest = (await listCheckpoints(outDir)).at(-1);
    if (newest === undefined) throw new CheckpointError(`resume from latest: ${outDir} has no checkpoint-<step> folder`);
    return newest.dir;
  }
  const isDir = await stat(resumeFrom).then((s) => s.isDirectory(), () => false);
  if (!isDir) throw new CheckpointError(`resume: ${resumeFrom} is not a folder`);
  return resumeFrom;
}

async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = path.join(dir, TRAINER_STATE);
  let state: unknown;
  try {
    state = JSON.parse(await readFile(file, "utf8"));
  } catch (err) {
    throw new CheckpointError(`${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (typeof state !== "object" || state === null || (state as { format?: unknown }).format !== STATE_FORMAT) {
    throw new CheckpointError(`${file}: not a Lathe trainer state (format ${STATE_FORMAT})`);
  }
  return state as TrainerState;
}

/** Refuses a checkpoint whose run had other settings or data, naming each difference. */
function checkResumable(dir: string, state: TrainerState, settings: TrainerState["settings"], data: { units: number; fingerprint: string; stepsPerEpoch: number }): void {
  const diffs: string[] = [];
  for (const key of TRAJECTORY_KEYS) {
    const was = JSON.stringify(state.settings[key]);
    const now = JSON.stringify(settings[key]);
    if (was !== now) diffs.push(`${key} was ${was}, now ${now}`);
  }
  if (state.dataOrder.units !== data.units || state.dataOrder.fingerprint !== data.fingerprint) {
    diffs.push(`the training data differs (${state.dataOrder.units} units then, ${data.units} now, or other content)`);
  }
  if (diffs.length > 0) throw new CheckpointError(`cannot resume from ${dir}: ${diffs.join("; ")}`);
  if (state.stepsPerEpoch !== data.stepsPerEpoch) throw new CheckpointError(`cannot resume from ${dir}: ${state.stepsPerEpoch} steps per epoch then, ${data.stepsPerEpoch} now`);
}

/** Reads an adapter to start from, with the module kinds its tensors adapt. */
async function readInitAdapter(dir: string): Promise<{ adapter: PeftAdapter; modules: LoraModule[] }> {
  let adapter: PeftAdapter;
  try {
    adapter = await readPeftAdapter(dir);
  } catch (err) {
    throw new CheckpointError(`initAdapter ${dir}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return { adapter, modules: adaptedModules(adapter, dir) };
}

function adaptedModules(adapter: PeftAdapter, dir: string): LoraModule[] {
  const modules = new Set<LoraModule>();
  for (const t of adapter.tensors) {
    const leaf = /\.([a-z_]+)\.lora_[AB]\.weight$/.exec(t.name)?.[1] ?? "";
    if (!(LORA_MODULES as readonly string[]).includes(leaf)) {
      throw new EngineError("UNSUPPORTED", `${dir}: tensor \`${t.name}\` adapts a module the engine cannot (${LORA_MODULES.join(", ")})`);
    }
    modules.add(leaf as LoraModule);
  }
  return LORA_MODULES.filter((m) => modules.has(m));
}

/** LoRA settings not given come from the adapter; given ones must equal its. */
function adoptAdapterSettings(options: TrainOptions, adapter: PeftAdapter, modules: LoraModule[]): TrainOptions {
  const out = { ...options };
  const diffs: string[] = [];
  const adopt = <K extends "loraR" | "loraAlpha" | "loraDropout" | "useRslora">(key: K, theirs: NonNullable<TrainOptions[K]>, peftName: string): void => {
    if (options[key] === undefined) out[key] = theirs;
    else if (options[key] !== theirs) diffs.push(`${key} ${JSON.stringify(options[key])} but the adapter's ${peftName} is ${JSON.stringify(theirs)}`);
  };
  adopt("loraR", adapter.r, "r");
  adopt("loraAlpha", adapter.loraAlpha, "lora_alpha");
  adopt("loraDropout", adapter.loraDropout, "lora_dropout");
  adopt("useRslora", adapter.useRslora, "use_rslora");
  if (options.targetModules === undefined) out.targetModules = modules;
  else {
    const mine = [...parseTargetModules(options.targetModules)].sort();
    if (JSON.stringify(mine) !== JSON.stringify([...modules].sort())) {
      diffs.push(`targetModules ${mine.join(",")} but the adapter adapts ${modules.join(",")}`);
    }
  }
  if (diffs.length > 0) throw new CheckpointError(`initAdapter ${options.initAdapter ?? ""}: settings do not match: ${diffs.join("; ")}`);
  return out;
}

/** Sets every LoRA tensor from a PEFT adapter folder; each must match one of the model's. */
async function loadAdapterTensors(model: Model, dir: string, known?: PeftAdapter): Promise<void> {
  const adapter = known ?? (await readPeftAdapter(dir));
  const shapes = model.loraShapes();
  for (const t of adapter.tensors) {
    const name = t.name.replace(/^base_model\.model\./, "");
    const shape = shapes.get(name);
    if (shape === undefined) throw new CheckpointError(`${dir}: tensor \`${t.name}\` does not match a LoRA tensor of this run`);
    if (t.shape.join(",") !== shape.join(",")) throw new CheckpointError(`${dir}: tensor \`${t.name}\` is [${t.shape.join(", ")}], expected [${shape.join(", ")}]`);
    model.loraSet(name, await readTensorF32(t));
  }
}

/** Restores AdamW's moments from a checkpoint's optimizer.safetensors. */
async function loadOptimizer(model: Model, dir: string): Promise<void> {
  const file = path.join(dir, OPTIMIZER_FILE);
  const tensors = readF32Safetensors(file, await readFile(file).catch((err: unknown) => {
    throw new CheckpointError(`${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }));
  for (const name of model.loraShapes().keys()) {
    const m = tensors.get(`${name}.exp_avg`);
    const v = tensors.get(`${name}.exp_avg_sq`);
    if (m === undefined || v === undefined) throw new CheckpointError(`${file}: no moments for \`${name}\``);
    model.adamwStateSet(name, m, v);
  }
}

/** The F32 tensors of a safetensors file (8-byte little-endian header length, JSON header, data). */
function readF32Safetensors(file: string, bytes: Buffer): Map<string, Float32Array> {
  const fail = (why: string): never => {
    throw new CheckpointError(`${file}: ${why}`);
  };
  if (bytes.length < 8) fail("too short for a safetensors file");
  const headerLength = Number(bytes.readBigUInt64LE(0));
  if (8 + headerLength > bytes.length) fail("header runs past the end of the file");
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const out = new Map<string, Float32Array>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (info.dtype !== "F32") fail(`tensor ${name} is ${info.dtype}, expected F32`);
    const [from, to] = info.data_offsets;
    const start = 8 + headerLength + from;
    if (to < from || start + (to - from) > bytes.length) fail(`tensor ${name} lies outside the file`);
    const data = new Float32Array((to - from) / 4);
    new Uint8Array(data.buffer).set(bytes.subarray(start, start + (to - from)));
    out.set(name, data);
  }
  return out;
}

export interface EvalLossOptions {
  /** A PEFT adapter to apply; default none (the base model). */
  adapterDir?: string;
  /** Default 2048. */
  maxSeqLength?: number;
  /** Default 4. */
  batchSize?: number;
  /** Default 0 (all). */
  numThreads?: number;
  /** Default false. */
  trainOnInputs?: boolean;
}

export interface EvalLossResult {
  /** Mean loss over every label of the data. */
  loss: number;
  perplexity: number;
  /** Labels (trained tokens) the mean runs over. */
  tokens: number;
  truncatedExamples: number;
}

/** Mean loss and perplexity of a model (with an optional PEFT adapter) on a JSONL file. */
export async function evalLoss(modelDir: string, dataPath: string, options: EvalLossOptions = {}): Promise<EvalLossResult> {
  const maxSeqLength = positiveInt("maxSeqLength", options.maxSeqLength ?? 2048);
  const batchSize = positiveInt("batchSize", options.batchSize ?? 4);
  const tok = await loadTokenizer(modelDir);
  const data = await readExamples(dataPath, tok, { maxSeqLength, trainOnInputs: options.trainOnInputs ?? false });
  const model = await Model.load(modelDir, { numThreads: options.numThreads ?? 0 });
  try {
    if (options.adapterDir !== undefined) await applyAdapter(model, options.adapterDir);
    const { loss, labels } = await meanLoss(model, data.examples, batchSize, padTokenId(tok));
    return { loss, perplexity: Math.exp(loss), tokens: labels, truncatedExamples: data.truncated };
  } finally {
    model.free();
  }
}

/** Loads a PEFT adapter's weights into `model` (loraInit with its settings, then loraSet). */
async function applyAdapter(model: Model, dir: string): Promise<void> {
  const adapter = await readPeftAdapter(dir);
  model.loraInit({ r: adapter.r, alpha: adapter.loraAlpha, dropout: adapter.loraDropout, useRslora: adapter.useRslora, targetModules: adaptedModules(adapter, dir) });
  const expected = new Set(model.loraShapes().keys());
  for (const t of adapter.tensors) {
    const name = t.name.replace(/^base_model\.model\./, "");
    if (!expected.delete(name)) throw new EngineError("INVALID_ARGUMENT", `${dir}: tensor \`${t.name}\` does not match a layer of the model`);
    model.loraSet(name, await readTensorF32(t));
  }
  // A module adapted in some layers only (layers_to_transform) leaves the rest at PEFT's init: B = 0, no effect.
}

/** Mean loss over all labels of `examples`, no backward, dropout off. */
async function meanLoss(model: Model, examples: readonly LabeledSequence[], batchSize: number, padId: number): Promise<{ loss: number; labels: number }> {
  let sum = 0;
  let labels = 0;
  for (let first = 0; first < examples.length; first += batchSize) {
    const batch = toBatch(padExamples(examples.slice(first, first + batchSize), padId));
    const n = labelCount(batch);
    if (n === 0) continue;
    const r = await model.forwardBackward(batch, { backward: false, training: false });
    sum += r.loss * n;
    labels += n;
  }
  if (labels === 0) throw new EngineError("INVALID_ARGUMENT", "the evaluation data has no trained tokens");
  return { loss: sum / labels, labels };
}

interface ExampleSet {
  examples: LabeledSequence[];
  truncated: number;
}

/**
 * Reads and tokenizes a JSONL file; blank lines are skipped.
 * @throws TrainingDataError naming file:line.
 */
async function readExamples(file: string, tok: ModelTokenizer, o: { maxSeqLength: number; trainOnInputs: boolean }): Promise<ExampleSet> {
  const text = await readFile(file, "utf8");
  const examples: LabeledSequence[] = [];
  let truncated = 0;
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (line === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new TrainingDataError(file, index + 1, `not valid JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    let ex;
    try {
      ex = tokenizeExample(tok, value as TrainingExample, o);
    } catch (err) {
      throw new TrainingDataError(file, index + 1, err instanceof Error ? err.message : String(err), { cause: err });
    }
    if (ex.truncated) truncated++;
    examples.push({ ids: ex.ids, labels: ex.labels });
  });
  if (examples.length === 0) throw new TrainingDataError(file, 1, "no examples (the file is empty)");
  return { examples, truncated };
}

/** An id to put under padding (never trained, never attended to by real tokens): the eos token's, else 0. */
function padTokenId(tok: ModelTokenizer): number {
  const ids = tok.eosToken === undefined ? [] : tok.encode(tok.eosToken);
  return ids.length === 1 ? (ids[0] ?? 0) : 0;
}

/** A packed row carried as a LabeledSequence through shuffling; `asRow` restores it. */
interface RowUnit extends LabeledSequence {
  row: PackedRow;
}

/** A packed row without its trailing padding (the batch re-pads to its longest row). */
function trimmedRow(row: PackedRow): RowUnit {
  let end = row.segments.length;
  while (end > 0 && row.segments[end - 1] === -1) end--;
  const cut: PackedRow = { tokens: row.tokens.slice(0, end), labels: row.labels.slice(0, end), positions: row.positions.slice(0, end), segments: row.segments.slice(0, end) };
  return { ids: cut.tokens, labels: cut.labels, row: cut };
}

function asRow(unit: LabeledSequence): PackedRow {
  return (unit as RowUnit).row;
}

/** Rows → an engine batch: padded to the longest row, labels shifted. */
function toBatch(rows: readonly PackedRow[]): Batch {
  const seq = rows.reduce((n, r) => Math.max(n, r.tokens.length), 0);
  const batch = rows.length;
  const tokens = new Int32Array(batch * seq);
  const labels = new Int32Array(batch * seq).fill(IGNORE_INDEX);
  const positions = new Int32Array(batch * seq);
  const segments = new Int32Array(batch * seq).fill(-1);
  rows.forEach((row, b) => {
    const shifted = shiftLabels(row);
    const o = b * seq;
    tokens.set(row.tokens, o);
    labels.set(shifted, o);
    positions.set(row.positions, o);
    segments.set(row.segments, o);
    // Padding added here repeats the row's pad token (its first padding position, else the last token).
    const pad = row.tokens[row.segments.indexOf(-1)] ?? row.tokens.at(-1) ?? 0;
    tokens.fill(pad, o + row.tokens.length, o + seq);
  });
  return { tokens, labels, positions, segments, batch, seq };
}

function labelCount(batch: Batch): number {
  let n = 0;
  for (const l of batch.labels) if (l !== IGNORE_INDEX) n++;
  return n;
}

function realTokens(batch: Batch): number {
  let n = 0;
  for (const s of batch.segments ?? []) if (s >= 0) n++;
  return n;
}

/** Fisher–Yates permutation of 0..n-1 driven by mulberry32(seed): the same order for the same seed. */
function shuffled(n: number, seed: number): number[] {
  let state = seed >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [order[i], order[j]] = [order[j] as number, order[i] as number];
  }
  return order;
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

function resolveOptions(o: TrainOptions): Resolved {
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

function positiveInt(name: string, v: number): number {
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
