import { planSteps } from "@lathe/engine";
import type { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { DataShape } from "./estimate.js";
import type { JobSpec } from "./spec.js";

/*
 * `training_arguments.auto_hyperparameters`: epochs, batch size, learning rate (and warmup) picked
 * from the train set, as OpenAI's fine-tuning API does with "auto". The rule (docs/training.md):
 *
 * 1. Batch: an optimizer step takes about 0.2 % of an epoch's sequences (rows, or packed rows
 *    with packing), from 1 to 256 (OpenAI's rule for its batch size); per device at most 4 (the
 *    recipe's), the rest accumulated.
 * 2. Epochs: 3, unless 3 epochs would show the model fewer than 100 rows (then 100 / rows, at
 *    most 25) or more than 25,000 (then 25,000 / rows, at least 1), OpenAI's published rule;
 *    then raised (up to 25) until the run takes at least 10 optimizer steps.
 * 3. Learning rate: the recipe's 2e-4 at its batch of 16 sequences, scaled by the square root of
 *    the batch (Adam's square-root scaling rule), between 2e-5 and 1e-3, to 2 significant digits.
 * 4. Warmup: the recipe's 3 % when that is at least one step, else none (a rounded-up warmup
 *    step would waste a step of a short run at learning rate 0).
 *
 * Settings given in the request (not 0, or set for warmup_ratio) are kept, and the rest picked
 * around them.
 */

/** The constants of the rule, in one place. */
export const AUTO_RULE = {
  batchShare: 0.002,
  maxBatch: 256,
  maxPerDevice: 4,
  targetEpochs: 3,
  minRowsSeen: 100,
  maxRowsSeen: 25_000,
  maxEpochs: 25,
  minSteps: 10,
  referenceBatch: 16,
  referenceLr: 2e-4,
  minLr: 2e-5,
  maxLr: 1e-3,
  warmupRatio: 0.03,
} as const;

/** The settings the rule picks. */
export type AutoSetting = "epochs" | "batchSize" | "gradAccum" | "lr" | "warmupRatio";

/** The settings a request leaves to the rule: with auto_hyperparameters, those it does not set. */
export function autoSettings(job: FineTuningJob | undefined): AutoSetting[] {
  const a = job?.trainingArguments;
  if (a?.autoHyperparameters !== true) return [];
  const out: AutoSetting[] = [];
  if (a.numTrainEpochs === 0) out.push("epochs");
  if (a.perDeviceTrainBatchSize === 0) out.push("batchSize");
  if (a.gradientAccumulationSteps === 0) out.push("gradAccum");
  if (a.learningRate === 0) out.push("lr");
  if (a.warmupRatio === undefined) out.push("warmupRatio");
  return out;
}

const clamp = (x: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, x));

/** `spec` with the settings in `picked` chosen by the rule for `data`. */
export function applyAutoHyperparameters(spec: JobSpec, picked: readonly AutoSetting[], data: Pick<DataShape, "rows" | "sequences">): JobSpec {
  if (picked.length === 0) return spec;
  const R = AUTO_RULE;
  const a = { ...spec.args };
  const pick = (k: AutoSetting) => picked.includes(k);

  const batch = clamp(Math.round(R.batchShare * data.sequences), 1, R.maxBatch);
  if (pick("batchSize")) a.batchSize = pick("gradAccum") ? Math.min(batch, R.maxPerDevice) : Math.max(1, Math.ceil(batch / a.gradAccum));
  if (pick("gradAccum")) a.gradAccum = Math.ceil(batch / a.batchSize);

  if (pick("epochs")) {
    let epochs: number = R.targetEpochs;
    if (data.rows * R.targetEpochs < R.minRowsSeen) epochs = Math.min(R.maxEpochs, Math.floor(R.minRowsSeen / data.rows));
    else if (data.rows * R.targetEpochs > R.maxRowsSeen) epochs = Math.max(1, Math.floor(R.maxRowsSeen / data.rows));
    const perEpoch = planSteps({ units: data.sequences, batchSize: a.batchSize, gradAccum: a.gradAccum, epochs: 1, maxSteps: 0, warmupRatio: 0 }).stepsPerEpoch;
    if (epochs * perEpoch < R.minSteps) epochs = Math.min(R.maxEpochs, Math.max(epochs, Math.ceil(R.minSteps / perEpoch)));
    a.epochs = epochs;
  }
  if (pick("lr")) a.lr = Number(clamp(R.referenceLr * Math.sqrt((a.batchSize * a.gradAccum) / R.referenceBatch), R.minLr, R.maxLr).toPrecision(2));
  if (pick("warmupRatio")) {
    const total = planSteps({ units: data.sequences, batchSize: a.batchSize, gradAccum: a.gradAccum, epochs: a.epochs, maxSteps: a.maxSteps ?? 0, warmupRatio: 0 }).totalSteps;
    a.warmupRatio = R.warmupRatio * total >= 1 ? R.warmupRatio : 0;
  }
  return { ...spec, args: a };
}
