import { sql, type ColumnType, type Generated, type Kysely } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The gateway schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_deployments": async (db) => {
    // `spec` holds what the caller set (DeploymentSpec); `served` what the rollout resolved
    // (each adapter's version now); `generation` counts spec and alias changes, so a rollout
    // that finishes after a newer change does not mark the deployment ready.
    await withResourceColumns(
      db.schema.createTable("deployments").addColumn("tenant", "text", (c) => c.notNull()).addColumn("deployment_id", "text", (c) => c.notNull()),
    )
      .addColumn("request_body", "jsonb")
      .addColumn("served_model_name", "text", (c) => c.notNull())
      .addColumn("spec", "jsonb", (c) => c.notNull())
      .addColumn("served", "jsonb", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("error", "jsonb")
      .addColumn("generation", "integer", (c) => c.notNull().defaultTo(1))
      .addColumn("rolled_out", "integer", (c) => c.notNull().defaultTo(0))
      .addPrimaryKeyConstraint("deployments_pk", ["tenant", "deployment_id"])
      .addUniqueConstraint("deployments_served_model_name", ["tenant", "served_model_name"])
      .addUniqueConstraint("deployments_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("deployments_list").on("deployments").columns(["tenant", "seq"]).execute();
  },
  "0002_openai_fine_tuning": async (db) => {
    // OpenAI's fine-tuning API (docs/openai-fine-tuning.md): what has no home in Lathe's own
    // services. A `fine-tune` file is a dataset (its id the file's) whose one version holds the
    // rows; the uploaded bytes are kept as an artifact for GET /v1/files/{id}/content. A job is
    // a trainer job of the same id; its OpenAI request, events and results file live here.
    await db.schema
      .createTable("openai_files")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("file_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("purpose", "text", (c) => c.notNull())
      .addColumn("filename", "text", (c) => c.notNull())
      .addColumn("bytes", "bigint", (c) => c.notNull())
      .addColumn("content_digest", "text", (c) => c.notNull())
      .addColumn("dataset_version", "text")
      .addColumn("fine_tuning_job", "text")
      .addColumn("status", "text", (c) => c.notNull())
      .addColumn("status_details", "text")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("openai_files_pk", ["tenant", "file_id"])
      .execute();
    await db.schema.createIndex("openai_files_list").on("openai_files").columns(["tenant", "seq"]).execute();
    await db.schema
      .createTable("openai_jobs")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("model", "text", (c) => c.notNull())
      .addColumn("training_file", "text", (c) => c.notNull())
      .addColumn("validation_file", "text")
      .addColumn("suffix", "text")
      .addColumn("seed", "bigint", (c) => c.notNull())
      .addColumn("metadata", "jsonb")
      .addColumn("request", "jsonb", (c) => c.notNull())
      .addColumn("fine_tuned_model", "text", (c) => c.notNull())
      .addColumn("trainer_created", "boolean", (c) => c.notNull().defaultTo(false))
      .addColumn("adapter_version", "text")
      .addColumn("result_file", "text")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("openai_jobs_pk", ["tenant", "job_id"])
      .addUniqueConstraint("openai_jobs_fine_tuned_model", ["tenant", "fine_tuned_model"])
      .execute();
    await db.schema.createIndex("openai_jobs_list").on("openai_jobs").columns(["tenant", "seq"]).execute();
    await db.schema
      .createTable("openai_job_events")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("event_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("level", "text", (c) => c.notNull())
      .addColumn("type", "text", (c) => c.notNull())
      .addColumn("message", "text", (c) => c.notNull())
      .addColumn("data", "jsonb", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("openai_job_events_pk", ["tenant", "event_id"])
      .execute();
    await db.schema.createIndex("openai_job_events_list").on("openai_job_events").columns(["tenant", "job_id", "seq"]).execute();
  },
};

export type DeploymentState = "CREATING" | "READY" | "UPDATING" | "FAILED";
export type BackendKind = "embedded" | "upstream";

/** One adapter of a deployment as the caller set it. */
export interface SpecAdapter {
  /** `models/{m}/adapters/{a}/aliases/{alias}` or `…/versions/{n}`. */
  source: string;
  servedName: string;
}

/** What the caller set: every field of a Deployment that is not the server's. */
export interface DeploymentSpec {
  displayName: string;
  labels: Record<string, string>;
  baseModel: string;
  servedModelName: string;
  adapters: SpecAdapter[];
  backend: BackendKind;
  upstreamBaseUrl: string;
  upstreamApiKeySecret: string;
  upstreamModel: string;
  replicas: number;
  /** 0: the default (4096, or the model's context when shorter). */
  contextLength: number;
}

/** What a rollout resolved: the base model's files and each adapter's version now. */
export interface ServedState {
  baseDigest: string;
  contextLength: number;
  adapters: { servedName: string; source: string; version: string; digest: string; rank: number; chatTemplateFingerprint: string }[];
}

export interface DeploymentsTable {
  tenant: string;
  deployment_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  request_body: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
  served_model_name: string;
  spec: ColumnType<DeploymentSpec, string, string>;
  served: ColumnType<ServedState, string, string>;
  state: DeploymentState;
  error: ColumnType<{ code: string; reason: string; message: string } | null, string | null, string | null>;
  generation: Generated<number>;
  rolled_out: Generated<number>;
}

/** An OpenAI file: `fine-tune` uploads (a dataset version) and jobs' results files. */
export interface OpenAiFilesTable {
  tenant: string;
  file_id: string;
  seq: Generated<string>;
  /** `fine-tune` or `fine-tune-results`. */
  purpose: string;
  filename: string;
  bytes: ColumnType<string, number, never>;
  /** The artifact (hex SHA-256) holding the file's bytes as they are downloaded. */
  content_digest: string;
  /** `datasets/{file}/versions/{v}`, for a `fine-tune` file. */
  dataset_version: string | null;
  /** The job whose results these are, for a `fine-tune-results` file. */
  fine_tuning_job: string | null;
  /** OpenAI's: `uploaded` (checks still running), `processed`, `error`. */
  status: string;
  status_details: string | null;
  create_time: Generated<Date>;
}

/** What the caller asked for, as OpenAI's fields (hyperparameters: "auto" or a number). */
export interface OpenAiJobRequest {
  hyperparameters: { n_epochs: number | "auto"; batch_size: number | "auto"; learning_rate_multiplier: number | "auto" };
  method: "supervised";
}

export interface OpenAiJobsTable {
  tenant: string;
  job_id: string;
  seq: Generated<string>;
  /** The base model as OpenAI names it (`tiny`). */
  model: string;
  training_file: string;
  validation_file: string | null;
  suffix: string | null;
  seed: ColumnType<string, number, never>;
  metadata: ColumnType<Record<string, string> | null, string | null, never>;
  request: ColumnType<OpenAiJobRequest, string, never>;
  fine_tuned_model: string;
  /** Whether the trainer accepted the job (before: OpenAI's `validating_files`). */
  trainer_created: Generated<boolean>;
  /** The registry's version of the trained adapter, once announced. */
  adapter_version: string | null;
  result_file: string | null;
  create_time: Generated<Date>;
}

export interface OpenAiJobEventsTable {
  tenant: string;
  job_id: string;
  event_id: string;
  seq: Generated<string>;
  level: "info" | "warn" | "error";
  type: "message" | "metrics";
  message: string;
  data: ColumnType<Record<string, unknown>, string, never>;
  create_time: Generated<Date>;
}

export interface GatewayTables {
  deployments: DeploymentsTable;
  openai_files: OpenAiFilesTable;
  openai_jobs: OpenAiJobsTable;
  openai_job_events: OpenAiJobEventsTable;
}
