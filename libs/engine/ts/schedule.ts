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
