import { sql, type Kysely, type Transaction } from "kysely";
import { artifactUri } from "@lathe/kit";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { schema, type CheckpointRow, type JobFailure, type JobProgress, type JobResult, type JobRow, type NewMetricsRow, type TrainerTables } from "../db/tables.js";
import { checkpointSaved, fineTuningJobFailed, fineTuningJobProgressed, fineTuningJobStarted, fineTuningJobSucceeded } from "../events.js";
import { checkpointName, duration, jobName, loraConfigOf, methodEnum } from "./encode.js";
import { lastCheckpoint, recordEvents, type JobStore } from "./job-store.js";
import { storedSpec } from "./stored-spec.js";
import { ThroughputHistory } from "./throughput.js";

/** Which queued jobs a claimer takes: CPU jobs (local workers), GPU jobs, or all (a Kubernetes runner). */
export type ClaimScope = "cpu" | "gpu" | "all";

/** Per-tenant limits on what runs at once; 0 means no limit. */
export interface TenantLimits {
  /** Running jobs per tenant. */
  maxRunningJobs: number;
  /** GPUs (the compute.gpu_count of its running jobs) per tenant. */
  maxGpus: number;
}

/** What the claim's name for its worker may depend on: the job and the attempt it starts. */
export interface ClaimTarget {
  tenant: string;
  jobId: string;
  attempt: number;
}

/** A job claimed: its row (RUNNING, this worker's), the checkpoint to resume from, and who held it before (a lost worker). */
export interface Claimed {
  row: JobRow;
  resumeFrom: CheckpointRow | undefined;
  previousWorker: string;
}

/**
 * All claims of one database take this transaction-level advisory lock, so the running counts a
 * claim reads (per-tenant limits, fewest running first) cannot be changed by a concurrent claim.
 * A claim is one short transaction; a queue of any size is claimed one job at a time.
 */
const claimLock = 0x6c617468; // "lath"

/**
 * The worker's side of the jobs: claims with a lease, heartbeats, outcomes. A worker claims a job
 * with a lease that its heartbeats renew; a job whose lease ran out (its worker died) is claimed
 * again, from its last checkpoint. The queue is fair (see `claim`). Every write is guarded by the
 * claim (state RUNNING, this worker), so a cancelled or taken-over job is never overwritten.
 */
export class JobLeases {
  constructor(
    private readonly db: Kysely<TrainerTables>,
    /** Told of each committed change, for watchers and the outbox relay. */
    private readonly store: JobStore,
    /** Per-tenant limits every claim respects. Default: none. */
    private readonly limits: TenantLimits = { maxRunningJobs: 0, maxGpus: 0 },
  ) {}

  private get t() {
    return this.db.withSchema(schema);
  }

