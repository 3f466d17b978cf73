import { randomBytes } from "node:crypto";
import { AppError, asAppError, costOf, createClient, enqueueEvents, isRetryable, LeaseLost, PollingLoop, TableLease, readDatasetRows, resourceName, tenantMetadata, type Logger, type Prices } from "@lathe/kit";
import { DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { mulberry32, NearDuplicateIndex } from "@lathe/text";
import { sql, type Kysely } from "kysely";
import type { SynthgenTables, Turn } from "../db/migrations.js";
import { generationJobFailed, generationJobSucceeded } from "../events.js";
import { countsOf, schema, type JobRow } from "./jobs.js";
import { exampleIn, shotsFor, teacherMessages } from "./prompt.js";
import { conversationKey, datasetChecks } from "./quality.js";
import { priceOf } from "./spec.js";
import { exampleSchema, Teacher } from "./teacher.js";

export interface WorkerOptions {
  db: Kysely<SynthgenTables>;
  logger: Logger;
  apiKeys: Readonly<Record<string, string>>;
  peer: (s: "dataset") => string;
  prices: Prices | undefined;
  retry: { attempts: number; backoffMs: number };
  pollMs: number;
  leaseMs: number;
  onChange: (key: string) => void;
}


/** Where an example's text came from, for the duplicate it is: the seed set, the few-shot examples, or this job. */
type Origin = "seed" | "few_shot" | "generated";

/**
 * Works on generation jobs: claims one (queued, or running with an expired lease) and asks the
 * teacher for examples until `target_count` are accepted or a budget runs out (requests, tokens,
 * cost). Each answered request is stored before it is used, so a resumed job never pays for it
 * again (only requests in flight when a worker died are lost). Each example goes through the
 * dataset service's checks and is dropped as a duplicate when it nearly copies a seed row, a
 * few-shot example or an earlier accepted example (MinHash); accepted ones are sampled for review
 * with the job's seed.
 */
export class GenerationWorker {
  private readonly loop: PollingLoop;
  private readonly lease: TableLease<JobRow>;
  readonly owner = `synthgen-${randomBytes(6).toString("hex")}`;

  constructor(private readonly o: WorkerOptions) {
    this.lease = new TableLease<JobRow>({ db: o.db, schema, table: "jobs", id: "job_id", owner: this.owner, leaseMs: o.leaseMs });
    this.loop = new PollingLoop({ name: "generation worker", intervalMs: o.pollMs, logger: o.logger, tick: (signal) => this.tick(signal), retryMs: (n) => Math.min(30_000, o.pollMs * 2 ** n) });
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  notify(): void {
    this.loop.notify();
  }

  private get t() {
    return this.o.db.withSchema(schema);
  }

  private changed(r: JobRow): void {
    this.o.onChange(`${r.tenant}/${r.job_id}`);
  }

  /** Claims jobs and works on them; a stopped worker gives its job back at once, to be resumed. */
  private tick(signal: AbortSignal): Promise<void> {
    return this.lease.work(signal, {
      claimed: (r) => this.changed(r),
      run: (r) => this.run(r, signal),
      fail: (r, err) => this.end(r, err),
      // A teacher that stayed unreachable through every attempt ends the job (its accepted examples can still be published); the dataset service's outages are waited out.
      retry: (err) => isRetryable(err) && !(err instanceof AppError && err.reason === "TEACHER_UNREACHABLE"),
    });
  }

  /** Ends a job: SUCCEEDED with at least one accepted example, else FAILED with `err` (or the reason it stopped). */
  private async end(r: JobRow, err: unknown | undefined, why?: { reason: string; message: string }): Promise<void> {
    const name = resourceName("generationJobs", r.job_id);
    await this.o.db.transaction().execute(async (trx) => {
      const c = await countsOf(trx, r.tenant, r.job_id);
      const failure = err !== undefined ? asAppError(err) : c.accepted === 0 ? new AppError("FAILED_PRECONDITION", why?.reason ?? "NOTHING_ACCEPTED", why?.message ?? "no example was accepted") : undefined;
      if (failure?.code === "INTERNAL") this.o.logger.error({ err, job: r.job_id }, "generation job failed");
      const error = failure ? { code: failure.code, reason: failure.reason, message: failure.code === "INTERNAL" ? "the job failed; see the synthgen service's log" : failure.message } : null;
      const res = await trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({ state: error ? "FAILED" : "SUCCEEDED", error: error ? JSON.stringify(error) : null, end_time: sql`now()`, update_time: sql`now()`, lease_owner: null, lease_until: null })
        .where("tenant", "=", r.tenant)
        .where("job_id", "=", r.job_id)
        .where("lease_owner", "=", this.owner)
        .where("state", "=", "RUNNING")
        .executeTakeFirst();
      if (Number(res.numUpdatedRows) !== 1) return;
      await enqueueEvents(trx, schema, "synthgen", [
        error
          ? { def: generationJobFailed, tenant: r.tenant, subject: name, payload: { generationJob: name, error: { ...error, metadata: {} }, acceptedCount: c.accepted } }
          : { def: generationJobSucceeded, tenant: r.tenant, subject: name, payload: { generationJob: name, acceptedCount: c.accepted, reviewCount: c.review.total, reviewPendingCount: c.review.pending, seedDatasetVersion: r.spec.seedDatasetVersion, teacher: `${r.spec.teacher.model} at ${r.spec.teacher.baseUrl}` } },
      ]);
    });
    this.changed(r);
  }

  private async run(r: JobRow, signal: AbortSignal): Promise<void> {
    const s = r.spec;
    const md = tenantMetadata(this.o.apiKeys, r.tenant);
    const datasetAddress = this.o.peer("dataset");
    const seed = Number(BigInt.asUintN(32, BigInt(s.generation.seed ?? 42)));
    // The seed rows and few-shot examples a generated example must not copy, and the pool shown to the teacher.
    let seedRows: Turn[][] = [];
    if (s.seedDatasetVersion !== "") {
      const client = createClient(DatasetServiceClient, datasetAddress, { deadlineMs: 60_000 });
      try {
        seedRows = await readDatasetRows(client, md, s.seedDatasetVersion, "generation_job.seed_dataset_version");
      } finally {
        client.close();
      }
    }
    const pool = s.fewShot.length > 0 ? s.fewShot : seedRows;
    if (pool.length === 0) throw new AppError("FAILED_PRECONDITION", "NO_EXAMPLES_TO_SHOW", `${s.seedDatasetVersion} has no rows to show the teacher`, { field: "generation_job.seed_dataset_version" });
    const index = new NearDuplicateIndex();
    const origin: Origin[] = [];
    const exact = new Map<string, Origin>();
    const seedSigs: Uint32Array[] = [];
    const remember = (turns: Turn[], o: Origin) => {
      const key = conversationKey(turns);
      if (!exact.has(key)) exact.set(key, o);
      index.add(origin.length, key);
      origin.push(o);
    };
    for (const row of seedRows) {
      remember(row, "seed");
      seedSigs.push(index.signature(conversationKey(row)));
    }
    for (const row of s.fewShot) remember(row, "few_shot");
    const stored = await this.t.selectFrom("examples").select(["idx", "example", "rejection"]).where("tenant", "=", r.tenant).where("job_id", "=", r.job_id).orderBy("idx").execute();
    for (const e of stored) if (e.rejection === null && e.example) remember(e.example, "generated");
    const processed = new Set(stored.map((e) => e.idx));
    const price = priceOf(this.o.prices, s.teacher.model);
    // The answer's shape: the pool's (a system message or not), as long as the length checks ask (their defaults, 20 and 50 characters, where unset).
    const checks = s.checkOptions as { promptMinChars?: number; answerMinChars?: number };
    const schemaOf = exampleSchema(pool.some((e) => e[0]?.role === "system"), (checks.promptMinChars ?? 20) + 1, (checks.answerMinChars ?? 50) + 1, s.generation.maxTokens);
    const teacher = new Teacher(s.teacher, this.o.retry, schemaOf);

    /** Checks and stores the example of answered request `n`. */
    const process = async (n: number, content: string, refusal?: string) => {
      const parsed = refusal === undefined ? exampleIn(content) : { error: `the teacher could not answer in the example's shape: ${refusal}` };
      let row: { example: string | null; rejection: string | null; detail: string | null; max_seed_similarity: number; review: "PENDING" | null };
      if ("error" in parsed) {
        row = { example: null, rejection: "malformed", detail: parsed.error, max_seed_similarity: 0, review: null };
      } else {
        const turns = parsed.turns;
        const failed = await datasetChecks(datasetAddress, md, turns, s.checkOptions);
        const key = conversationKey(turns);
        const sig = index.signature(key);
        const similarity = seedSigs.reduce((best, ss) => Math.max(best, agreement(ss, sig)), 0);
        let rejection: string | null = failed?.reason ?? null;
        let detail: string | null = failed?.detail ?? null;
        if (rejection === null) {
          const copied = exact.get(key) ?? origin[index.query(key)[0] ?? -1];
          if (copied !== undefined) {
            rejection = `duplicate_${copied}`;
            detail = `a near copy of ${copied === "seed" ? "a seed row" : copied === "few_shot" ? "a few-shot example" : "an earlier example"}`;
          }
        }
        if (rejection === null) remember(turns, "generated");
        // Sampled for review with the job's seed and the example's number: the same on a resumed job.
        const sampled = rejection === null && mulberry32((seed ^ Math.imul(n + 7, 0x85ebca6b)) >>> 0)() < s.reviewFraction;
        row = { example: JSON.stringify(turns), rejection, detail, max_seed_similarity: similarity, review: sampled ? "PENDING" : null };
      }
      await this.t.insertInto("examples").values({ tenant: r.tenant, job_id: r.job_id, idx: n, ...row }).onConflict((oc) => oc.doNothing()).execute();
      processed.add(n);
      this.changed(r);
    };

    // Answers stored before a restart but not yet checked are checked now, without asking again.
    for (const q of await this.t.selectFrom("requests").select(["idx", "content"]).where("tenant", "=", r.tenant).where("job_id", "=", r.job_id).orderBy("idx").execute()) {
      if (!processed.has(q.idx)) await process(q.idx, q.content);
    }

    let next = (await this.t.selectFrom("requests").select(sql<number | null>`max(idx)`.as("m")).where("tenant", "=", r.tenant).where("job_id", "=", r.job_id).executeTakeFirst())?.m ?? -1;
    next = Number(next) + 1;
    let stop: { reason: string; message: string } | undefined;
    // Requests sent and not yet stored: counted as accepted-to-be, so the job does not overshoot its target.
    let inFlight = 0;
    let sinceBeat = Date.now();
    /** Whether another request may be sent now: the target not met, no budget spent. */
    const more = async (): Promise<boolean> => {
      if (stop) return false;
      const c = await countsOf(this.o.db, r.tenant, r.job_id);
      if (c.accepted + inFlight >= s.targetCount) return false;
      const asked = Math.max(next, c.requests);
      if (asked >= s.maxRequests) stop = { reason: "REQUEST_BUDGET_SPENT", message: `the teacher was asked ${asked} times (max_teacher_requests) and no example was accepted` };
      else if (s.maxTotalTokens > 0 && c.promptTokens + c.completionTokens >= s.maxTotalTokens) stop = { reason: "TOKEN_BUDGET_SPENT", message: `${c.promptTokens + c.completionTokens} tokens were spent (max_total_tokens ${s.maxTotalTokens}) and no example was accepted` };
      else if (s.maxCost !== null && price && costOf(price, c.promptTokens, c.completionTokens) >= s.maxCost) stop = { reason: "COST_BUDGET_SPENT", message: `the cost budget (max_cost ${s.maxCost}) was spent and no example was accepted` };
      return stop === undefined;
    };
    const work = async () => {
      while (await more()) {
        if (signal.aborted) throw new LeaseLost();
        if (Date.now() - sinceBeat > this.o.leaseMs / 3) {
          sinceBeat = Date.now();
          if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
        }
        const n = next++;
        inFlight++;
        try {
          let answer;
          try {
            // A seed of its own per request (the job's plus its number): reproducible, yet a deterministic teacher does not repeat itself.
            answer = await teacher.ask(teacherMessages(s.task, shotsFor(pool, n, seed)), { ...s.generation, seed: s.generation.seed === null ? null : s.generation.seed + n }, signal);
          } catch (err) {
            if (signal.aborted) throw new LeaseLost();
            throw err;
          }
          // Paid for: stored before anything else can fail.
          await this.t.insertInto("requests").values({ tenant: r.tenant, job_id: r.job_id, idx: n, content: answer.content.replaceAll("\u0000", "\ufffd"), prompt_tokens: answer.promptTokens, completion_tokens: answer.completionTokens }).execute();
          await process(n, answer.refusal === undefined ? answer.content.replaceAll("\u0000", "\ufffd") : "", answer.refusal);
        } finally {
          inFlight--;
        }
      }
    };
    await Promise.all(Array.from({ length: s.teacher.maxConcurrent }, work));
    if (!(await this.lease.heartbeat(r))) throw new LeaseLost();
    await this.end(r, undefined, stop);
  }
}

/** The share of equal positions of two MinHash signatures: the estimated Jaccard similarity. */
function agreement(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return a.length === 0 ? 0 : same / a.length;
}
