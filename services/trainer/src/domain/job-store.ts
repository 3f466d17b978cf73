import { EventEmitter } from "node:events";
import { AppError, checkSameRequest, enqueueEvents, notFound, paginate, parseName, resourceId, type NewEvent } from "@lathe/kit";
import { sql, type Kysely, type Transaction } from "kysely";
import { FineTuningEstimate, FineTuningJob_State, type Checkpoint, type FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import { schema, type CheckpointRow, type JobRow, type JobState, type MetricsRow, type TrainerTables } from "../db/tables.js";
import { fineTuningJobCancelled, fineTuningJobQueued } from "../events.js";
import { checkpointName, jobCollection, jobName, methodEnum, states, toCheckpoint, toJob } from "./encode.js";
import { parseFilter } from "./filter.js";
import type { StoredSpec } from "./stored-spec.js";

const source = "trainer";

/** Puts the trainer's events in its outbox, in the transaction of the change they tell of. */
export async function recordEvents(trx: Transaction<TrainerTables>, list: NewEvent<{ meta?: EventMeta | undefined }>[]): Promise<void> {
  await enqueueEvents(trx, schema, source, list);
}

/** The newest checkpoint of a job, if it has one. */
export async function lastCheckpoint(db: Kysely<TrainerTables> | Transaction<TrainerTables>, tenant: string, jobId: string): Promise<CheckpointRow | undefined> {
  return db.withSchema(schema).selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).orderBy("step", "desc").limit(1).executeTakeFirst();
}

/** The job a repeated request id made, once the retry is known to be the same request (AIP-155). */
function replayed(row: JobRow, requestId: string, request: Record<string, unknown>): FineTuningJob {
  // A job made before requests were kept can only be matched by its id, as it was then.
  if (row.request !== null) checkSameRequest(requestId, jobName(row.job_id), row.request, request);
  return toJob(row);
}

/** Fine-tuning jobs and their checkpoints, always within one tenant: what the API reads and writes (the worker's side is JobLeases). */
export class JobStore {
  /** Emits `changed` with `tenant/job_id` after every committed change made in this process. */
  readonly changes = new EventEmitter().setMaxListeners(0);

