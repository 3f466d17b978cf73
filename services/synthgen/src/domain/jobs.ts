import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { AppError, badFilter, canonicalJson, checkRequestId, checkSameRequest, checkText, costOf, enqueueEvents, labelFilterTerm, notFound, paginate, parseNestedName, quoteFilterValue, readFilter, resourceName, watchResource, type Prices } from "@lathe/kit";
import { chatRoles } from "@lathe/kit";
import {
  GenerationJob,
  GenerationJob_State,
  ReviewItem,
  ReviewItem_State,
  type ApproveReviewItemRequest,
  type CreateGenerationJobRequest,
  type ListReviewItemsRequest,
} from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { sql, type Kysely, type Selectable, type Transaction } from "kysely";
import type { ExamplesTable, JobState, JobsTable, SynthgenTables, Turn } from "../db/migrations.js";
import { generationJobFailed } from "../events.js";
import { checkJobId, jobSpecOf, parseJobName, priceOf, turnsOf } from "./spec.js";

export const schema = "synthgen";
const source = "synthgen";
export type JobRow = Selectable<JobsTable>;
export type ExampleRow = Selectable<ExamplesTable>;

const states: Record<JobState, GenerationJob_State> = {
  QUEUED: GenerationJob_State.STATE_QUEUED,
  RUNNING: GenerationJob_State.STATE_RUNNING,
  SUCCEEDED: GenerationJob_State.STATE_SUCCEEDED,
  FAILED: GenerationJob_State.STATE_FAILED,
  CANCELLED: GenerationJob_State.STATE_CANCELLED,
};
const reviewStates = { PENDING: ReviewItem_State.STATE_PENDING, APPROVED: ReviewItem_State.STATE_APPROVED, REJECTED: ReviewItem_State.STATE_REJECTED } as const;
export const terminal = (s: JobState) => s === "SUCCEEDED" || s === "FAILED" || s === "CANCELLED";

const toExample = (turns: Turn[]) => ({ messages: turns.map((t) => ({ role: chatRoles.value(t.role)!, content: t.content })) });

/** What a job has done so far, read from its requests and examples. */
export interface Counts {
  requests: number;
  promptTokens: number;
  completionTokens: number;
  generated: number;
  accepted: number;
  failedCheck: number;
  duplicate: number;
  rejections: Record<string, number>;
  review: { total: number; pending: number; approved: number; rejected: number };
}

/** Reasons that count as duplicates; the rest are failed checks. */
const DUPLICATE = /^duplicate_/;

/** A job's counts from its stored requests and examples. */
export async function countsOf(db: Kysely<SynthgenTables> | Transaction<SynthgenTables>, tenant: string, jobId: string): Promise<Counts> {
  const t = db.withSchema(schema);
  const req = await t
    .selectFrom("requests")
    .select([sql<number>`count(*)`.as("n"), sql<number>`coalesce(sum(prompt_tokens), 0)`.as("p"), sql<number>`coalesce(sum(completion_tokens), 0)`.as("c")])
    .where("tenant", "=", tenant)
    .where("job_id", "=", jobId)
    .executeTakeFirstOrThrow();
  const ex = await t.selectFrom("examples").select(["rejection", "review", sql<number>`count(*)`.as("n")]).where("tenant", "=", tenant).where("job_id", "=", jobId).groupBy(["rejection", "review"]).execute();
  const c: Counts = { requests: Number(req.n), promptTokens: Number(req.p), completionTokens: Number(req.c), generated: 0, accepted: 0, failedCheck: 0, duplicate: 0, rejections: {}, review: { total: 0, pending: 0, approved: 0, rejected: 0 } };
  for (const r of ex) {
    const n = Number(r.n);
    c.generated += n;
    if (r.rejection === null) {
      c.accepted += n;
      if (r.review !== null) {
        c.review.total += n;
        c.review[r.review.toLowerCase() as "pending" | "approved" | "rejected"] += n;
      }
    } else {
      c.rejections[r.rejection] = (c.rejections[r.rejection] ?? 0) + n;
      if (DUPLICATE.test(r.rejection)) c.duplicate += n;
      else c.failedCheck += n;
    }
  }
  return c;
}

