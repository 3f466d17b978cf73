import { AppError, checkRequestId, traceHeaders, checkText, invalidArgument, type ArtifactStore, type CallContext, type ServiceHandlers } from "@lathe/kit";
import { MetricsFormat, type FineTuningEstimate, type TrainerServiceService } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { applyAutoHyperparameters, autoSettings, type AutoSetting } from "./domain/auto.js";
import { canonicalCreateRequest } from "./domain/canonical-request.js";
import { jobName, trainingArgumentsOf } from "./domain/encode.js";
import { consideredHardware, estimateJob, type CostTable } from "./domain/estimate.js";
import { checkJobUsefulness } from "./domain/guards.js";
import { resolveInputs } from "./domain/inputs.js";
import type { JobStore } from "./domain/job-store.js";
import { metricsFile, toMetricsRow } from "./domain/metrics-files.js";
import { checkPriority } from "./domain/priority.js";
import { jobIdOf, validateJob, type JobSpec } from "./domain/spec.js";
import type { ThroughputHistory } from "./domain/throughput.js";
import { watchJob } from "./domain/watch.js";

export interface TrainerParts {
  jobs: JobStore;
  artifacts: ArtifactStore;
  costTable: CostTable;
  cacheDir: string;
  peer: (s: "registry" | "dataset") => string;
  /** A job was queued: the local worker looks now. */
  onQueued: () => void;
  /**
   * The most GPUs one job may ask for here: 0 (no GPU slots: GPU jobs are refused with
   * NO_GPU_SLOTS), 1 (this trainer's own GPU slots, LATHE_TRAINER_GPUS) or 8 (a Kubernetes runner).
   */
  gpusPerJob: number;
  /** LATHE_TRAINER_MAX_GPUS_PER_TENANT: a job asking for more could never start. 0: no limit. */
  maxGpusPerTenant: number;
  /** How often WatchFineTuningJob looks for changes made by other processes, in ms. */
  watchPollMs: number;
  /** Past jobs' measured throughput, which refines the estimates. */
  throughput: ThroughputHistory;
}

