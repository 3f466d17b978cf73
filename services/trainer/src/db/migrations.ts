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
};