export function toJob(r: JobRow, c: Counts, prices: Prices | undefined): GenerationJob {
  const s = r.spec;
  const price = priceOf(prices, s.teacher.model);
  return GenerationJob.fromPartial({
    name: resourceName("generationJobs", r.job_id),
    displayName: s.displayName,
    labels: s.labels,
    createTime: r.create_time,
    updateTime: r.update_time,
    startTime: r.start_time ?? undefined,
    endTime: r.end_time ?? undefined,
    state: states[r.state],
    teacher: { baseUrl: s.teacher.baseUrl, model: s.teacher.model, apiKeySecret: s.teacher.apiKeySecret, maxConcurrentRequests: s.teacher.maxConcurrent, requestsPerMinute: s.teacher.requestsPerMinute },
    taskDescription: s.task,
    fewShotExamples: s.fewShot.map(toExample),
    targetCount: s.targetCount,
    generationParams: { temperature: s.generation.temperature, topP: s.generation.topP, maxTokens: s.generation.maxTokens, ...(s.generation.seed === null ? {} : { seed: s.generation.seed }), stop: [] },
    reviewSampleFraction: s.reviewFraction,
    seedDatasetVersion: s.seedDatasetVersion,
    maxTeacherRequests: s.maxRequests,
    maxTotalTokens: s.maxTotalTokens,
    ...(s.maxCost === null ? {} : { maxCost: s.maxCost }),
    progress: {
      teacherRequestCount: c.requests,
      generatedCount: c.generated,
      failedCheckCount: c.failedCheck,
      duplicateCount: c.duplicate,
      acceptedCount: c.accepted,
      reviewCount: c.review.total,
      reviewPendingCount: c.review.pending,
      reviewApprovedCount: c.review.approved,
      reviewRejectedCount: c.review.rejected,
      promptTokens: c.promptTokens,
      completionTokens: c.completionTokens,
      ...(price ? { cost: costOf(price, c.promptTokens, c.completionTokens) } : {}),
      rejections: Object.entries(c.rejections)
        .sort()
        .map(([reason, count]) => ({ reason, count })),
    },
    publishedDatasetVersion: r.published?.datasetVersion ?? "",
    error: r.error ?? undefined,
  });
}

function toItem(jobId: string, e: ExampleRow): ReviewItem {
  return ReviewItem.fromPartial({
    name: `${resourceName("generationJobs", jobId)}/reviewItems/${e.idx}`,
    createTime: e.create_time,
    updateTime: e.review_time ?? e.create_time,
    state: reviewStates[e.review!],
    example: toExample(e.corrected ?? e.example!),
    originalExample: e.corrected ? toExample(e.example!) : undefined,
    maxSeedSimilarity: e.max_seed_similarity,
    reviewer: e.reviewer ?? "",
    note: e.note ?? "",
  });
}

type Term = { op: "=" | "!="; column: "state" | "seed_dataset_version"; value: string } | { op: "=" | "!="; column: "labels"; label: string; value: string };
const STATE_NAMES = Object.fromEntries(Object.entries(states).map(([k, v]) => [GenerationJob_State[v], k]));

/**
 * Generation jobs: created queued, listed newest first, watched, cancelled; their review items
 * decided; their accepted examples published (by `publish`, see publish.ts). The work is the
 * worker's.
 */
export class JobStore {
  readonly changes = new EventEmitter();