  /**
   * Claims the next job in `scope`: a queued one, or a running one whose worker's lease ran out.
   * Among the jobs a tenant may start (under its limits on running jobs and GPUs), the tenant
   * with the fewest running jobs goes first, then the highest priority, then the oldest job; so
   * one tenant's backlog never starves another's single job. `worker` names the claimer, or is
   * made from the job and attempt (a Kubernetes Job's name). `maxGpuCount`: only jobs asking that
   * many GPUs or fewer (a local GPU slot trains a job on one GPU).
   */
  async claim(worker: string | ((target: ClaimTarget) => string), leaseMs: number, scope: ClaimScope = "cpu", maxGpuCount?: number): Promise<Claimed | undefined> {
    const { maxRunningJobs, maxGpus } = this.limits;
    const claimed = await this.db.transaction().execute(async (trx) => {
      const t = trx.withSchema(schema);
      await sql`select pg_advisory_xact_lock(${claimLock})`.execute(trx);
      const { rows } = await sql<{ tenant: string; job_id: string; attempt_count: number; worker: string }>`
        with live as (
          select tenant, count(*)::integer as jobs, coalesce(sum(gpu_count), 0)::integer as gpus
          from ${sql.table(`${schema}.jobs`)}
          where state = 'RUNNING' and lease_until >= now()
          group by tenant
        )
        select j.tenant, j.job_id, j.attempt_count, j.worker
        from ${sql.table(`${schema}.jobs`)} j left join live l on l.tenant = j.tenant
        where (j.state = 'QUEUED' or (j.state = 'RUNNING' and j.lease_until < now()))
          and (${scope} = 'all' or (${scope} = 'gpu') = (j.gpu_count > 0))
          and (${maxGpuCount ?? -1}::integer < 0 or j.gpu_count <= ${maxGpuCount ?? -1}::integer)
          and (${maxRunningJobs}::integer = 0 or coalesce(l.jobs, 0) < ${maxRunningJobs}::integer)
          and (${maxGpus}::integer = 0 or coalesce(l.gpus, 0) + j.gpu_count <= ${maxGpus}::integer)
        order by coalesce(l.jobs, 0), j.priority desc, j.seq
        limit 1
        for update of j skip locked`.execute(trx);
      const next = rows[0];
      if (!next) return undefined;
      const holder = typeof worker === "string" ? worker : worker({ tenant: next.tenant, jobId: next.job_id, attempt: next.attempt_count + 1 });
      const row = await t
        .updateTable("jobs")
        .set({ state: "RUNNING", worker: holder, lease_until: sql`now() + ${`${leaseMs} milliseconds`}::interval` as never, attempt_count: sql`attempt_count + 1`, start_time: sql`coalesce(start_time, now())`, update_time: sql`now()` })
        .where("tenant", "=", next.tenant)
        .where("job_id", "=", next.job_id)
        .returningAll()
        .executeTakeFirstOrThrow();
      const resumeFrom = await lastCheckpoint(trx, row.tenant, row.job_id);
      const name = jobName(row.job_id);
      await recordEvents(trx, [
        {
          def: fineTuningJobStarted,
          tenant: row.tenant,
          subject: name,
          payload: { fineTuningJob: jobName(row.job_id), worker: row.worker, attempt: row.attempt_count, resumedFromCheckpoint: resumeFrom ? checkpointName(row.job_id, resumeFrom.step) : "", totalSteps: (row.estimate as { totalSteps?: number }).totalSteps ?? 0 },
        },
      ]);
      return { row, resumeFrom, previousWorker: next.worker };
    });
    if (claimed) this.store.changed(claimed.row.tenant, claimed.row.job_id, true);
    return claimed;
  }

