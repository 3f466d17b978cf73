import { EventEmitter } from "node:events";
import { AppError, checkSameRequest, decodePageToken, encodePageToken, enqueueEvents, invalidArgument, notFound, pageSize, parseName, type NewEvent } from "@lathe/kit";
import { sql, type Kysely, type Transaction } from "kysely";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { FineTuningMethod, LoraConfig } from "@lathe/proto/lathe/type/v1/lora";
import {
  Checkpoint,
  ComputeBackend,
  FineTuningEstimate,
  FineTuningJob,
  FineTuningJob_State,
  LearningRateScheduler,
} from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import type { CheckpointRow, JobRow, JobState, TrainerTables } from "../db/migrations.js";
import { checkpointSaved, fineTuningJobCancelled, fineTuningJobFailed, fineTuningJobProgressed, fineTuningJobQueued, fineTuningJobStarted, fineTuningJobSucceeded } from "../events.js";
import { parseFilter } from "./filter.js";
import type { JobInputs, JobSpec } from "./spec.js";

export const schema = "trainer";
const source = "trainer";

/** A job's spec as stored: what was asked, and the inputs it was pinned to. */
export type StoredSpec = JobSpec & {
  inputs: JobInputs;
  /** The W3C trace headers of the create call: the worker's spans and events continue its trace. */
  trace?: Record<string, string>;
};

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

export interface JobFailure {
  code: string;
  reason: string;
  message: string;
  field?: string;
}

const states: Record<JobState, FineTuningJob_State> = {
  QUEUED: FineTuningJob_State.STATE_QUEUED,
  RUNNING: FineTuningJob_State.STATE_RUNNING,
  SUCCEEDED: FineTuningJob_State.STATE_SUCCEEDED,
  FAILED: FineTuningJob_State.STATE_FAILED,
  CANCELLED: FineTuningJob_State.STATE_CANCELLED,
};
export const terminal: readonly JobState[] = ["SUCCEEDED", "FAILED", "CANCELLED"];

/** The URI of a stored folder, as the registry reads it: `artifact:sha256:<hex>`. */
export const artifactUri = (digest: string) => `artifact:${digest}`;
const jobName = (id: string) => `fineTuningJobs/${id}`;
const checkpointName = (id: string, step: number) => `${jobName(id)}/checkpoints/step-${step}`;
const methodEnum = (m: JobSpec["method"]) => (m === "qlora" ? FineTuningMethod.FINE_TUNING_METHOD_QLORA : FineTuningMethod.FINE_TUNING_METHOD_LORA);
const schedulerEnum = { cosine: LearningRateScheduler.LEARNING_RATE_SCHEDULER_COSINE, linear: LearningRateScheduler.LEARNING_RATE_SCHEDULER_LINEAR, constant: LearningRateScheduler.LEARNING_RATE_SCHEDULER_CONSTANT };
const duration = (s: number) => ({ seconds: Math.max(0, Math.round(s)), nanos: 0 });

export function loraConfigOf(spec: JobSpec): LoraConfig {
  return LoraConfig.fromPartial({ r: spec.lora.r, loraAlpha: spec.lora.alpha, loraDropout: spec.lora.dropout, targetModules: spec.lora.targetModules, useRslora: spec.lora.useRslora });
}

