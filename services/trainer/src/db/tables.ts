import type { ColumnType, Generated, Selectable, sql } from "kysely";

/* The trainer's tables as kysely sees them, and the JSONB documents they hold. */

/** The Postgres schema of the trainer's tables. */
export const schema = "trainer";

/** How far a job has come, as stored. */
export interface JobProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  evalLoss?: number;
  learningRate: number;
  gradNorm: number;
  tokensPerSecond: number;
  processedTokens: number;
  etaSeconds: number;
  updateTime: string;
}

/** What a succeeded job produced, as stored. */
export interface JobResult {
  adapterArtifactDigest: string;
  adapterArtifactUri: string;
  checkpoint: string;
  bestCheckpoint: string;
  finalLoss: number;
  finalEvalLoss?: number;
  trainableParameterCount: number;
}

/** Why a job failed for good, as stored: the error its users are told. */
export interface JobFailure {
  code: string;
  reason: string;
  message: string;
  field?: string;
}

export type JobState = "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";

export interface JobsTable {
  tenant: string;
  job_id: string;
  seq: Generated<string>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  /** The canonical CreateFineTuningJob request (see canonicalCreateRequest); null for jobs made before it was kept. */
  request: ColumnType<Record<string, unknown> | null, string | null, never>;
  create_time: Generated<Date>;
  update_time: ColumnType<Date, never, Date | ReturnType<typeof sql>>;
  /** The StoredSpec (domain/stored-spec.ts): what was asked and the inputs it was pinned to. */
  spec: ColumnType<Record<string, unknown>, string, never>;
  estimate: ColumnType<Record<string, unknown>, string, never>;
  state: JobState;
  progress: ColumnType<JobProgress | null, never, string | null>;
  result: ColumnType<JobResult | null, never, string | null>;
  error: ColumnType<JobFailure | null, never, string | null>;
  attempt_count: ColumnType<number, never, number | ReturnType<typeof sql>>;
  worker: ColumnType<string, never, string>;
  lease_until: ColumnType<Date | null, never, Date | null>;
  start_time: ColumnType<Date | null, never, Date | null | ReturnType<typeof sql>>;
  end_time: ColumnType<Date | null, never, Date | null | ReturnType<typeof sql>>;
  cancel_reason: ColumnType<string, never, string>;
  adapter_version: ColumnType<string, never, string>;
  evaluation_run: ColumnType<string, never, string>;
  training_ms: ColumnType<string, never, number | ReturnType<typeof sql>>;
  /** The spec's priority (generated from it): the claim's order within a tenant. */
  priority: ColumnType<number, never, never>;
  /** The GPUs the job asks for (generated from the spec's compute): 0 for a CPU job. */
  gpu_count: ColumnType<number, never, never>;
}

export interface CheckpointsTable {
  tenant: string;
  job_id: string;
  step: number;
  epoch: number;
  loss: number | null;
  eval_loss: number | null;
  artifact_digest: string;
  size_bytes: ColumnType<string, number, never>;
  create_time: Generated<Date>;
}

export interface TrainerTables {
  jobs: JobsTable;
  checkpoints: CheckpointsTable;
}

export type JobRow = Selectable<JobsTable>;
export type CheckpointRow = Selectable<CheckpointsTable>;