  /**
   * Renews the lease; with progress (a logged step) also records it, keeps the step's metrics
   * row `logged` and publishes `fine_tuning_job_progressed`. False when the job is no longer this
   * worker's (cancelled, taken over).
   */
  async heartbeat(job: JobRow, worker: string, leaseMs: number, progress: JobProgress | null, logged: NewMetricsRow | null = null): Promise<boolean> {
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
      if (logged) {
        await trx
          .withSchema(schema)
          .insertInto("metrics")
          .values({ tenant: job.tenant, job_id: job.job_id, ...logged })
          // A resumed attempt logs a step again: its values replace the first attempt's.
          .onConflict((oc) =>
            oc.columns(["tenant", "job_id", "step"]).doUpdateSet((eb) => ({
              epoch: eb.ref("excluded.epoch"),
              train_loss: eb.ref("excluded.train_loss"),
              eval_loss: eb.ref("excluded.eval_loss"),
              learning_rate: eb.ref("excluded.learning_rate"),
              grad_norm: eb.ref("excluded.grad_norm"),
              tokens_per_second: eb.ref("excluded.tokens_per_second"),
              processed_tokens: eb.ref("excluded.processed_tokens"),
              train_mean_token_accuracy: eb.ref("excluded.train_mean_token_accuracy"),
              eval_mean_token_accuracy: eb.ref("excluded.eval_mean_token_accuracy"),
              log_time: sql<Date>`now()`,
            })),
          )
          .execute();
      }
      if (progress) {
        const name = jobName(job.job_id);
        await recordEvents(trx, [
          {
            def: fineTuningJobProgressed,
            tenant: job.tenant,
            subject: name,
            payload: {
              fineTuningJob: name,
              step: progress.step,
              totalSteps: progress.totalSteps,
              epoch: progress.epoch,
              loss: progress.loss,
              evalLoss: progress.evalLoss,
              learningRate: progress.learningRate,
              tokensPerSecond: progress.tokensPerSecond,
              eta: duration(progress.etaSeconds),
              meanTokenAccuracy: progress.meanTokenAccuracy,
              evalMeanTokenAccuracy: progress.evalMeanTokenAccuracy,
              gradNorm: progress.gradNorm,
            },
          },
        ]);
      }
      return true;
    });
    if (held && progress) this.store.changed(job.tenant, job.job_id, true);
    return held;
  }

  /** Records a checkpoint stored in the artifact store; false when the job is no longer this worker's. */
  async checkpoint(
    job: JobRow,
    worker: string,
    c: { step: number; epoch: number; loss: number; evalLoss: number | null; meanTokenAccuracy: number; evalMeanTokenAccuracy: number | null; digest: string; sizeBytes: number },
  ): Promise<boolean> {
    const accuracy = Number.isFinite(c.meanTokenAccuracy) ? c.meanTokenAccuracy : null;
    const held = await this.db.transaction().execute(async (trx) => {
      const owned = await trx.withSchema(schema).selectFrom("jobs").select("job_id").where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).where("state", "=", "RUNNING").where("worker", "=", worker).forUpdate().executeTakeFirst();
      if (!owned) return false;
      await trx
        .withSchema(schema)
        .insertInto("checkpoints")
        .values({
          tenant: job.tenant,
          job_id: job.job_id,
          step: c.step,
          epoch: c.epoch,
          loss: Number.isFinite(c.loss) ? c.loss : null,
          eval_loss: c.evalLoss,
          mean_token_accuracy: accuracy,
          eval_mean_token_accuracy: c.evalMeanTokenAccuracy,
          artifact_digest: c.digest,
          size_bytes: c.sizeBytes,
        })
        .onConflict((oc) => oc.columns(["tenant", "job_id", "step"]).doUpdateSet({ artifact_digest: c.digest, eval_loss: c.evalLoss, epoch: c.epoch, mean_token_accuracy: accuracy, eval_mean_token_accuracy: c.evalMeanTokenAccuracy }))
        .execute();
      // An epoch's eval loss is measured after its last step was logged: the progress takes it here.
      await trx
        .withSchema(schema)
        .updateTable("jobs")
        .set({
          update_time: sql`now()`,
          ...(c.evalLoss === null
            ? {}
            : { progress: sql`jsonb_set(jsonb_set(progress, '{evalLoss}', to_jsonb(${c.evalLoss}::float8)), '{evalMeanTokenAccuracy}', coalesce(to_jsonb(${c.evalMeanTokenAccuracy}::float8), 'null'::jsonb))` as never }),
        })
        .where("tenant", "=", job.tenant)
        .where("job_id", "=", job.job_id)
        .execute();
      const name = jobName(job.job_id);
      await recordEvents(trx, [
        {
          def: checkpointSaved,
          tenant: job.tenant,
          subject: name,
          payload: {
            fineTuningJob: name,
            checkpoint: checkpointName(job.job_id, c.step),
            step: c.step,
            evalLoss: c.evalLoss ?? undefined,
            artifactDigest: c.digest,
            artifactUri: artifactUri(c.digest),
            loss: Number.isFinite(c.loss) ? c.loss : undefined,
            meanTokenAccuracy: accuracy ?? undefined,
            evalMeanTokenAccuracy: c.evalMeanTokenAccuracy ?? undefined,
          },
        },
      ]);
      return true;
    });
    if (held) this.store.changed(job.tenant, job.job_id, true);
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

  /**
   * The job succeeded: its result, the `fine_tuning_job_succeeded` event that carries the
   * follow-up, and its measured throughput (`result.tokensPerSecond`) for later estimates.
   */
  async succeed(job: JobRow, worker: string, result: Omit<JobResult, "checkpoint" | "bestCheckpoint"> & { lastStep: number; bestStep: number | null }, trainingMs: number): Promise<boolean> {
    const s = storedSpec(job);
    const name = jobName(job.job_id);
    const stored: JobResult = {
      adapterArtifactDigest: result.adapterArtifactDigest,
      adapterArtifactUri: result.adapterArtifactUri,
      checkpoint: checkpointName(job.job_id, result.lastStep),
      bestCheckpoint: result.bestStep === null ? "" : checkpointName(job.job_id, result.bestStep),
      finalLoss: result.finalLoss,
      finalEvalLoss: result.finalEvalLoss,
      trainableParameterCount: result.trainableParameterCount,
      finalMeanTokenAccuracy: result.finalMeanTokenAccuracy,
      finalEvalMeanTokenAccuracy: result.finalEvalMeanTokenAccuracy,
      tokensPerSecond: result.tokensPerSecond,
      processedTokens: result.processedTokens,
    };
    const done = await this.db.transaction().execute(async (trx) => {
      if (!(await this.end(trx, job, worker, trainingMs, { state: "SUCCEEDED", result: JSON.stringify(stored) }))) return false;
      await ThroughputHistory.record(trx, {
        tenant: job.tenant,
        jobId: job.job_id,
        hardware: s.compute.hardware,
        gpuCount: s.compute.gpuCount ?? 0,
        shape: { method: s.method, modelDigest: s.inputs.modelDigest, parameterCount: s.inputs.parameterCount ?? 0, maxSeqLength: s.args.maxSeqLength },
        tokensPerSecond: result.tokensPerSecond ?? 0,
      });
      await recordEvents(trx, [
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
            finalMeanTokenAccuracy: stored.finalMeanTokenAccuracy,
            finalEvalMeanTokenAccuracy: stored.finalEvalMeanTokenAccuracy,
          },
        },
      ]);
      return true;
    });
    if (done) this.store.changed(job.tenant, job.job_id, true);
    return done;
  }

  /** The job failed for good: its error and `fine_tuning_job_failed`. */
  async fail(job: JobRow, worker: string, error: JobFailure, step: number, trainingMs: number): Promise<boolean> {
    const name = jobName(job.job_id);
    const done = await this.db.transaction().execute(async (trx) => {
      if (!(await this.end(trx, job, worker, trainingMs, { state: "FAILED", error: JSON.stringify(error) }))) return false;
      const last = await lastCheckpoint(trx, job.tenant, job.job_id);
      await recordEvents(trx, [
        { def: fineTuningJobFailed, tenant: job.tenant, subject: name, payload: { fineTuningJob: name, error: { code: error.code, reason: error.reason, message: error.message, metadata: {} }, step, lastCheckpoint: last ? checkpointName(job.job_id, last.step) : "" } },
      ]);
      return true;
    });
    if (done) this.store.changed(job.tenant, job.job_id, true);
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

  /**
   * The job's row when `worker` holds it in `attempt` (RUNNING), else undefined: what a Kubernetes
   * Job's pod checks before it trains the attempt it was made for.
   */
  async attemptRow(tenant: string, jobId: string, attempt: number, worker: string): Promise<JobRow | undefined> {
    return this.t.selectFrom("jobs").selectAll().where("tenant", "=", tenant).where("job_id", "=", jobId).where("state", "=", "RUNNING").where("attempt_count", "=", attempt).where("worker", "=", worker).executeTakeFirst();
  }

  /** The job's state, holder, attempt and progress now; undefined when it is gone. */
  async current(job: Pick<JobRow, "tenant" | "job_id">): Promise<Pick<JobRow, "state" | "worker" | "attempt_count" | "progress"> | undefined> {
    return this.t.selectFrom("jobs").select(["state", "worker", "attempt_count", "progress"]).where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).executeTakeFirst();
  }

  /** The checkpoint an attempt of the job resumes from: its newest. */
  async resumePoint(tenant: string, jobId: string): Promise<CheckpointRow | undefined> {
    return lastCheckpoint(this.db, tenant, jobId);
  }

  /** Whether `worker` still holds the job (RUNNING, its claim), without renewing the lease. */
  async holds(job: Pick<JobRow, "tenant" | "job_id">, worker: string): Promise<boolean> {
    const row = await this.t.selectFrom("jobs").select("job_id").where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).where("state", "=", "RUNNING").where("worker", "=", worker).executeTakeFirst();
    return row !== undefined;
  }

  /** Gives a claimed job back to the queue (this worker is shutting down): another takes it up from its last checkpoint. */
  async release(job: JobRow, worker: string): Promise<void> {
    await this.t.updateTable("jobs").set({ state: "QUEUED", worker: "", lease_until: null, update_time: sql`now()` }).where("tenant", "=", job.tenant).where("job_id", "=", job.job_id).where("state", "=", "RUNNING").where("worker", "=", worker).execute();
    this.store.changed(job.tenant, job.job_id, false);
  }
}