  constructor(
    private readonly db: Kysely<TrainerTables>,
    private readonly onEvents: () => void,
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  /** A change to the job was committed: tells watchers in this process, and with `events` the outbox relay. */
  changed(tenant: string, id: string, events: boolean): void {
    if (events) this.onEvents();
    this.changes.emit("changed", `${tenant}/${id}`);
  }

  /**
   * A repeated request id: the job it created, or null. REQUEST_ID_REUSED (naming the first field
   * that differs) when `request` is not the request that made it.
   */
  async byRequestId(tenant: string, requestId: string | null, request: Record<string, unknown>): Promise<FineTuningJob | null> {
    if (requestId === null) return null;
    const row = await this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
    return row ? replayed(row, requestId, request) : null;
  }

  /** Queues a job and its `fine_tuning_job_queued` event in one transaction; `request` is kept to check retries. */
  async create(tenant: string, jobId: string, spec: StoredSpec, estimate: FineTuningEstimate, requestId: string | null, request: Record<string, unknown>): Promise<FineTuningJob> {
    const made = await this.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .withSchema(schema)
        .insertInto("jobs")
        .values({ tenant, job_id: jobId, display_name: spec.displayName || jobId, description: "", labels: JSON.stringify(spec.labels), request_id: requestId, request: JSON.stringify(request), spec: JSON.stringify(spec), estimate: JSON.stringify(FineTuningEstimate.toJSON(estimate)), state: "QUEUED" })
        .onConflict((oc) => oc.doNothing())
        .returningAll()
        .executeTakeFirst();
      if (!inserted) {
        const earlier = requestId === null ? undefined : await trx.withSchema(schema).selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("request_id", "=", requestId).executeTakeFirst();
        if (earlier) return { row: earlier, fresh: false };
        throw new AppError("ALREADY_EXISTS", "FINE_TUNING_JOB_ALREADY_EXISTS", `${jobName(jobId)} already exists`, { name: jobName(jobId) });
      }
      await recordEvents(trx, [
        {
          def: fineTuningJobQueued,
          tenant,
          subject: jobName(jobId),
          payload: { fineTuningJob: jobName(jobId), baseModel: spec.baseModel, trainDatasetVersion: spec.trainDatasetVersion, evalDatasetVersion: spec.evalDatasetVersion, method: methodEnum(spec.method), totalSteps: estimate.totalSteps, hardware: spec.compute.hardware },
        },
      ]);
      return { row: inserted, fresh: true };
    });
    // A concurrent call with the same request id made the job first.
    if (!made.fresh) return replayed(made.row, requestId!, request);
    this.changed(tenant, made.row.job_id, true);
    return toJob(made.row);
  }

  async row(tenant: string, name: string, field = "name"): Promise<JobRow> {
    const id = parseName(field, name, jobCollection);
    const row = await this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", id).executeTakeFirst();
    if (!row) throw notFound("fine_tuning_job", name);
    return row;
  }

  async get(tenant: string, name: string): Promise<FineTuningJob> {
    return toJob(await this.row(tenant, name));
  }

  /** Newest first. */
  async list(tenant: string, req: { pageSize: number; pageToken: string; filter: string }): Promise<{ fineTuningJobs: FineTuningJob[]; nextPageToken: string }> {
    const terms = parseFilter(req.filter);
    const { rows, nextPageToken } = await paginate({
      scope: ["trainer.jobs", tenant, req.filter],
      request: req,
      shape: { seq: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant);
        if (after) q = q.where("seq", "<", String(after.seq));
        for (const term of terms) {
          const op = term.op === "=" ? "=" : "<>";
          if (term.column === "state") q = q.where("state", op, term.value as JobState);
          else if (term.column === "labels") q = q.where(sql<string>`coalesce(labels->>${term.label!}, '')`, op, term.value);
          else q = q.where(sql<string>`spec->>${term.column}`, op, term.value);
        }
        return q.orderBy("seq", "desc").limit(limit).execute();
      },
      keyOf: (r) => ({ seq: Number(r.seq) }),
    });
    return { fineTuningJobs: rows.map(toJob), nextPageToken };
  }

  /** Stops a queued or running job; a running worker notices at its next step and stops. */
  async cancel(tenant: string, name: string, reason: string): Promise<FineTuningJob> {
    const current = await this.row(tenant, name);
    const row = await this.db.transaction().execute(async (trx) => {
      const updated = await trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({ state: "CANCELLED", cancel_reason: reason, end_time: sql`now()`, update_time: sql`now()`, lease_until: null })
        .where("tenant", "=", tenant)
        .where("job_id", "=", current.job_id)
        .where("state", "in", ["QUEUED", "RUNNING"])
        .returningAll()
        .executeTakeFirst();
      if (!updated) return undefined;
      const last = await lastCheckpoint(trx, tenant, current.job_id);
      await recordEvents(trx, [{ def: fineTuningJobCancelled, tenant, subject: name, payload: { fineTuningJob: name, reason, step: updated.progress?.step ?? 0, lastCheckpoint: last ? checkpointName(current.job_id, last.step) : "" } }]);
      return updated;
    });
    if (!row) {
      const now = await this.row(tenant, name);
      throw new AppError("FAILED_PRECONDITION", "FINE_TUNING_JOB_FINISHED", `${name} is ${FineTuningJob_State[states[now.state]]}, and only a queued or running job can be cancelled`, { name });
    }
    this.changed(tenant, row.job_id, true);
    return toJob(row);
  }

  async checkpoints(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ checkpoints: Checkpoint[]; nextPageToken: string }> {
    const job = await this.row(tenant, req.parent, "parent");
    const { rows, nextPageToken } = await paginate({
      scope: ["trainer.checkpoints", tenant, req.parent],
      request: req,
      shape: { step: "int" },
      fetch: (after, limit) => {
        let q = this.t.selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", job.job_id);
        if (after) q = q.where("step", ">", after.step);
        return q.orderBy("step").limit(limit).execute();
      },
      keyOf: (r) => ({ step: r.step }),
    });
    return { checkpoints: rows.map(toCheckpoint), nextPageToken };
  }

  /** The registry made an adapter version from the job. */
  async setAdapterVersion(trx: Transaction<TrainerTables>, tenant: string, job: string, adapterVersion: string): Promise<void> {
    const id = resourceId(job, jobCollection);
    await trx.withSchema(schema).updateTable("jobs").set({ adapter_version: adapterVersion, update_time: sql`now()` }).where("tenant", "=", tenant).where("job_id", "=", id).execute();
  }

  /** A job's logged steps, by step. */
  async metricsRows(tenant: string, jobId: string): Promise<MetricsRow[]> {
    return this.t.selectFrom("metrics").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).orderBy("step").execute();
  }

  async checkpointRows(tenant: string, jobId: string): Promise<CheckpointRow[]> {
    return this.t.selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).orderBy("step").execute();
  }
}
