import { readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { z } from "zod";
import { planSteps } from "@lathe/engine";
import type { ModelConfig } from "@lathe/models";
import type { FineTuningEstimate, FineTuningWarning, HardwareEstimate } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { JobSpec } from "./spec.js";
import type { MeasuredThroughput } from "./throughput.js";

/**
 * A hardware type of the cost table. Throughput is given for a model of `referenceParameters`
 * and scaled by the model's parameter count (a step's compute grows with it).
 */
const hardwareSchema = z.object({
  hardware: z.string().min(1),
  gpuCount: z.number().int().min(0),
  /** Memory per GPU (or of the node, for CPU) in bytes; 0: this machine's memory. */
  memoryBytes: z.number().min(0),
  /** Bytes per frozen base parameter kept for LoRA: 2 on GPUs (bf16), 4 on the CPU engine (f32). */
  baseBytesPerParameter: z.number().positive(),
  hourlyPrice: z.number().min(0),
  currencyCode: z.string().length(3),
  referenceParameters: z.number().positive(),
  tokensPerSecond: z.object({ lora: z.number().positive(), qlora: z.number().positive() }),
});
export const costTableSchema = z.array(hardwareSchema).min(1);
export type CostTable = z.infer<typeof costTableSchema>;

/**
 * The built-in cost table. GPU rows are the seed article's 2026 cloud table, read as 1,000
 * examples of about 500 tokens for 3 epochs (1.5M tokens) on an 8B model: QLoRA on one A10G in
 * about 2 h for about $3, on one A100 40GB in about 45 min for about $2; LoRA in bf16 on 4× A100
 * 80GB in about 1 h for about $12. H100 is not in the article for LoRA: its row assumes twice an
 * A100's throughput at the article's H100 price ($50 for 8 GPUs × 3 h). The CPU row is the
 * engine's own measurement (bench/engine: 1,439 tokens/s on a 4.2M-parameter model, 2 threads),
 * priced at 0: it is a machine you already run.
 */
export const defaultCostTable: CostTable = [
  { hardware: "cpu", gpuCount: 0, memoryBytes: 0, baseBytesPerParameter: 4, hourlyPrice: 0, currencyCode: "USD", referenceParameters: 4.2e6, tokensPerSecond: { lora: 1400, qlora: 1000 } },
  { hardware: "nvidia-a10g-24gb", gpuCount: 1, memoryBytes: 24e9, baseBytesPerParameter: 2, hourlyPrice: 1.5, currencyCode: "USD", referenceParameters: 8e9, tokensPerSecond: { lora: 290, qlora: 208 } },
  { hardware: "nvidia-a100-40gb", gpuCount: 1, memoryBytes: 40e9, baseBytesPerParameter: 2, hourlyPrice: 2.67, currencyCode: "USD", referenceParameters: 8e9, tokensPerSecond: { lora: 780, qlora: 556 } },
  { hardware: "nvidia-a100-80gb", gpuCount: 4, memoryBytes: 80e9, baseBytesPerParameter: 2, hourlyPrice: 3, currencyCode: "USD", referenceParameters: 8e9, tokensPerSecond: { lora: 417, qlora: 300 } },
  { hardware: "nvidia-h100-80gb", gpuCount: 1, memoryBytes: 80e9, baseBytesPerParameter: 2, hourlyPrice: 2.08, currencyCode: "USD", referenceParameters: 8e9, tokensPerSecond: { lora: 1560, qlora: 1112 } },
];

/** The cost table of LATHE_TRAINER_COST_TABLE (a JSON file), else the built-in one. */
export function loadCostTable(file: string | undefined): CostTable {
  if (file === undefined) return defaultCostTable;
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`LATHE_TRAINER_COST_TABLE: ${file} cannot be read as JSON: ${(err as Error).message}`);
  }
  const parsed = costTableSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`LATHE_TRAINER_COST_TABLE: ${file}: ${parsed.error.issues.map((i) => `[${i.path.join(".")}] ${i.message}`).join("; ")}`);
  return parsed.data;
}

/** What the data looks like once tokenized: per row, its tokens and trained tokens (after truncation). */
export interface DataShape {
  rows: number;
  tokens: number[];
  trainedTokens: number[];
  truncated: number;
  /** Sequences of one epoch: packed rows with packing, else the rows. */
  sequences: number;
}

/** Parameters LoRA trains: r × (in + out) for every adapted projection of every layer (and lm_head). */
export function trainableParameters(c: ModelConfig, lora: JobSpec["lora"]): number {
  const h = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const shapes: Record<string, [number, number]> = {
    q_proj: [h, q],
    k_proj: [h, kv],
    v_proj: [h, kv],
    o_proj: [q, h],
    gate_proj: [h, c.intermediateSize],
    up_proj: [h, c.intermediateSize],
    down_proj: [c.intermediateSize, h],
  };
  let n = 0;
  for (const m of lora.targetModules) {
    if (m === "lm_head") n += lora.r * (h + c.vocabSize);
    else {
      const [i, o] = shapes[m]!;
      n += c.numLayers * lora.r * (i + o);
    }
  }
  return n;
}

