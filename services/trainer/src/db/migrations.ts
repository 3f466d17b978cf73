import { sql, type Kysely } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The trainer schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_jobs": async (db) => {
    // `spec` is what was asked (defaults applied) and the inputs it was pinned to; it never
    // changes. The rest is the job's life: state, the worker's lease, progress and outcome.
    await withResourceColumns(db.schema.createTable("jobs").addColumn("tenant", "text", (c) => c.notNull()).addColumn("job_id", "text", (c) => c.notNull()))
      .addColumn("spec", "jsonb", (c) => c.notNull())
      .addColumn("estimate", "jsonb", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("progress", "jsonb")
      .addColumn("result", "jsonb")
      .addColumn("error", "jsonb")
      .addColumn("attempt_count", "integer", (c) => c.notNull().defaultTo(0))
      .addColumn("worker", "text", (c) => c.notNull().defaultTo(""))
      .addColumn("lease_until", "timestamptz")
      .addColumn("start_time", "timestamptz")
      .addColumn("end_time", "timestamptz")
      .addColumn("cancel_reason", "text", (c) => c.notNull().defaultTo(""))
      .addColumn("adapter_version", "text", (c) => c.notNull().defaultTo(""))
      .addColumn("evaluation_run", "text", (c) => c.notNull().defaultTo(""))
      .addColumn("training_ms", "bigint", (c) => c.notNull().defaultTo(0))
      .addPrimaryKeyConstraint("jobs_pk", ["tenant", "job_id"])
      .addUniqueConstraint("jobs_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("jobs_list").on("jobs").columns(["tenant", "seq"]).execute();
    await db.schema.createIndex("jobs_runnable").on("jobs").columns(["state", "seq"]).execute();
    await db.schema
      .createTable("checkpoints")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("step", "integer", (c) => c.notNull())
      .addColumn("epoch", "double precision", (c) => c.notNull())
      .addColumn("loss", "double precision")
      .addColumn("eval_loss", "double precision")
      .addColumn("artifact_digest", "text", (c) => c.notNull())
      .addColumn("size_bytes", "bigint", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("checkpoints_pk", ["tenant", "job_id", "step"])
      .execute();
  },
  "0002_job_requests": async (db) => {
    // The request that made a job (canonical proto JSON), so a retry with its request_id is told
    // apart from the id's reuse for another request. Jobs made before have none (null).
    await db.schema.alterTable("jobs").addColumn("request", "jsonb").execute();
  },
  "0003_scheduling": async (db) => {
    // What the claim orders and limits by, kept in step with the spec it is read from (jobs made
    // before priorities and GPU jobs existed read as priority 0 and no GPU).
    await db.schema
      .alterTable("jobs")
      .addColumn("priority", "integer", (c) => c.notNull().generatedAlwaysAs(sql`coalesce((spec->>'priority')::integer, 0)`).stored())
      .execute();
    await db.schema
      .alterTable("jobs")
      .addColumn("gpu_count", "integer", (c) => c.notNull().generatedAlwaysAs(sql`coalesce((spec->'compute'->>'gpuCount')::integer, 0)`).stored())
      .execute();
    await db.schema.createIndex("jobs_queue").on("jobs").columns(["state", "priority", "seq"]).execute();
  },
  "0004_metrics": async (db) => {
    // Every logged step of a job (what GetFineTuningJobMetrics returns as rows, CSV or TensorBoard
    // events); a resumed attempt logs a step again over the first attempt's.
    await db.schema
      .createTable("metrics")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("step", "integer", (c) => c.notNull())
      .addColumn("epoch", "double precision", (c) => c.notNull())
      .addColumn("train_loss", "double precision", (c) => c.notNull())
      .addColumn("eval_loss", "double precision")
      .addColumn("learning_rate", "double precision", (c) => c.notNull())
      .addColumn("grad_norm", "double precision", (c) => c.notNull())
      .addColumn("tokens_per_second", "double precision", (c) => c.notNull())
      .addColumn("processed_tokens", "bigint", (c) => c.notNull())
      .addColumn("train_mean_token_accuracy", "double precision")
      .addColumn("eval_mean_token_accuracy", "double precision")
      .addColumn("log_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("metrics_pk", ["tenant", "job_id", "step"])
      .execute();
    // Checkpoints made before this read as unknown accuracy (null).
    await db.schema.alterTable("checkpoints").addColumn("mean_token_accuracy", "double precision").execute();
    await db.schema.alterTable("checkpoints").addColumn("eval_mean_token_accuracy", "double precision").execute();
    // The throughput each succeeded job measured, with the shape it is compared by: what refines
    // the estimates of later jobs. Installation-wide (a tenant's estimate may use another's
    // throughput, never its data).
    await db.schema
      .createTable("throughput")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("hardware", "text", (c) => c.notNull())
      .addColumn("gpu_count", "integer", (c) => c.notNull())
      .addColumn("method", "text", (c) => c.notNull())
      .addColumn("model_digest", "text", (c) => c.notNull())
      .addColumn("parameter_count", "bigint", (c) => c.notNull())
      .addColumn("max_seq_length", "integer", (c) => c.notNull())
      .addColumn("tokens_per_second", "double precision", (c) => c.notNull())
      .addColumn("end_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("throughput_pk", ["tenant", "job_id"])
      .execute();
    await db.schema.createIndex("throughput_shape").on("throughput").columns(["hardware", "method", "gpu_count", "end_time"]).execute();
  },
};