/** The API form of a stored job. */
export function toJob(row: JobRow): FineTuningJob {
  const s = row.spec as StoredSpec;
  const p = row.progress;
  const r = row.result;
  return FineTuningJob.fromPartial({
    name: jobName(row.job_id),
    displayName: row.display_name,
    labels: row.labels,
    createTime: row.create_time,
    updateTime: row.update_time,
    startTime: row.start_time ?? undefined,
    endTime: row.end_time ?? undefined,
    state: states[row.state],
    baseModel: s.baseModel,
    trainDatasetVersion: s.trainDatasetVersion,
    evalDatasetVersion: s.evalDatasetVersion,
    method: methodEnum(s.method),
    loraConfig: loraConfigOf(s),
    trainingArguments: {
      numTrainEpochs: s.args.epochs,
      perDeviceTrainBatchSize: s.args.batchSize,
      gradientAccumulationSteps: s.args.gradAccum,
      learningRate: s.args.lr,
      lrSchedulerType: schedulerEnum[s.args.scheduler],
      warmupRatio: s.args.warmupRatio,
      maxSeqLength: s.args.maxSeqLength,
      packing: s.args.packing,
      gradientCheckpointing: s.args.gradientCheckpointing,
      seed: s.args.seed,
      weightDecay: s.args.weightDecay,
      maxGradNorm: s.args.maxGradNorm,
      loggingSteps: s.args.loggingSteps,
      evalSteps: 0,
      saveSteps: s.args.saveSteps,
    },
    compute: { backend: ComputeBackend.COMPUTE_BACKEND_CPU, gpuCount: 0, hardware: s.compute.hardware },
    followUp: FollowUp.fromJSON(s.followUp),
    estimate: FineTuningEstimate.fromJSON(row.estimate),
    progress: p
      ? {
          step: p.step,
          totalSteps: p.totalSteps,
          epoch: p.epoch,
          loss: p.loss,
          evalLoss: p.evalLoss,
          learningRate: p.learningRate,
          gradNorm: p.gradNorm,
          tokensPerSecond: p.tokensPerSecond,
          processedTokens: p.processedTokens,
          eta: duration(p.etaSeconds),
          updateTime: new Date(p.updateTime),
        }
      : undefined,
    result: r
      ? {
          adapterArtifactDigest: r.adapterArtifactDigest,
          adapterArtifactUri: r.adapterArtifactUri,
          checkpoint: r.checkpoint,
          bestCheckpoint: r.bestCheckpoint,
          chatTemplateFingerprint: s.inputs.chatTemplateFingerprint,
          finalLoss: r.finalLoss,
          finalEvalLoss: r.finalEvalLoss,
          trainableParameterCount: r.trainableParameterCount,
          trainingDuration: duration(Number(row.training_ms) / 1000),
        }
      : undefined,
    error: row.error ? { code: row.error.code, reason: row.error.reason, message: row.error.message, metadata: row.error.field ? { field: row.error.field } : {} } : undefined,
    attemptCount: row.attempt_count,
    worker: row.worker,
    adapterVersion: row.adapter_version,
    evaluationRun: row.evaluation_run,
    cancelReason: row.cancel_reason,
  });
}

function toCheckpoint(row: CheckpointRow): Checkpoint {
  return Checkpoint.fromPartial({
    name: checkpointName(row.job_id, row.step),
    createTime: row.create_time,
    step: row.step,
    epoch: row.epoch,
    loss: row.loss ?? 0,
    evalLoss: row.eval_loss ?? undefined,
    artifactDigest: row.artifact_digest,
    artifactUri: artifactUri(row.artifact_digest),
    sizeBytes: Number(row.size_bytes),
    resumable: true,
  });
}

/** The job a repeated request id made, once the retry is known to be the same request (AIP-155). */
function replayed(row: JobRow, requestId: string, request: Record<string, unknown>): FineTuningJob {
  // A job made before requests were kept can only be matched by its id, as it was then.
  if (row.request !== null) checkSameRequest(requestId, jobName(row.job_id), row.request, request);
  return toJob(row);
}