/** The hardware types of the table an estimate considers: `only`, or all. */
export function consideredHardware(table: CostTable, only: readonly string[]): CostTable {
  return table.filter((h) => only.length === 0 || only.includes(h.hardware));
}

/**
 * The estimate of a job: tokens and steps exactly as the engine will take them, then time,
 * memory and cost per hardware type of the table, cheapest (that fits) first. With max_steps the
 * tokens are the epochs' share the steps take. `warnings` (guards.ts) are kept with the estimate.
 * A hardware type in `measured` (the median of this installation's similar past jobs) takes that
 * throughput instead of the table's, and says so.
 */
export function estimateJob(
  spec: JobSpec,
  config: ModelConfig,
  parameterCount: number,
  data: DataShape,
  table: CostTable,
  only: readonly string[],
  warnings: FineTuningWarning[] = [],
  measured: ReadonlyMap<string, MeasuredThroughput> = new Map(),
): FineTuningEstimate {
  const a = spec.args;
  const tokensPerEpoch = data.tokens.reduce((s, t) => s + t, 0);
  const { stepsPerEpoch, totalSteps } = planSteps({ units: data.sequences, batchSize: a.batchSize, gradAccum: a.gradAccum, epochs: a.epochs, maxSteps: a.maxSteps ?? 0, warmupRatio: a.warmupRatio });
  const totalTokens = Math.round(stepsPerEpoch === 0 ? 0 : (tokensPerEpoch * totalSteps) / stepsPerEpoch);
  const trainable = trainableParameters(config, spec.lora);
  const longest = Math.min(a.maxSeqLength, Math.max(1, ...data.tokens));
  const seq = a.packing ? a.maxSeqLength : longest;
  const rows = consideredHardware(table, only);
  const estimates = rows.map((h) => hardwareEstimate(h, spec, config, parameterCount, trainable, totalTokens, seq, measured.get(h.hardware)));
  estimates.sort((x, y) => Number(y.fits) - Number(x.fits) || x.cost - y.cost || x.duration!.seconds - y.duration!.seconds);
  return {
    trainRowCount: data.rows,
    tokensPerEpoch,
    trainedTokensPerEpoch: data.trainedTokens.reduce((s, t) => s + t, 0),
    truncatedRowCount: data.truncated,
    sequencesPerEpoch: data.sequences,
    stepsPerEpoch,
    totalSteps,
    totalTokens,
    trainableParameterCount: trainable,
    hardwareEstimates: estimates,
    recommendedHardware: estimates.find((e) => e.fits)?.hardware ?? "",
    warnings,
  };
}

function hardwareEstimate(h: CostTable[number], spec: JobSpec, c: ModelConfig, params: number, trainable: number, totalTokens: number, seq: number, measured: MeasuredThroughput | undefined): HardwareEstimate {
  const tps = measured?.tokensPerSecond ?? h.tokensPerSecond[spec.method] * (h.referenceParameters / params);
  const seconds = totalTokens / tps;
  const gpus = Math.max(1, h.gpuCount);
  // Frozen weights: with QLoRA the layer projections take NF4's 4.5 bits (0.5625 bytes) per weight.
  const projections = c.numLayers * c.hiddenSize * (2 * c.numHeads * c.headDim + 2 * c.numKvHeads * c.headDim + 3 * c.intermediateSize);
  const base = spec.method === "qlora" ? projections * 0.5625 + (params - projections) * h.baseBytesPerParameter : params * h.baseBytesPerParameter;
  // Adapter: f32 weight, gradient and AdamW's two moments.
  const adapter = trainable * 16;
  // Activations per layer after Korthikanti et al. (sbh(34 + 5as/h) bytes in 16 bits), twice in f32;
  // with gradient checkpointing only each layer's input is kept, plus one layer recomputed.
  const bytes = h.baseBytesPerParameter;
  const b = spec.args.batchSize;
  const layer = (b * seq * c.hiddenSize * (34 + (5 * c.numHeads * seq) / c.hiddenSize) * bytes) / 2;
  const activations = spec.args.gradientCheckpointing ? c.numLayers * b * seq * c.hiddenSize * bytes + layer : c.numLayers * layer;
  const logits = b * seq * c.vocabSize * 4 * 2;
  // Sharded over the GPUs (data parallel keeps a full copy of the frozen weights on each).
  const peak = Math.round(base + adapter + (activations + logits) / 1);
  const available = h.memoryBytes === 0 ? totalmem() : h.memoryBytes;
  const cost = (seconds / 3600) * h.hourlyPrice * gpus;
  return {
    hardware: h.hardware,
    gpuCount: h.gpuCount,
    tokensPerSecond: tps,
    duration: { seconds: Math.ceil(seconds), nanos: 0 },
    peakMemoryBytes: peak,
    availableMemoryBytes: Math.round(available),
    fits: peak <= available,
    hourlyPrice: h.hourlyPrice,
    cost: Math.round(cost * 100) / 100,
    currencyCode: h.currencyCode,
    tokensPerSecondSource: measured === undefined ? "cost table" : `measured on ${measured.jobs} past job${measured.jobs === 1 ? "" : "s"}`,
    measuredJobCount: measured?.jobs ?? 0,
  };
}