  constructor(
    private readonly db: Kysely<SynthgenTables>,
    readonly prices: Prices | undefined,
    private readonly onChange: (key: string) => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  async row(tenant: string, field: string, name: string, trx?: Transaction<SynthgenTables>): Promise<JobRow> {
    const id = parseJobName(field, name);
    let q = (trx ?? this.db).withSchema(schema).selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", id);
    if (trx) q = q.forUpdate();
    const r = await q.executeTakeFirst();
    if (!r) throw notFound("generation_job", name);
    return r;
  }

  async get(tenant: string, name: string): Promise<GenerationJob> {
    const r = await this.row(tenant, "name", name);
    return toJob(r, await countsOf(this.db, tenant, r.job_id), this.prices);
  }

  watch(tenant: string, name: string, signal: AbortSignal, pollMs: number): AsyncGenerator<GenerationJob> {
    return watchResource({
      get: () => this.get(tenant, name),
      key: `${tenant}/${parseJobName("name", name)}`,
      changes: this.changes,
      stamp: (j) => JSON.stringify([j.state, j.progress, j.publishedDatasetVersion]),
      done: (j) => j.state === GenerationJob_State.STATE_SUCCEEDED || j.state === GenerationJob_State.STATE_FAILED || j.state === GenerationJob_State.STATE_CANCELLED,
      signal,
      pollMs,
    });
  }

  async create(tenant: string, req: CreateGenerationJobRequest): Promise<GenerationJob> {
    const spec = jobSpecOf(req.generationJob, this.prices);
    const requestId = checkRequestId("request_id", req.requestId);
    const id = req.generationJobId === "" ? `gen-${randomBytes(6).toString("hex")}` : checkJobId("generation_job_id", req.generationJobId);
    const body = { generation_job_id: req.generationJobId, generation_job: JSON.parse(canonicalJson(spec)) as unknown };
    const replay = async () => {
      if (requestId === null) return undefined;
      const earlier = await this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
      if (!earlier) return undefined;
      checkSameRequest(requestId, resourceName("generationJobs", earlier.job_id), earlier.request_body ?? {}, body);
      return toJob(earlier, await countsOf(this.db, tenant, earlier.job_id), this.prices);
    };
    const replayed = await replay();
    if (replayed) return replayed;
    const inserted = await this.t
      .insertInto("jobs")
      .values({ tenant, job_id: id, display_name: spec.displayName, description: "", labels: JSON.stringify(spec.labels), request_id: requestId, request_body: requestId === null ? null : canonicalJson(body), spec: JSON.stringify(spec), state: "QUEUED" })
      .onConflict((oc) => oc.doNothing())
      .returningAll()
      .executeTakeFirst();
    if (!inserted) {
      const again = await replay();
      if (again) return again;
      throw new AppError("ALREADY_EXISTS", "GENERATION_JOB_ALREADY_EXISTS", `generationJobs/${id} already exists`, { name: resourceName("generationJobs", id) });
    }
    this.onChange(`${tenant}/${id}`);
    return toJob(inserted, await countsOf(this.db, tenant, id), this.prices);
  }

  async list(tenant: string, req: { pageSize: number; pageToken: string; filter: string }): Promise<{ generationJobs: GenerationJob[]; nextPageToken: string }> {
    const terms = readFilter(req.filter).map((t): Term => {
      if (t.field === "state") {
        const value = t.bare === undefined ? undefined : STATE_NAMES[t.bare];
        if (value === undefined) throw badFilter(`state takes an enum value name: ${Object.keys(STATE_NAMES).join(", ")}`);
        return { op: t.op, column: "state", value };
      }
      if (t.field === "seed_dataset_version") {
        if (t.quoted === undefined) throw badFilter("seed_dataset_version takes a string in double quotes");
        return { op: t.op, column: "seed_dataset_version", value: t.quoted };
      }
      if (t.field.startsWith("labels.")) return { op: t.op, column: "labels", ...labelFilterTerm(t) };
      throw badFilter(`cannot filter on ${quoteFilterValue(t.field)}; use state, seed_dataset_version or labels.<key>`);
    });
    const { rows, nextPageToken } = await paginate({
      scope: ["synthgen.jobs", tenant, req.filter],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant);
        for (const term of terms) {
          const value = term.column === "labels" ? sql<string>`labels ->> ${term.label}` : term.column === "seed_dataset_version" ? sql<string>`spec ->> 'seedDatasetVersion'` : sql<string>`state`;
          q = term.op === "=" ? q.where(value, "=", term.value) : q.where((eb) => eb.or([eb(value, "is", null), eb(value, "!=", term.value)]));
        }
        if (after) q = q.where("seq", "<", after.seq);
        return q.orderBy("seq", "desc").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { generationJobs: await Promise.all(rows.map(async (r) => toJob(r, await countsOf(this.db, tenant, r.job_id), this.prices))), nextPageToken };
  }

  async cancel(tenant: string, name: string, reason: string): Promise<GenerationJob> {
    checkText("reason", reason, 2000);
    await this.db.transaction().execute(async (trx) => {
      const r = await this.row(tenant, "name", name, trx);
      if (terminal(r.state)) throw new AppError("FAILED_PRECONDITION", "GENERATION_JOB_FINISHED", `${name} already ended (${r.state.toLowerCase()})`, { name });
      await trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({ state: "CANCELLED", end_time: sql`now()`, update_time: sql`now()`, lease_owner: null, lease_until: null, error: JSON.stringify({ code: "CANCELLED", reason: "GENERATION_JOB_CANCELLED", message: reason || "cancelled" }) })
        .where("tenant", "=", tenant)
        .where("job_id", "=", r.job_id)
        .execute();
      const c = await countsOf(trx, tenant, r.job_id);
      await enqueueEvents(trx, schema, source, [{ def: generationJobFailed, tenant, subject: name, payload: { generationJob: name, error: { code: "CANCELLED", reason: "GENERATION_JOB_CANCELLED", message: reason || "cancelled", metadata: {} }, acceptedCount: c.accepted } }]);
    });
    this.onChange(`${tenant}/${parseJobName("name", name)}`);
    return this.get(tenant, name);
  }

  async reviewItems(tenant: string, req: ListReviewItemsRequest): Promise<{ reviewItems: ReviewItem[]; nextPageToken: string }> {
    const r = await this.row(tenant, "parent", req.parent);
    const want = req.state === ReviewItem_State.STATE_UNSPECIFIED ? undefined : (Object.entries(reviewStates).find(([, v]) => v === req.state)?.[0] as keyof typeof reviewStates | undefined);
    if (req.state !== ReviewItem_State.STATE_UNSPECIFIED && want === undefined) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", `state: ${req.state} is not a review item state`, { field: "state" });
    const { rows, nextPageToken } = await paginate({
      scope: ["synthgen.review", tenant, r.job_id, req.state],
      request: req,
      shape: { idx: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("examples").selectAll().where("tenant", "=", tenant).where("job_id", "=", r.job_id).where("review", "is not", null);
        if (want) q = q.where("review", "=", want);
        if (after) q = q.where("idx", ">", after.idx);
        return q.orderBy("idx").limit(limit).execute();
      },
      keyOf: (e) => ({ idx: e.idx }),
    });
    return { reviewItems: rows.map((e) => toItem(r.job_id, e)), nextPageToken };
  }

  /** Approves or rejects a review item (again, until the job is published); `reviewer` is the caller. */
  async decide(tenant: string, name: string, decision: { approve: true; corrected: ApproveReviewItemRequest["correctedExample"]; note: string } | { approve: false; note: string }, reviewer: string): Promise<ReviewItem> {
    const [jobId, item] = parseNestedName("name", name, ["generationJobs", "reviewItems"]) as [string, string];
    if (!/^[0-9]{1,9}$/.test(item)) throw new AppError("INVALID_ARGUMENT", "INVALID_FIELD", "name: the review item id is a number", { field: "name" });
    checkText(decision.approve ? "note" : "reason", decision.note, 2000);
    const corrected = decision.approve && decision.corrected ? turnsOf("corrected_example", decision.corrected) : null;
    const row = await this.db.transaction().execute(async (trx) => {
      const job = await this.row(tenant, "name", resourceName("generationJobs", jobId), trx);
      if (job.published) throw new AppError("FAILED_PRECONDITION", "GENERATION_JOB_PUBLISHED", `${resourceName("generationJobs", jobId)} is published; its review is closed`, { name });
      const updated = await trx
        .withSchema(schema)
        .updateTable("examples")
        .set({ review: decision.approve ? "APPROVED" : "REJECTED", corrected: corrected ? JSON.stringify(corrected) : null, note: decision.note || null, reviewer, review_time: sql`now()` })
        .where("tenant", "=", tenant)
        .where("job_id", "=", jobId)
        .where("idx", "=", Number(item))
        .where("review", "is not", null)
        .returningAll()
        .executeTakeFirst();
      if (!updated) throw notFound("review_item", name);
      return updated;
    });
    this.onChange(`${tenant}/${jobId}`);
    return toItem(jobId, row);
  }
}
