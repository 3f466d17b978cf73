import { sql, type ColumnType, type Generated, type Kysely } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The evaluator schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_runs": async (db) => {
    // A run: its spec as the caller set it, its state and lease, and its results once aggregated.
    await withResourceColumns(db.schema.createTable("runs").addColumn("tenant", "text", (c) => c.notNull()).addColumn("run_id", "text", (c) => c.notNull()))
      .addColumn("request_body", "jsonb")
      .addColumn("spec", "jsonb", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("fine_tuning_job", "text", (c) => c.notNull())
      .addColumn("total", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("results", "jsonb")
      .addColumn("error", "jsonb")
      .addColumn("start_time", "timestamptz")
      .addColumn("end_time", "timestamptz")
      .addColumn("cancel_requested", "boolean", (c) => c.notNull().defaultTo(false))
      .addColumn("lease_owner", "text")
      .addColumn("lease_until", "timestamptz")
      .addPrimaryKeyConstraint("runs_pk", ["tenant", "run_id"])
      .addUniqueConstraint("runs_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("runs_list").on("runs").columns(["tenant", "seq"]).execute();
    await db.schema.createIndex("runs_state").on("runs").columns(["state", "seq"]).execute();
    // The examples a run evaluates, pinned when it starts: the prompt turns (few-shot turns
    // included, per side) and the reference answer.
    await db.schema
      .createTable("examples")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("run_id", "text", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("prompt", "jsonb", (c) => c.notNull())
      .addColumn("reference", "text", (c) => c.notNull())
      .addPrimaryKeyConstraint("examples_pk", ["tenant", "run_id", "idx"])
      .execute();
    // One model's answer to one example, with its scores: written once, so a resumed run
    // neither regenerates nor re-scores it.
    await db.schema
      .createTable("predictions")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("run_id", "text", (c) => c.notNull())
      .addColumn("side", "text", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("text", "text", (c) => c.notNull())
      .addColumn("finish_reason", "text", (c) => c.notNull())
      .addColumn("prompt_tokens", "integer", (c) => c.notNull())
      .addColumn("completion_tokens", "integer", (c) => c.notNull())
      .addColumn("latency_ms", "double precision", (c) => c.notNull())
      .addColumn("error", "text")
      .addColumn("scores", "jsonb", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("predictions_pk", ["tenant", "run_id", "side", "idx"])
      .execute();
  },
  "0002_reference_scores": async (db) => {
    // Teacher forcing of the reference answer under the side's model (mean token accuracy, eval
    // loss): stored with the answer, so a resumed run does not score it again. Null: not computed.
    await db.schema
      .alterTable("predictions")
      .addColumn("reference_loss", "double precision")
      .addColumn("reference_tokens", "integer")
      .addColumn("reference_correct", "integer")
      .addColumn("reference_truncated", "boolean")
      .execute();
  },
  "0003_judgments": async (db) => {
    // A judge's two replies on one example (the candidate shown first, then second): written
    // once, so a resumed run does not ask again.
    await db.schema
      .createTable("judgments")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("run_id", "text", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("first", "text", (c) => c.notNull())
      .addColumn("second", "text", (c) => c.notNull())
      .addColumn("verdict", "text", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("judgments_pk", ["tenant", "run_id", "idx"])
      .execute();
  },
  "0004_run_follow_up": async (db) => {
    // The fine-tuning job's follow-up a run was made from (proto JSON of FollowUp), repeated in
    // its evaluation_completed so the registry promotes and the gateway deploys as the job asked.
    await db.schema.alterTable("runs").addColumn("follow_up", "jsonb").execute();
    // The W3C trace headers of the call or event that made the run: its work continues that trace.
    await db.schema.alterTable("runs").addColumn("trace", "jsonb").execute();
  },
  "0005_pending_follow_ups": async (db) => {
    // A registered version whose job asked for an evaluation, noted in the transaction of its
    // adapter_version_created and turned into a run outside it (resolving the baseline asks the
    // registry, which must not wait on this service's open transaction).
    await db.schema
      .createTable("pending_follow_ups")
      .addColumn("event_id", "text", (c) => c.primaryKey())
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("event", "jsonb", (c) => c.notNull())
      .addColumn("trace", "jsonb")
      .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("last_error", "text")
      .execute();
  },
};

export type RunState = "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";
export type Side = "candidate" | "baseline";

/** A model as a run evaluates it. */
export interface ModelSpec {
  /** `models/{model}`. */
  model: string;
  /** An adapter version, or "" for the base alone. */
  adapterVersion: string;
  fewShot: { datasetVersion: string; shots: number; seed: number } | null;
}

/** The metric names a run computes (the proto's Metric, by name). */
export type MetricName = "rouge_l" | "bertscore" | "format_compliance" | "exact_match" | "mean_token_accuracy";

/** What the caller set. */
export interface RunSpec {
  displayName: string;
  labels: Record<string, string>;
  candidate: ModelSpec;
  baseline: ModelSpec | null;
  evalDatasetVersion: string;
  metrics: MetricName[];
  formatCheck: { kind: "regex" | "json" | "json_schema"; pattern: string; jsonSchema: string } | null;
  generation: { temperature: number; topP: number; maxTokens: number; seed: number; stop: string[] };
  maxExamples: number;
  bertscoreModel: string;
  /** A pairwise judge of candidate against baseline; null (or absent, in runs made before judges) for none. */
  judge?: { model: string; baseUrl: string; apiKeySecret: string; criteria: string } | null;
  bootstrapSamples: number;
  confidenceLevel: number;
  seed: number;
}

/** Aggregated results, written when a run succeeds (and as it goes, for progress). */
export interface RunResults {
  /** proto JSON of MetricValue[] / MetricDifference[] / ServingStats. */
  candidateResults: unknown[];
  baselineResults: unknown[];
  differences: unknown[];
  candidateServing: unknown;
  baselineServing: unknown;
  bertscoreModelDigest: string;
  bertscoreLayer: number;
  /** proto JSON of ReferenceLikelihood, when mean token accuracy was computed (absent in runs before it). */
  candidateLikelihood?: unknown;
  baselineLikelihood?: unknown;
  /** proto JSON of JudgeResult, when the run has a judge. */
  judgeResult?: unknown;
}

export interface RunsTable {
  tenant: string;
  run_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  request_body: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
  spec: ColumnType<RunSpec, string, string>;
  state: RunState;
  fine_tuning_job: string;
  total: Generated<number>;
  results: ColumnType<RunResults | null, string | null, string | null>;
  error: ColumnType<{ code: string; reason: string; message: string } | null, string | null, string | null>;
  start_time: Date | null;
  end_time: Date | null;
  cancel_requested: Generated<boolean>;
  follow_up: ColumnType<unknown, string | null | undefined, string | null>;
  trace: ColumnType<Record<string, string> | null, string | null | undefined, string | null>;
  lease_owner: string | null;
  lease_until: Date | null;
}

export interface ExamplesTable {
  tenant: string;
  run_id: string;
  idx: number;
  prompt: ColumnType<{ candidate: ChatTurn[]; baseline: ChatTurn[] | null }, string, string>;
  reference: string;
}

export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface PredictionsTable {
  tenant: string;
  run_id: string;
  side: Side;
  idx: number;
  text: string;
  finish_reason: string;
  prompt_tokens: number;
  completion_tokens: number;
  latency_ms: number;
  error: string | null;
  scores: ColumnType<Partial<Record<MetricName, number>>, string, string>;
  reference_loss: number | null;
  reference_tokens: number | null;
  reference_correct: number | null;
  reference_truncated: boolean | null;
  create_time: Generated<Date>;
}

export interface JudgmentsTable {
  tenant: string;
  run_id: string;
  idx: number;
  /** The judge's reply with the candidate's answer as A. */
  first: string;
  /** The judge's reply with the candidate's answer as B. */
  second: string;
  verdict: "candidate" | "baseline" | "tie";
  create_time: Generated<Date>;
}

export interface PendingFollowUpsTable {
  event_id: string;
  tenant: string;
  /** proto JSON of AdapterVersionCreated. */
  event: ColumnType<unknown, string, string>;
  trace: ColumnType<Record<string, string> | null, string | null, string | null>;
  attempts: Generated<number>;
  last_error: string | null;
}

export interface EvaluatorTables {
  pending_follow_ups: PendingFollowUpsTable;
  runs: RunsTable;
  examples: ExamplesTable;
  predictions: PredictionsTable;
  judgments: JudgmentsTable;
}