/** Fine-tuning jobs and their checkpoints, always within one tenant (workers aside). */
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

  private changed(tenant: string, id: string, events: boolean): void {
    if (events) this.onEvents();
    this.changes.emit("changed", `${tenant}/${id}`);
  }

  private async events(trx: Transaction<TrainerTables>, list: NewEvent<{ meta?: EventMeta | undefined }>[]): Promise<void> {
    await enqueueEvents(trx, schema, source, list);
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
      await this.events(trx, [
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
    const id = parseName(field, name, "fineTuningJobs");
    const row = await this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", id).executeTakeFirst();
    if (!row) throw notFound("fine_tuning_job", name);
    return row;
  }

  async get(tenant: string, name: string): Promise<FineTuningJob> {
    return toJob(await this.row(tenant, name));
  }

  /** Newest first. */
  async list(tenant: string, req: { pageSize: number; pageToken: string; filter: string }): Promise<{ fineTuningJobs: FineTuningJob[]; nextPageToken: string }> {
    const size = pageSize(req.pageSize);
    const terms = parseFilter(req.filter);
    const after = decodePageToken(["trainer.jobs", tenant, req.filter], req.pageToken, { seq: "int" });
    if (req.pageToken !== "" && !after) throw invalidArgument("page_token", "is not a token this service gave out");
    let q = this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant);
    if (after) q = q.where("seq", "<", String(after.seq));
    for (const term of terms) {
      const op = term.op === "=" ? "=" : "<>";
      if (term.column === "state") q = q.where("state", op, term.value as JobState);
      else if (term.column === "labels") q = q.where(sql<string>`coalesce(labels->>${term.label!}, '')`, op, term.value);
      else q = q.where(sql<string>`spec->>${term.column}`, op, term.value);
    }
    const rows = await q.orderBy("seq", "desc").limit(size + 1).execute();
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return { fineTuningJobs: page.map(toJob), nextPageToken: rows.length > size && last ? encodePageToken(["trainer.jobs", tenant, req.filter], { seq: Number(last.seq) }) : "" };
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
      const last = await this.lastCheckpoint(trx, tenant, current.job_id);
      await this.events(trx, [{ def: fineTuningJobCancelled, tenant, subject: name, payload: { fineTuningJob: name, reason, step: updated.progress?.step ?? 0, lastCheckpoint: last ? checkpointName(current.job_id, last.step) : "" } }]);
      return updated;
    });
    if (!row) {
      const now = await this.row(tenant, name);
      throw new AppError("FAILED_PRECONDITION", "FINE_TUNING_JOB_FINISHED", `${name} is ${FineTuningJob_State[states[now.state]]}, and only a queued or running job can be cancelled`, { name });
    }
    this.changed(tenant, row.job_id, true);
    return toJob(row);
  }

  private async lastCheckpoint(db: Kysely<TrainerTables> | Transaction<TrainerTables>, tenant: string, jobId: string): Promise<CheckpointRow | undefined> {
    return db.withSchema(schema).selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).orderBy("step", "desc").limit(1).executeTakeFirst();
  }

  async checkpoints(tenant: string, req: { parent: string; pageSize: number; pageToken: string }): Promise<{ checkpoints: Checkpoint[]; nextPageToken: string }> {
    const job = await this.row(tenant, req.parent, "parent");
    const size = pageSize(req.pageSize);
    const after = decodePageToken(["trainer.checkpoints", tenant, req.parent], req.pageToken, { step: "int" });
    let q = this.t.selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", job.job_id);
    if (after) q = q.where("step", ">", after.step);
    const rows = await q.orderBy("step").limit(size + 1).execute();
    const page = rows.slice(0, size);
    const last = page[page.length - 1];
    return { checkpoints: page.map(toCheckpoint), nextPageToken: rows.length > size && last ? encodePageToken(["trainer.checkpoints", tenant, req.parent], { step: last.step }) : "" };
  }

  // ---- The worker's side: claims with a lease, heartbeats, outcomes. Every write is guarded by
  // the claim (state RUNNING, this worker), so a cancelled or taken-over job is never overwritten.

  /** Claims the oldest queued job, or a running one whose worker's lease ran out. */
  async claim(worker: string, leaseMs: number): Promise<{ row: JobRow; resumeFrom: CheckpointRow | undefined } | undefined> {
    const claimed = await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      const next = await t
        .selectFrom("jobs")
        .select(["tenant", "job_id"])
        .where((eb) => eb.or([eb("state", "=", "QUEUED"), eb.and([eb("state", "=", "RUNNING"), eb("lease_until", "<", sql<Date>`now()`)])]))
        .orderBy("seq")
        .limit(1)
        .forUpdate()
        .skipLocked()
        .executeTakeFirst();
      if (!next) return undefined;
      const row = await t
        .updateTable("jobs")
        .set({ state: "RUNNING", worker, lease_until: sql`now() + ${`${leaseMs} milliseconds`}::interval` as never, attempt_count: sql`attempt_count + 1`, start_time: sql`coalesce(start_time, now())`, update_time: sql`now()` })
        .where("tenant", "=", next.tenant)
        .where("job_id", "=", next.job_id)
        .returningAll()
        .executeTakeFirstOrThrow();
      const resumeFrom = await this.lastCheckpoint(trx, row.tenant, row.job_id);
      const name = jobName(row.job_id);
      await this.events(trx, [
        {
          def: fineTuningJobStarted,
          tenant: row.tenant,
          subject: name,
          payload: { fineTuningJob: name, worker, attempt: row.attempt_count, resumedFromCheckpoint: resumeFrom ? checkpointName(row.job_id, resumeFrom.step) : "", totalSteps: (row.estimate as { totalSteps?: number }).totalSteps ?? 0 },
        },
      ]);
      return { row, resumeFrom };
    });
    if (claimed) this.changed(claimed.row.tenant, claimed.row.job_id, true);
    return claimed;
  }

  /**
   * Renews the lease; with progress (a logged step) also records it and publishes
   * `fine_tuning_job_progressed`. False when the job is no longer this worker's (cancelled, taken over).
   */
  async heartbeat(job: JobRow, worker: string, leaseMs: number, progress: JobProgress | null): Promise<boolean> {
    const held = await this.db.transaction().execute(async (trx) => {
      let q = trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({ lease_until: sql`now() + ${`${leaseMs} milliseconds`}::interval` as never })
        .where("tenant", "=", job.tenant)
        .where("job_id", "=", job.job_id)
        .where("state", "=", "RUNNING")
        .where("worker", "=", worker);
      if (progress) q = q.set({ progress: JSON.stringify(progress), update_time: sql`now()` });
      const updated = await q.returning("job_id").executeTakeFirst();
      if (!updated) return false;
      if (progress) {
        const name = jobName(job.job_id);
        await this.events(trx, [
          {
            def: fineTuningJobProgressed,
            tenant: job.tenant,
            subject: name,
            payload: { fineTuningJob: name, step: progress.step, totalSteps: progress.totalSteps, epoch: progress.epoch, loss: progress.loss, evalLoss: progress.evalLoss, learningRate: progress.learningRate, tokensPerSecond: progress.tokensPerSecond, eta: duration(progress.etaSeconds) },
          },
        ]);
      }
      return true;
    });
    if (held && progress) this.changed(job.tenant, job.job_id, true);
    return held;
  }

  /** Records a checkpoint stored in the artifact store; false when the job is no longer this worker's. */
  async checkpoint(job: JobRow, worker: string, c: { step: number; epoch: number; loss: number; evalLoss: number | null; digest: string; sizeBytes: number }): Promise<boolean> {
    const held = await this.db.transaction().execute(async (trx) => {
      const owned = await trx.withSchema(schema).selectFrom("jobs").select("job_id").where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).where("state", "=", "RUNNING").where("worker", "=", worker).forUpdate().executeTakeFirst();
      if (!owned) return false;
      await trx
        .withSchema(schema)
        .insertInto("checkpoints")
        .values({ tenant: job.tenant, job_id: job.job_id, step: c.step, epoch: c.epoch, loss: Number.isFinite(c.loss) ? c.loss : null, eval_loss: c.evalLoss, artifact_digest: c.digest, size_bytes: c.sizeBytes })
        .onConflict((oc) => oc.columns(["tenant", "job_id", "step"]).doUpdateSet({ artifact_digest: c.digest, eval_loss: c.evalLoss, epoch: c.epoch }))
        .execute();
      // An epoch's eval loss is measured after its last step was logged: the progress takes it here.
      await trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({
          update_time: sql`now()`,
          ...(c.evalLoss === null ? {} : { progress: sql`jsonb_set(progress, '{evalLoss}', to_jsonb(${c.evalLoss}::float8))` as never }),
        })
        .where("tenant", "=", job.tenant)
        .where("job_id", "=", job.job_id)
        .execute();
      const name = jobName(job.job_id);
      await this.events(trx, [
        { def: checkpointSaved, tenant: job.tenant, subject: name, payload: { fineTuningJob: name, checkpoint: checkpointName(job.job_id, c.step), step: c.step, evalLoss: c.evalLoss ?? undefined, artifactDigest: c.digest, artifactUri: artifactUri(c.digest) } },
      ]);
      return true;
    });
    if (held) this.changed(job.tenant, job.job_id, true);
    return held;
  }

  /** Ends a job this worker still runs (its lease dropped, its training time added); false when it is no longer the worker's. */
  private async end(trx: Transaction<TrainerTables>, job: JobRow, worker: string, trainingMs: number, outcome: { state: "SUCCEEDED"; result: string } | { state: "FAILED"; error: string }): Promise<boolean> {
    const updated = await trx
      .withSchema(schema)
      .updateTable("jobs")
      .set({ ...outcome, end_time: sql`now()`, update_time: sql`now()`, lease_until: null, training_ms: sql`training_ms + ${Math.round(trainingMs)}` })
      .where("tenant", "=", job.tenant)
      .where("job_id", "=", job.job_id)
      .where("state", "=", "RUNNING")
      .where("worker", "=", worker)
      .returning("job_id")
      .executeTakeFirst();
    return updated !== undefined;
  }

  /** The job succeeded: its result and the `fine_tuning_job_succeeded` event that carries the follow-up. */
  async succeed(job: JobRow, worker: string, result: Omit<JobResult, "checkpoint" | "bestCheckpoint"> & { lastStep: number; bestStep: number | null }, trainingMs: number): Promise<boolean> {
    const s = job.spec as StoredSpec;
    const name = jobName(job.job_id);
    const stored: JobResult = {
      adapterArtifactDigest: result.adapterArtifactDigest,
      adapterArtifactUri: result.adapterArtifactUri,
      checkpoint: checkpointName(job.job_id, result.lastStep),
      bestCheckpoint: result.bestStep === null ? "" : checkpointName(job.job_id, result.bestStep),
      finalLoss: result.finalLoss,
      finalEvalLoss: result.finalEvalLoss,
      trainableParameterCount: result.trainableParameterCount,
    };
    const done = await this.db.transaction().execute(async (trx) => {
      if (!(await this.end(trx, job, worker, trainingMs, { state: "SUCCEEDED", result: JSON.stringify(stored) }))) return false;
      await this.events(trx, [
        {
          def: fineTuningJobSucceeded,
          tenant: job.tenant,
          subject: name,
          payload: {
            fineTuningJob: name,
            baseModel: s.baseModel,
            trainDatasetVersion: s.trainDatasetVersion,
            evalDatasetVersion: s.evalDatasetVersion,
            method: methodEnum(s.method),
            loraConfig: loraConfigOf(s),
            adapterArtifactDigest: stored.adapterArtifactDigest,
            adapterArtifactUri: stored.adapterArtifactUri,
            checkpoint: stored.checkpoint,
            chatTemplateFingerprint: s.inputs.chatTemplateFingerprint,
            finalLoss: stored.finalLoss,
            finalEvalLoss: stored.finalEvalLoss,
            followUp: FollowUp.fromJSON(s.followUp),
          },
        },
      ]);
      return true;
    });
    if (done) this.changed(job.tenant, job.job_id, true);
    return done;
  }

  /** The job failed for good: its error and `fine_tuning_job_failed`. */
  async fail(job: JobRow, worker: string, error: JobFailure, step: number, trainingMs: number): Promise<boolean> {
    const name = jobName(job.job_id);
    const done = await this.db.transaction().execute(async (trx) => {
      if (!(await this.end(trx, job, worker, trainingMs, { state: "FAILED", error: JSON.stringify(error) }))) return false;
      const last = await this.lastCheckpoint(trx, job.tenant, job.job_id);
      await this.events(trx, [
        { def: fineTuningJobFailed, tenant: job.tenant, subject: name, payload: { fineTuningJob: name, error: { code: error.code, reason: error.reason, message: error.message, metadata: {} }, step, lastCheckpoint: last ? checkpointName(job.job_id, last.step) : "" } },
      ]);
      return true;
    });
    if (done) this.changed(job.tenant, job.job_id, true);
    return done;
  }

  /** Adds the time a stopped attempt trained (cancelled, or given up on shutdown). */
  async addTrainingTime(job: JobRow, ms: number): Promise<void> {
    await this.t.updateTable("jobs").set({ training_ms: sql`training_ms + ${Math.round(ms)}` }).where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).execute();
  }

  /** Whether the job runs now in the given attempt (its work folder is in use). */
  async isRunningAttempt(tenant: string, jobId: string, attempt: number): Promise<boolean> {
    const row = await this.t.selectFrom("jobs").select("job_id").where("tenant", "=", tenant).where("job_id", "=", jobId).where("state", "=", "RUNNING").where("attempt_count", "=", attempt).executeTakeFirst();
    return row !== undefined;
  }

  /** Gives a claimed job back to the queue (this worker is shutting down): another takes it up from its last checkpoint. */
  async release(job: JobRow, worker: string): Promise<void> {
    await this.t.updateTable("jobs").set({ state: "QUEUED", worker: "", lease_until: null, update_time: sql`now()` }).where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).where("state", "=", "RUNNING").where("worker", "=", worker).execute();
    this.changed(job.tenant, job.job_id, false);
  }

  /** The registry made an adapter version from the job. */
  async setAdapterVersion(trx: Transaction<TrainerTables>, tenant: string, job: string, adapterVersion: string): Promise<void> {
    const id = job.slice("fineTuningJobs/".length);
    await trx.withSchema(schema).updateTable("jobs").set({ adapter_version: adapterVersion, update_time: sql`now()` }).where("tenant", "=", tenant).where("job_id", "=", id).execute();
  }

  async checkpointRows(tenant: string, jobId: string): Promise<CheckpointRow[]> {
    return this.t.selectFrom("checkpoints").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).orderBy("step").execute();
  }
}
