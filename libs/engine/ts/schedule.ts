/**
 * Learning-rate schedules as Hugging Face's `get_scheduler` computes them (transformers'
 * optimization.py, LambdaLR): the lr of optimizer step `step` (0-based: the first update uses
 * step 0) is baseLr · factor(step). Warmup rises linearly from 0, so with warmup the first update
 * has lr 0, exactly as in HF.
 */

/** The schedules we implement; "constant" is HF's `constant_with_warmup` (plain `constant` when warmupSteps is 0). */
export type SchedulerName = "constant" | "linear" | "cosine";

export const SCHEDULERS: readonly SchedulerName[] = ["constant", "linear", "cosine"];

export interface ScheduleOptions {
  scheduler: SchedulerName;
  baseLr: number;
  /** Optimizer steps of the whole run. */
  totalSteps: number;
  /** Steps of linear warmup from 0 (see warmupSteps()). */
  warmupSteps: number;
}

/** HF's `get_warmup_steps`: ceil(warmupRatio × totalSteps). */
export function warmupSteps(warmupRatio: number, totalSteps: number): number {
  if (!(warmupRatio >= 0 && warmupRatio <= 1)) throw new RangeError(`warmupRatio must be in [0, 1], got ${warmupRatio}`);
  return Math.ceil(warmupRatio * totalSteps);
}

/** The learning rate of optimizer step `step` (0-based). */
export function lrAt(step: number, o: ScheduleOptions): number {
  return o.baseLr * lrFactor(step, o);
}

function lrFactor(step: number, { scheduler, totalSteps, warmupSteps: warmup }: ScheduleOptions): number {
  if (step < warmup) return step / Math.max(1, warmup);
  switch (scheduler) {
    case "constant":
      return 1;
    case "linear":
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmup));
    case "cosine": {
      // num_cycles = 0.5: half a cosine from 1 down to 0 over the steps after warmup.
      const progress = (step - warmup) / Math.max(1, totalSteps - warmup);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    }
    default: {
      const never: never = scheduler;
      throw new RangeError(`unknown scheduler ${JSON.stringify(never)} (use ${SCHEDULERS.join(", ")})`);
    }
  }
}

/**
 * The highest learning rate any step of the run gets. Warmup rises to baseLr at step
 * `warmupSteps` and every schedule starts its decay from there, so the peak is that step's lr,
 * or the last step's when warmup is not over by then. 0 means the run changes nothing.
 */
export function peakLr(o: ScheduleOptions): number {
  if (o.totalSteps <= 0) return 0;
  return lrAt(Math.min(o.warmupSteps, o.totalSteps - 1), o);
}

/** How many optimizer steps a run takes, as `train` takes them and the trainer estimates them. */
export interface StepPlan {
  /** Micro-batches of one epoch: ceil(units / batchSize). */
  microBatchesPerEpoch: number;
  /** ceil(microBatchesPerEpoch / gradAccum); the last step of an epoch may take fewer micro-batches. */
  stepsPerEpoch: number;
  /** maxSteps when it is set (HF: it overrides the epochs), else stepsPerEpoch × epochs. */
  totalSteps: number;
  /** Epochs begun: ceil(totalSteps / stepsPerEpoch); the last may stop part-way with maxSteps. */
  epochs: number;
  /** HF's ceil(warmupRatio × totalSteps). */
  warmupSteps: number;
}

/**
 * The steps of a run over `units` training units (packed rows with packing, else examples), as
 * HF's Trainer counts them: `maxSteps` > 0 overrides `epochs`.
 */
export function planSteps(o: { units: number; batchSize: number; gradAccum: number; epochs: number; maxSteps: number; warmupRatio: number }): StepPlan {
  const microBatchesPerEpoch = Math.ceil(o.units / o.batchSize);
  const stepsPerEpoch = Math.ceil(microBatchesPerEpoch / o.gradAccum);
  const totalSteps = o.maxSteps > 0 ? o.maxSteps : stepsPerEpoch * o.epochs;
  const epochs = stepsPerEpoch === 0 ? 0 : Math.ceil(totalSteps / stepsPerEpoch);
  return { microBatchesPerEpoch, stepsPerEpoch, totalSteps, epochs, warmupSteps: warmupSteps(o.warmupRatio, totalSteps) };
}
