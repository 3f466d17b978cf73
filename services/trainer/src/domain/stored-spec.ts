import type { JobRow } from "../db/tables.js";
import type { JobInputs, JobSpec } from "./spec.js";

/** A job's spec as stored: what was asked, and the inputs it was pinned to. */
export type StoredSpec = JobSpec & {
  inputs: JobInputs;
  /** The W3C trace headers of the create call: the worker's spans and events continue its trace. */
  trace?: Record<string, string>;
  /** FineTuningJob.priority (absent in jobs made before priorities: 0). */
  priority?: number;
};

/** The stored spec of a job (the `spec` column, written once by JobStore.create). */
export const storedSpec = (row: Pick<JobRow, "spec">): StoredSpec => row.spec as unknown as StoredSpec;
