import { sql, type ColumnType, type Generated, type Kysely } from "kysely";
import { eventsMigration, withResourceColumns } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The synthgen schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_jobs": async (db) => {
    await withResourceColumns(db.schema.createTable("jobs").addColumn("tenant", "text", (c) => c.notNull()).addColumn("job_id", "text", (c) => c.notNull()))
      .addColumn("request_body", "jsonb")
      .addColumn("spec", "jsonb", (c) => c.notNull())
      .addColumn("state", "text", (c) => c.notNull())
      .addColumn("error", "jsonb")
      .addColumn("start_time", "timestamptz")
      .addColumn("end_time", "timestamptz")
      .addColumn("lease_owner", "text")
      .addColumn("lease_until", "timestamptz")
      .addColumn("published", "jsonb")
      .addPrimaryKeyConstraint("jobs_pk", ["tenant", "job_id"])
      .addUniqueConstraint("jobs_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("jobs_list").on("jobs").columns(["tenant", "seq"]).execute();
    // Every answered teacher request, written before its examples are used: a resumed job never
    // pays for a request again, and the tokens spent are the sum of these rows.
    await db.schema
      .createTable("requests")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("content", "text", (c) => c.notNull())
      .addColumn("prompt_tokens", "integer", (c) => c.notNull())
      .addColumn("completion_tokens", "integer", (c) => c.notNull())
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("requests_pk", ["tenant", "job_id", "idx"])
      .execute();
    // Each generated example and its fate; accepted ones may be sampled for review.
    await db.schema
      .createTable("examples")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("job_id", "text", (c) => c.notNull())
      .addColumn("idx", "integer", (c) => c.notNull())
      .addColumn("example", "jsonb")
      .addColumn("rejection", "text")
      .addColumn("detail", "text")
      .addColumn("max_seed_similarity", "double precision", (c) => c.notNull().defaultTo(0))
      .addColumn("review", "text")
      .addColumn("corrected", "jsonb")
      .addColumn("reviewer", "text")
      .addColumn("note", "text")
      .addColumn("review_time", "timestamptz")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("examples_pk", ["tenant", "job_id", "idx"])
      .execute();
  },
};

export type JobState = "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED" | "CANCELLED";
export type ReviewState = "PENDING" | "APPROVED" | "REJECTED";
export type Turn = { role: "system" | "user" | "assistant"; content: string };

/** What the caller set. */
export interface JobSpec {
  displayName: string;
  labels: Record<string, string>;
  teacher: { baseUrl: string; model: string; apiKeySecret: string; maxConcurrent: number; requestsPerMinute: number };
  task: string;
  fewShot: Turn[][];
  targetCount: number;
  generation: { temperature: number; topP: number; maxTokens: number; seed: number | null };
  reviewFraction: number;
  seedDatasetVersion: string;
  /** proto JSON of CheckOptions, passed to the dataset service's checks. */
  checkOptions: unknown;
  maxRequests: number;
  maxTotalTokens: number;
  maxCost: number | null;
}

export interface JobsTable {
  tenant: string;
  job_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  request_body: ColumnType<unknown, string | null, string | null>;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
  spec: ColumnType<JobSpec, string, string>;
  state: JobState;
  error: ColumnType<{ code: string; reason: string; message: string } | null, string | null, string | null>;
  start_time: Date | null;
  end_time: Date | null;
  lease_owner: string | null;
  lease_until: Date | null;
  published: ColumnType<{ datasetVersion: string; exampleCount: number; requestId: string | null; request: unknown } | null, string | null, string | null>;
}

export interface RequestsTable {
  tenant: string;
  job_id: string;
  idx: number;
  content: string;
  prompt_tokens: number;
  completion_tokens: number;
  create_time: Generated<Date>;
}

export interface ExamplesTable {
  tenant: string;
  job_id: string;
  idx: number;
  example: ColumnType<Turn[] | null, string | null, string | null>;
  rejection: string | null;
  detail: string | null;
  max_seed_similarity: Generated<number>;
  review: ReviewState | null;
  corrected: ColumnType<Turn[] | null, string | null, string | null>;
  reviewer: string | null;
  note: string | null;
  review_time: Date | null;
  create_time: Generated<Date>;
}

export interface SynthgenTables {
  jobs: JobsTable;
  requests: RequestsTable;
  examples: ExamplesTable;
}
