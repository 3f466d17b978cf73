import { randomBytes, randomUUID } from "node:crypto";
import { copyFile, mkdir, readdir, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { AppError, artifactUri, cachedFolder, contextFromHeaders, digestHex, tracer, materializeFolder, PollingLoop, prefixedDigest, putFolder, type ArtifactStore, type Logger } from "@lathe/kit";
import { CheckpointError, EngineError, LossNotFiniteError, sequencesFromFile, train, TrainingDataError, type TrainOptions, type TrainProgress } from "@lathe/engine";
import { decodeSequences, type Recipe, type SequenceSet } from "@lathe/models";
import type { JobFailure, JobProgress, JobRow, NewMetricsRow } from "../db/tables.js";
import { jobName } from "./encode.js";
import { artifactToFile } from "./inputs.js";
import type { JobStore } from "./job-store.js";
import type { JobLeases } from "./lease.js";
import { storedSpec } from "./stored-spec.js";
import { recipeOf } from "./spec.js";

type SavedCheckpoint = Parameters<NonNullable<TrainOptions["onCheckpoint"]>>[0];

export interface WorkerOptions {
  jobs: JobStore;
  leases: JobLeases;
  artifacts: ArtifactStore;
  logger: Logger;
  /**
   * Where jobs train: `models/` (base models by digest, kept) and `attempts/` (one folder per
   * attempt, with its data and checkpoints, removed when the attempt ends). Several workers and
   * processes may share it.
   */
  workDir: string;
  /** CPU jobs trained at once. */
  slots: number;
  /** GPU jobs (compute.gpu_count > 0) trained at once, each asking one GPU at most; 0: none here. */
  gpuSlots?: number;
  /** The engine device GPU jobs train on ("cuda"; "cpu" where LATHE_TRAINER_GPU_DEVICE says so). CPU jobs always train on "cpu". */
  gpuDevice?: "cuda" | "cpu";
  threads: number;
  pollMs: number;
  leaseMs: number;
}

/** Stops a job's training: cancelled or taken over (the claim is gone), or the worker stops. */
class Stop extends Error {
  constructor(readonly why: "lost" | "shutdown") {
    super(why);
  }
}

/**
 * The local worker: `slots` jobs at a time in this process, each trained by the engine off the
 * event loop. A job is claimed with a lease that every step renews; a worker that dies stops
 * renewing, and after the lease another worker takes the job up from its last checkpoint (kept
 * in the artifact store, optimizer and data position included, so the run continues exactly).
 * Cancelling a job ends its claim: the worker notices within a step and stops. On shutdown the
 * worker stops its jobs and gives them back to the queue.
 */
export class LocalWorker {
  readonly id = `local-${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  private readonly running = new Map<string, { abort: AbortController; done: Promise<void>; gpu: boolean }>();
  /** Looks for queued jobs (and jobs whose worker's lease ran out) while a slot is free. */
  private readonly loop: PollingLoop;

  constructor(private readonly o: WorkerOptions) {
    this.loop = new PollingLoop({ name: "trainer worker: looking for jobs", intervalMs: o.pollMs, logger: o.logger, tick: (signal) => this.poll(signal) });
  }

  private get gpuSlots(): number {
    return this.o.gpuSlots ?? 0;
  }

  /** Jobs of that kind running here. */
  private count(gpu: boolean): number {
    let n = 0;
    for (const r of this.running.values()) n += r.gpu === gpu ? 1 : 0;
    return n;
  }

  async start(): Promise<void> {
    if (this.o.slots === 0 && this.gpuSlots === 0) return;
    await this.sweep().catch((err: unknown) => this.o.logger.warn({ err }, "trainer worker: sweeping the work folders of ended attempts failed"));
    this.loop.start();
  }

  /**
   * Removes the work folders of attempts that no longer run (their worker died, or its last
   * cleanup failed). Other workers may share the work dir, so a folder stays while its job is
   * RUNNING with that attempt; a new attempt makes a folder of its own.
   */
  private async sweep(): Promise<void> {
    const root = join(this.o.workDir, "attempts");
    const names = await readdir(root).catch((err: NodeJS.ErrnoException) => (err.code === "ENOENT" ? [] : Promise.reject(err)));
    let removed = 0;
    for (const name of names) {
      const a = parseAttemptFolder(name);
      if (a === undefined || (await this.o.leases.isRunningAttempt(a.tenant, a.jobId, a.attempt))) continue;
      await rm(join(root, name), { recursive: true, force: true });
      removed++;
    }
    if (removed > 0) this.o.logger.info({ removed }, "trainer worker: removed the work folders of ended attempts");
  }

  /** Look for work now (a job was queued in this process). */
  notify(): void {
    if (this.count(false) < this.o.slots || this.count(true) < this.gpuSlots) this.loop.notify();
  }

  /** Claims jobs until the slots of both kinds are full or none is left. */
  private async poll(signal: AbortSignal): Promise<void> {
    for (const gpu of [false, true]) await this.fill(gpu, signal);
  }

  /** Claims jobs of one kind (CPU or one-GPU jobs) while a slot of that kind is free. */
  private async fill(gpu: boolean, signal: AbortSignal): Promise<void> {
    while (!signal.aborted && this.count(gpu) < (gpu ? this.gpuSlots : this.o.slots)) {
      const claimed = await this.o.leases.claim(this.id, this.o.leaseMs, gpu ? "gpu" : "cpu", gpu ? 1 : undefined);
      if (!claimed) return;
      const key = `${claimed.row.tenant}/${claimed.row.job_id}`;
      const abort = new AbortController();
      // The job's work continues the trace of the call that created it (spans, logs, events).
      const spec = storedSpec(claimed.row);
      const attributes = { "lathe.service": "trainer", "lathe.fine_tuning_job": jobName(claimed.row.job_id), "lathe.tenant": claimed.row.tenant, "lathe.attempt": claimed.row.attempt_count };
      const done = tracer
        .startActiveSpan("trainer.train_job", { attributes }, contextFromHeaders(spec.trace ?? {}), (span) =>
          this.run(claimed.row, claimed.resumeFrom?.artifact_digest, abort.signal).finally(() => span.end()),
        )
        .catch((err: unknown) => this.o.logger.error({ err, job: key }, "trainer worker: a job ended unexpectedly"))
        .finally(() => {
          this.running.delete(key);
          this.notify();
        });
      this.running.set(key, { abort, done, gpu });
    }
  }

  /**
   * Trains one attempt that another claimed for this process: a Kubernetes runner claims a job
   * and starts a pod whose trainer runs this for `worker` (the Kubernetes Job's name) and
   * `attempt`, renewing that claim as a local job renews its own. Resolves when the attempt ends
   * (its outcome recorded, or stopped: cancelled, taken over, or `signal` aborted, which gives the
   * job back to the queue); "not-held" when the claim is no longer `worker`'s in that attempt.
   */
  async runAttempt(tenant: string, jobId: string, attempt: number, worker: string, signal: AbortSignal): Promise<"ran" | "not-held"> {
    const row = await this.o.leases.attemptRow(tenant, jobId, attempt, worker);
    if (!row) return "not-held";
    const resumeFrom = await this.o.leases.resumePoint(tenant, jobId);
    const abort = new AbortController();
    const onAbort = () => abort.abort(new Stop("shutdown"));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    const attributes = { "lathe.service": "trainer", "lathe.fine_tuning_job": jobName(jobId), "lathe.tenant": tenant, "lathe.attempt": attempt };
    try {
      await tracer.startActiveSpan("trainer.train_job", { attributes }, contextFromHeaders(storedSpec(row).trace ?? {}), (span) => this.run(row, resumeFrom?.artifact_digest, abort.signal, worker).finally(() => span.end()));
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    return "ran";
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    for (const r of this.running.values()) r.abort.abort(new Stop("shutdown"));
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  /**
   * A job's pinned sequences, read from the artifact store; a job created before sequences were
   * pinned has only its rows, which are tokenized here as they were then.
   */
  private async sequences(sequencesDigest: string | undefined, rowsDigest: string, rowsFile: string, modelDir: string, recipe: Recipe): Promise<SequenceSet> {
    if (sequencesDigest === undefined || sequencesDigest === "") {
      await artifactToFile(this.o.artifacts, rowsDigest, rowsFile);
      return sequencesFromFile(modelDir, rowsFile, recipe);
    }
    const chunks: Buffer[] = [];
    for await (const c of await this.o.artifacts.get(digestHex(sequencesDigest))) chunks.push(c as Buffer);
    return decodeSequences(Buffer.concat(chunks), sequencesDigest);
  }

  /** Trains a claimed attempt; `worker` is the claim's holder (this worker, or the Kubernetes Job whose pod this is). */
  private async run(job: JobRow, resumeDigest: string | undefined, stopSignal: AbortSignal, worker: string = this.id): Promise<void> {
    const spec = storedSpec(job);
    const log = this.o.logger.child({ job: jobName(job.job_id), tenant: job.tenant, attempt: job.attempt_count });
    const dir = join(this.o.workDir, "attempts", attemptFolder(job));
    const outDir = join(dir, "out");
    const abort = new AbortController();
    const onStop = () => abort.abort(stopSignal.reason);
    stopSignal.addEventListener("abort", onStop, { once: true });
    // A cancel made in this process ends the claim at once; one made elsewhere is seen at the next heartbeat.
    const onChange = (key: string) => {
      if (key === `${job.tenant}/${job.job_id}`) void this.o.jobs.row(job.tenant, jobName(job.job_id)).then((r) => r.state !== "RUNNING" || r.worker !== worker ? abort.abort(new Stop("lost")) : undefined, () => undefined);
    };
    this.o.jobs.changes.on("changed", onChange);
    const started = performance.now();
    let step = 0;
    try {
      await rm(dir, { recursive: true, force: true });
      await mkdir(outDir, { recursive: true });
      const modelDir = await cachedFolder(this.o.artifacts, digestHex(spec.inputs.modelDigest), join(this.o.workDir, "models"));
      const recipe = recipeOf(spec);
      const trainSet = await this.sequences(spec.inputs.trainSequencesDigest, spec.inputs.trainRowsDigest, join(dir, "train.jsonl"), modelDir, recipe);
      const evalSet = spec.inputs.evalRowsDigest === "" ? undefined : await this.sequences(spec.inputs.evalSequencesDigest, spec.inputs.evalRowsDigest, join(dir, "eval.jsonl"), modelDir, recipe);
      let resumeFrom: string | undefined;
      if (resumeDigest !== undefined) {
        const resumeDir = join(outDir, "checkpoint-resume");
        await materializeFolder(this.o.artifacts, digestHex(resumeDigest), resumeDir);
        resumeFrom = resumeDir;
        log.info({ checkpoint: resumeDigest }, "resuming from the last checkpoint");
      }

      // Progress: every step renews the lease; every logging_steps (and the last step) also
      // updates the job's progress and publishes `fine_tuning_job_progressed`, with the mean loss
      // since the last log, so watchers see logged steps, not every step.
      let pending = Promise.resolve();
      let window: number[] = [];
      // The labels of the window's steps and how many the argmax predicted: its mean token accuracy.
      let windowLabels = 0;
      let windowCorrect = 0;
      let lastEval: number | undefined;
      let lastEvalAccuracy: number | undefined;
      let lastLogged: { tokensPerSecond: number; meanTokenAccuracy: number | undefined } | undefined;
      const heartbeat = (p: TrainProgress | null) => {
        let progress: JobProgress | null = null;
        let logged: NewMetricsRow | null = null;
        if (p) {
          step = p.step;
          window.push(p.loss);
          windowLabels += p.labels;
          windowCorrect += p.correct;
          if (p.evalLoss !== null) lastEval = p.evalLoss;
          if (p.evalMeanTokenAccuracy !== null) lastEvalAccuracy = p.evalMeanTokenAccuracy;
        }
        // A step with an eval loss (eval_steps, an epoch's end) is logged too.
        if (p && (p.step % spec.args.loggingSteps === 0 || p.step === p.totalSteps || p.evalLoss !== null)) {
          const finite = window.filter(Number.isFinite);
          const tokens = Math.round(p.tokensPerSecond * ((performance.now() - started) / 1000));
          const meanTokenAccuracy = windowLabels === 0 ? undefined : windowCorrect / windowLabels;
          progress = {
            step: p.step,
            totalSteps: p.totalSteps,
            epoch: p.step / p.stepsPerEpoch,
            loss: finite.length === 0 ? 0 : finite.reduce((a, b) => a + b, 0) / finite.length,
            evalLoss: lastEval,
            learningRate: p.lr,
            gradNorm: p.gradNorm,
            tokensPerSecond: p.tokensPerSecond,
            processedTokens: tokens,
            etaSeconds: Number.isFinite(p.etaSeconds) ? p.etaSeconds : 0,
            updateTime: new Date().toISOString(),
            meanTokenAccuracy,
            evalMeanTokenAccuracy: lastEvalAccuracy,
          };
          // The step's row: its eval values only when it was evaluated (the progress keeps the latest).
          logged = {
            step: p.step,
            epoch: progress.epoch,
            train_loss: progress.loss,
            eval_loss: p.evalLoss,
            learning_rate: p.lr,
            grad_norm: p.gradNorm,
            tokens_per_second: p.tokensPerSecond,
            processed_tokens: tokens,
            train_mean_token_accuracy: meanTokenAccuracy ?? null,
            eval_mean_token_accuracy: p.evalMeanTokenAccuracy,
          };
          lastLogged = { tokensPerSecond: p.tokensPerSecond, meanTokenAccuracy };
          window = [];
          windowLabels = 0;
          windowCorrect = 0;
        }
        pending = pending
          .then(() => this.o.leases.heartbeat(job, worker, this.o.leaseMs, progress, logged))
          .then((held) => {
            if (!held) abort.abort(new Stop("lost"));
          })
          .catch((err: unknown) => log.warn({ err }, "recording progress failed"));
      };
      // Slow steps still renew the lease.
      const beat = setInterval(() => heartbeat(null), Math.max(50, Math.floor(this.o.leaseMs / 3)));
      let lastCheckpoint: SavedCheckpoint | undefined;
      const onCheckpoint = async (c: SavedCheckpoint) => {
        const stored = await putFolder(this.o.artifacts, c.dir);
        // The steps' progress writes first: the checkpoint's eval loss goes into the progress,
        // and a heartbeat landing after it would put back the previous epoch's (seen under load).
        await pending;
        if (c.evalLoss !== null) lastEval = c.evalLoss;
        if (c.evalMeanTokenAccuracy !== null) lastEvalAccuracy = c.evalMeanTokenAccuracy;
        lastCheckpoint = c;
        const held = await this.o.leases.checkpoint(job, worker, {
          step: c.step,
          epoch: c.epoch,
          loss: c.loss,
          evalLoss: c.evalLoss,
          meanTokenAccuracy: c.meanTokenAccuracy,
          evalMeanTokenAccuracy: c.evalMeanTokenAccuracy,
          digest: prefixedDigest(stored.digest),
          sizeBytes: stored.size,
        });
        if (!held) abort.abort(new Stop("lost"));
      };
      let summary;
      try {
        summary = await train(
          {
            modelDir,
            baseModelNameOrPath: spec.baseModel,
            train: trainSet,
            eval: evalSet,
            outDir,
            recipe,
            numThreads: this.o.threads,
            // A GPU job on the CUDA backend (never the CPU unasked: without a CUDA device the
            // engine refuses, naming the devices it has); a CPU job on the CPU even where a GPU is.
            device: spec.compute.backend === "cuda" ? (this.o.gpuDevice ?? "cuda") : "cpu",
            qlora: spec.method === "qlora",
            resumeFrom,
            onCheckpoint,
          },
          (p) => heartbeat(p),
          abort.signal,
        );
      } finally {
        clearInterval(beat);
        await pending;
      }
      // The adapter alone (outDir also holds checkpoints and best/).
      const adapterDir = join(dir, "adapter");
      await mkdir(adapterDir, { recursive: true });
      for (const f of ["adapter_config.json", "adapter_model.safetensors"]) await copyFile(join(outDir, f), join(adapterDir, f));
      const adapter = await putFolder(this.o.artifacts, adapterDir);
      const digest = prefixedDigest(adapter.digest);
      const trainLoss = summary.trainLossPerEpoch[summary.trainLossPerEpoch.length - 1] ?? Number.NaN;
      const lastEvaluation = summary.evalLosses.at(-1);
      const evalLoss = lastEvaluation?.loss;
      const ok = await this.o.leases.succeed(
        job,
        worker,
        {
          adapterArtifactDigest: digest,
          adapterArtifactUri: artifactUri(digest),
          finalLoss: Number.isFinite(trainLoss) ? trainLoss : 0,
          finalEvalLoss: evalLoss,
          trainableParameterCount: (job.estimate as { trainableParameterCount?: number }).trainableParameterCount ?? 0,
          lastStep: lastCheckpoint?.step ?? summary.steps,
          bestStep: summary.bestStep,
          // As the final loss is the last logged steps', so is the accuracy.
          finalMeanTokenAccuracy: lastLogged?.meanTokenAccuracy,
          finalEvalMeanTokenAccuracy: lastEvaluation?.meanTokenAccuracy,
          tokensPerSecond: lastLogged?.tokensPerSecond ?? 0,
          processedTokens: summary.tokens,
        },
        performance.now() - started,
      );
      log.info({ steps: summary.steps, seconds: summary.seconds, loss: trainLoss, evalLoss, succeeded: ok }, "job finished");
    } catch (err) {
      const reason = abort.signal.reason as unknown;
      if (reason instanceof Stop) {
        if (reason.why === "shutdown") {
          await this.o.leases.release(job, worker).catch((e: unknown) => log.warn({ err: e }, "giving the job back failed; its lease will run out"));
          log.info({ step }, "worker stopping: job given back to the queue");
        } else log.info({ step }, "job stopped: cancelled or taken over");
        await this.o.leases.addTrainingTime(job, performance.now() - started).catch(() => undefined);
        return;
      }
      const failure = failureOf(err, step);
      log.warn({ err, step }, "job failed");
      await this.o.leases.fail(job, worker, failure, step, performance.now() - started);
    } finally {
      this.o.jobs.changes.off("changed", onChange);
      stopSignal.removeEventListener("abort", onStop);
      await rm(dir, { recursive: true, force: true }).catch((err: unknown) => log.warn({ err }, "removing the attempt's work folder failed; the next worker start sweeps it"));
    }
  }
}

/**
 * The work folder of an attempt: `<tenant>~<job_id>~<attempt>~<random>`. The random part makes it
 * unguessable (a tenant who could name another's folder might reach its checkpoints); `~` is in
 * neither tenants nor job ids, so the sweep reads the rest back.
 */
function attemptFolder(job: JobRow): string {
  return `${job.tenant}~${job.job_id}~${job.attempt_count}~${randomBytes(16).toString("hex")}`;
}

function parseAttemptFolder(name: string): { tenant: string; jobId: string; attempt: number } | undefined {
  const m = /^([^~]+)~([^~]+)~(\d+)~[0-9a-f]{32}$/.exec(name);
  return m ? { tenant: m[1]!, jobId: m[2]!, attempt: Number(m[3]) } : undefined;
}

/** A write that failed for want of space: no space left on the device, or the quota reached. */
function diskFull(err: unknown): "ENOSPC" | "EDQUOT" | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") return code;
  }
  return undefined;
}

/** What a failed job tells its user: the engine's and the data's errors keep their meaning. */
function failureOf(err: unknown, step: number): JobFailure {
  const full = diskFull(err);
  if (full !== undefined) {
    return {
      code: "RESOURCE_EXHAUSTED",
      reason: "DISK_FULL",
      message: `the disk is full: the worker could not write the job's checkpoint or adapter at step ${step} (${full === "EDQUOT" ? "disk quota reached" : "no space left on device"}); the checkpoints listed are complete, and the job can be created again once the trainer has room`,
    };
  }
  if (err instanceof LossNotFiniteError) return { code: "INVALID_ARGUMENT", reason: "LOSS_NOT_FINITE", message: err.message, field: "fine_tuning_job.training_arguments.learning_rate" };
  if (err instanceof TrainingDataError) return { code: "INVALID_ARGUMENT", reason: "TRAINING_DATA_INVALID", message: err.message };
  if (err instanceof CheckpointError) return { code: "FAILED_PRECONDITION", reason: "CHECKPOINT_INVALID", message: err.message };
  if (err instanceof EngineError) return { code: err.code === "OUT_OF_MEMORY" ? "RESOURCE_EXHAUSTED" : "INTERNAL", reason: `ENGINE_${err.code}`, message: err.message };
  if (err instanceof AppError) return { code: err.code, reason: err.reason, message: err.message };
  if (err instanceof RangeError) return { code: "INVALID_ARGUMENT", reason: "TRAINING_OPTIONS_INVALID", message: err.message };
  return { code: "INTERNAL", reason: "TRAINING_FAILED", message: (err as Error)?.message ?? String(err) };
}
