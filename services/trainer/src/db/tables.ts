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
  /** The mean token accuracy of the logged steps (absent when they had no labels, or in progress stored before it). */
  meanTokenAccuracy?: number;
  /** The eval set's mean token accuracy with the latest eval loss. */
  evalMeanTokenAccuracy?: number;
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
  /** Absent in results stored before mean token accuracy was kept, or when unknown. */
  finalMeanTokenAccuracy?: number;
  finalEvalMeanTokenAccuracy?: number;
  /** The last attempt's measured throughput (tokens per second) and the tokens of the whole job; absent in older results. */
  tokensPerSecond?: number;
  processedTokens?: number;
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
  mean_token_accuracy: number | null;
  eval_mean_token_accuracy: number | null;
}

/** A logged step of a job. */
export interface MetricsTable {
  tenant: string;
  job_id: string;
  step: number;
  epoch: number;
  train_loss: number;
  eval_loss: number | null;
  learning_rate: number;
  grad_norm: number;
  tokens_per_second: number;
  processed_tokens: ColumnType<string, number, number>;
  train_mean_token_accuracy: number | null;
  eval_mean_token_accuracy: number | null;
  log_time: ColumnType<Date, Date | undefined, Date>;
}

/** The throughput a succeeded job measured, and its shape. */
export interface ThroughputTable {
  tenant: string;
  job_id: string;
  hardware: string;
  gpu_count: number;
  method: string;
  model_digest: string;
  parameter_count: ColumnType<string, number, number>;
  max_seq_length: number;
  tokens_per_second: number;
  end_time: Generated<Date>;
}

export interface TrainerTables {
  jobs: JobsTable;
  checkpoints: CheckpointsTable;
  metrics: MetricsTable;
  throughput: ThroughputTable;
}

export type JobRow = Selectable<JobsTable>;
export type CheckpointRow = Selectable<CheckpointsTable>;
export type MetricsRow = Selectable<MetricsTable>;
/** A logged step as the worker records it (the time is the database's). */
export type NewMetricsRow = Omit<MetricsRow, "tenant" | "job_id" | "log_time" | "processed_tokens"> & { processed_tokens: number };
