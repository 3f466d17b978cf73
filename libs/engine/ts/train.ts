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
import { readFile, mkdir, writeFile } from "node:fs/promises";
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
  type LabeledSequence,
  type ModelTokenizer,
  type PackedRow,
  type TrainingExample,
} from "@lathe/models";
import { EngineError, Model, type Batch } from "./index.js";
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
  /** Engine threads, 0: all. Default 0. */
  numThreads?: number;
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
}

/**
 * Trains LoRA adapters on `dataPath` and writes a PEFT adapter (adapter_config.json,
 * adapter_model.safetensors) and training_summary.json into `outDir`.
 * Aborting `signal` stops before the next micro-batch (within one step) and rejects with
 * EngineError CANCELLED; nothing is written then.
 * @throws TrainingDataError naming file:line for a bad JSONL line; RangeError for a bad option.
 */
export async function train(options: TrainOptions, onProgress?: (p: TrainProgress) => void, signal?: AbortSignal): Promise<TrainSummary> {
  const o = resolveOptions(options);
  const started = performance.now();
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

  const model = await Model.load(options.modelDir, { numThreads: o.numThreads });
  try {
    model.loraInit({ r: o.loraR, alpha: o.loraAlpha, dropout: o.loraDropout, useRslora: o.useRslora, targetModules: o.targetModules, seed: o.seed });
    const trainLossPerEpoch: number[] = [];
    const evalLossPerEpoch: number[] = [];
    let tokens = 0;
    let step = 0;
    const checkCancel = (): void => {
      if (signal?.aborted === true) throw new EngineError("CANCELLED", `training was cancelled after ${step} of ${totalSteps} steps`);
    };

    for (let epoch = 0; epoch < o.epochs; epoch++) {
      const order = shuffled(units.length, (o.seed + epoch * 0x9e3779b9) >>> 0);
      let epochLossSum = 0;
      let epochLabels = 0;
      for (let s = 0; s < stepsPerEpoch; s++) {
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
          stepLossSum += r.loss * n;
          tokens += realTokens(batch);
        }
        checkCancel();
        const lr = lrAt(step, schedule);
        const { gradNorm } = labels === 0 ? { gradNorm: 0 } : await model.adamwStep({ lr, weightDecay: o.weightDecay, maxGradNorm: o.maxGradNorm });
        step++;
        epochLossSum += stepLossSum;
        epochLabels += labels;
        const elapsed = (performance.now() - started) / 1000;
        onProgress?.({
          step,
          totalSteps,
          epoch: epoch + 1,
          loss: labels === 0 ? Number.NaN : stepLossSum / labels,
          lr,
          gradNorm,
          tokensPerSecond: elapsed > 0 ? tokens / elapsed : 0,
          etaSeconds: (elapsed / step) * (totalSteps - step),
        });
      }
      trainLossPerEpoch.push(epochLabels === 0 ? Number.NaN : epochLossSum / epochLabels);
      if (evalSet !== null) {
        checkCancel();
        evalLossPerEpoch.push((await meanLoss(model, evalSet.examples, o.batchSize, padId)).loss);
      }
    }

    await writePeftAdapter(options.outDir, {
      r: o.loraR,
      loraAlpha: o.loraAlpha,
      loraDropout: o.loraDropout,
      targetModules: o.targetModules,
      useRslora: o.useRslora,
      baseModelNameOrPath: options.modelDir,
      tensors: [...model.loraShapes()].map(([name, shape]) => ({ name: `base_model.model.${name}`, shape: [...shape], data: model.loraGet(name) })),
    });
    const summary: TrainSummary = {
      trainLossPerEpoch,
      evalLossPerEpoch,
      tokens,
      seconds: (performance.now() - started) / 1000,
      truncatedExamples: trainSet.truncated + (evalSet?.truncated ?? 0),
      steps: step,
      adapterDir: options.outDir,
    };
    await mkdir(options.outDir, { recursive: true });
    await writeFile(path.join(options.outDir, "training_summary.json"), `${JSON.stringify(summary, null, 2)}\n`);
    return summary;
  } finally {
    model.free();
  }
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
  const modules = new Set<LoraModule>();
  for (const t of adapter.tensors) {
    const leaf = /\.([a-z_]+)\.lora_[AB]\.weight$/.exec(t.name)?.[1] ?? "";
    if (!(LORA_MODULES as readonly string[]).includes(leaf)) {
      throw new EngineError("UNSUPPORTED", `${dir}: tensor \`${t.name}\` adapts a module the engine cannot (${LORA_MODULES.join(", ")})`);
    }
    modules.add(leaf as LoraModule);
  }
  model.loraInit({ r: adapter.r, alpha: adapter.loraAlpha, dropout: adapter.loraDropout, useRslora: adapter.useRslora, targetModules: [...modules] });
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
  };
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${name} must be a positive integer, got ${v}`);
  return v;
}

function positiveNumber(name: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`${name} must be a positive number, got ${v}`);
  return v;
}
