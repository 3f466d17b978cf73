import { invalidArgument } from "@lathe/kit";

/** The range of `FineTuningJob.priority`. */
export const minPriority = -100;
export const maxPriority = 100;

/** A job's priority as CreateFineTuningJob receives it (0 when unset). */
export function checkPriority(priority: number | undefined): number {
  const p = priority ?? 0;
  if (!Number.isInteger(p) || p < minPriority || p > maxPriority) throw invalidArgument("fine_tuning_job.priority", `must be an integer from ${minPriority} to ${maxPriority}, got ${p}`);
  return p;
}