/** gRPC handlers of TrainerService: decode → domain → encode. */
export function trainerHandlers(p: TrainerParts): ServiceHandlers<typeof TrainerServiceService> {
  const hardwareTypes = p.costTable.map((h) => h.hardware);

  /**
   * Resolves the inputs, picks what auto_hyperparameters leaves to the data, refuses a job that
   * cannot train and estimates the rest with its warnings.
   */
  const estimate = async (asked: JobSpec, auto: readonly AutoSetting[], ctx: CallContext, only: readonly string[]) => {
    const resolved = await resolveInputs(asked, ctx, { peer: p.peer, artifacts: p.artifacts, cacheDir: p.cacheDir });
    const spec = applyAutoHyperparameters(asked, auto, resolved.data);
    const warnings = checkJobUsefulness(spec, resolved.data);
    const measured = await p.throughput.similar(
      { method: spec.method, modelDigest: resolved.inputs.modelDigest, parameterCount: resolved.parameterCount, maxSeqLength: spec.args.maxSeqLength },
      consideredHardware(p.costTable, only).map((h) => ({ hardware: h.hardware, gpuCount: h.gpuCount })),
    );
    return { spec, resolved, warnings, estimate: estimateJob(spec, resolved.config, resolved.parameterCount, resolved.data, p.costTable, only, warnings, measured) };
  };

  return {
    async createFineTuningJob(req, ctx) {
      const asked = validateJob(req.fineTuningJob, hardwareTypes, p.gpusPerJob);
      const priority = checkPriority(req.fineTuningJob?.priority);
      const gpus = asked.compute.gpuCount ?? 0;
      if (p.maxGpusPerTenant > 0 && gpus > p.maxGpusPerTenant) throw invalidArgument("fine_tuning_job.compute.gpu_count", `asks for ${gpus} GPUs and a tenant may use at most ${p.maxGpusPerTenant} at once (LATHE_TRAINER_MAX_GPUS_PER_TENANT), so it would never start`);
      const requestId = checkRequestId("request_id", req.requestId);
      const request = canonicalCreateRequest(req);
      const earlier = await p.jobs.byRequestId(ctx.tenant, requestId, request);
      if (earlier) return { fineTuningJob: earlier, warnings: earlier.estimate?.warnings ?? [] };
      const jobId = jobIdOf(req.fineTuningJobId);
      const exists = await p.jobs.get(ctx.tenant, jobName(jobId)).then(
        () => true,
        () => false,
      );
      if (exists) throw new AppError("ALREADY_EXISTS", "FINE_TUNING_JOB_ALREADY_EXISTS", `${jobName(jobId)} already exists`, { name: jobName(jobId) });
      const { spec, resolved, warnings, estimate: est } = await estimate(asked, autoSettings(req.fineTuningJob), ctx, []);
      const here = est.hardwareEstimates.find((h) => h.hardware === spec.compute.hardware);
      if (here && !here.fits) {
        throw new AppError(
          "FAILED_PRECONDITION",
          "JOB_DOES_NOT_FIT",
          `fine_tuning_job: the job needs about ${gib(here.peakMemoryBytes)} GiB on ${here.hardware} and ${gib(here.availableMemoryBytes)} GiB is there; lower per_device_train_batch_size or max_seq_length, turn on gradient_checkpointing, or use QLoRA`,
          { field: "fine_tuning_job" },
        );
      }
      const job = await p.jobs.create(ctx.tenant, jobId, { ...spec, inputs: resolved.inputs, trace: traceHeaders(), priority }, est, requestId, request);
      p.onQueued();
      return { fineTuningJob: job, warnings };
    },
    async getFineTuningJob(req, ctx) {
      return { fineTuningJob: await p.jobs.get(ctx.tenant, req.name) };
    },
    async listFineTuningJobs(req, ctx) {
      return p.jobs.list(ctx.tenant, req);
    },
    async *watchFineTuningJob(req, ctx) {
      for await (const fineTuningJob of watchJob(p.jobs, ctx.tenant, req.name, ctx.signal, p.watchPollMs)) yield { fineTuningJob };
    },
    async cancelFineTuningJob(req, ctx) {
      const reason = checkText("reason", req.reason, 2000);
      return { fineTuningJob: await p.jobs.cancel(ctx.tenant, req.name, reason) };
    },
    async listCheckpoints(req, ctx) {
      return p.jobs.checkpoints(ctx.tenant, req);
    },
    async getFineTuningJobMetrics(req, ctx) {
      if (!(req.format in MetricsFormat) || req.format === MetricsFormat.UNRECOGNIZED) throw invalidArgument("format", `${req.format} is not a MetricsFormat (METRICS_FORMAT_UNSPECIFIED, METRICS_FORMAT_CSV or METRICS_FORMAT_TENSORBOARD)`);
      const job = await p.jobs.row(ctx.tenant, req.name);
      const rows = (await p.jobs.metricsRows(job.tenant, job.job_id)).map(toMetricsRow);
      const started = (job.start_time ?? job.create_time).getTime() / 1000;
      return { rows, ...metricsFile(req.format, rows, started) };
    },
    async estimateFineTuningJob(req, ctx) {
      for (const [i, h] of req.hardware.entries()) {
        if (!hardwareTypes.includes(h)) throw invalidArgument(`hardware[${i}]`, `${JSON.stringify(h)} is not in the cost table (${hardwareTypes.join(", ")})`);
      }
      // Estimating a GPU type is allowed without a GPU slot: that is what the estimate is for.
      const job = req.fineTuningJob ? { ...req.fineTuningJob, compute: undefined } : undefined;
      const spec = validateJob(job, hardwareTypes);
      const only = req.hardware.length > 0 ? req.hardware : req.fineTuningJob?.compute?.hardware ? [req.fineTuningJob.compute.hardware] : [];
      const { spec: estimated, estimate: est, warnings } = await estimate(spec, autoSettings(job), ctx, only);
      return { estimate: est as FineTuningEstimate, warnings, trainingArguments: trainingArgumentsOf(estimated) };
    },
  };
}

const gib = (b: number) => (b / 2 ** 30).toFixed(2);
