import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { artifactUri, fineTuningMethods, lrSchedulers, resourceName } from "@lathe/kit";
import { LoraConfig } from "@lathe/proto/lathe/type/v1/lora";
import { Checkpoint, ComputeBackend, FineTuningEstimate, FineTuningJob, FineTuningJob_State, TrainingArguments } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { CheckpointRow, JobRow, JobState } from "../db/tables.js";
import { recipeOf, type JobSpec } from "./spec.js";
import { storedSpec } from "./stored-spec.js";

/* The API (proto) form of the trainer's rows: jobs, checkpoints, and the names they go by. */

export const states: Record<JobState, FineTuningJob_State> = {
  QUEUED: FineTuningJob_State.STATE_QUEUED,
  RUNNING: FineTuningJob_State.STATE_RUNNING,
  SUCCEEDED: FineTuningJob_State.STATE_SUCCEEDED,
  FAILED: FineTuningJob_State.STATE_FAILED,
  CANCELLED: FineTuningJob_State.STATE_CANCELLED,
};
export const terminal: readonly JobState[] = ["SUCCEEDED", "FAILED", "CANCELLED"];

/** The collection of job names: `fineTuningJobs/{job_id}`. */
export const jobCollection = "fineTuningJobs";
export const jobName = (id: string) => resourceName(jobCollection, id);
export const checkpointName = (id: string, step: number) => `${jobName(id)}/checkpoints/step-${step}`;
// JobSpec's method and scheduler are names the codecs hold, so each has a value.
export const methodEnum = (m: JobSpec["method"]) => fineTuningMethods.value(m)!;
const schedulerEnum = (s: JobSpec["args"]["scheduler"]) => lrSchedulers.value(s)!;
export const duration = (s: number) => ({ seconds: Math.max(0, Math.round(s)), nanos: 0 });

export function loraConfigOf(spec: JobSpec): LoraConfig {
  return LoraConfig.fromPartial({ r: spec.lora.r, loraAlpha: spec.lora.alpha, loraDropout: spec.lora.dropout, targetModules: spec.lora.targetModules, useRslora: spec.lora.useRslora });
}

/** A job's training arguments in the API's form: every default applied (and auto's picks). */
export function trainingArgumentsOf(s: JobSpec): TrainingArguments {
  const recipe = recipeOf(s);
  return TrainingArguments.fromPartial({
    numTrainEpochs: s.args.epochs,
    perDeviceTrainBatchSize: s.args.batchSize,
    gradientAccumulationSteps: s.args.gradAccum,
    learningRate: s.args.lr,
    lrSchedulerType: schedulerEnum(s.args.scheduler),
    warmupRatio: s.args.warmupRatio,
    maxSeqLength: s.args.maxSeqLength,
    packing: s.args.packing,
    gradientCheckpointing: s.args.gradientCheckpointing,
    seed: s.args.seed,
    weightDecay: s.args.weightDecay,
    maxGradNorm: s.args.maxGradNorm,
    loggingSteps: s.args.loggingSteps,
    maxSteps: recipe.maxSteps > 0 ? recipe.maxSteps : undefined,
    evalSteps: recipe.evalSteps,
    saveSteps: s.args.saveSteps,
    autoHyperparameters: s.args.autoHyperparameters ?? false,
    // Jobs stored before these were fields read them as the recipe's defaults (recipeOf).
    trainOnInputs: recipe.trainOnInputs,
    saveTotalLimit: recipe.saveTotalLimit,
  });
}

/** The API form of a stored job. */
export function toJob(row: JobRow): FineTuningJob {
  const s = storedSpec(row);
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
    trainingArguments: trainingArgumentsOf(s),
    compute: { backend: s.compute.backend === "cuda" ? ComputeBackend.COMPUTE_BACKEND_CUDA : ComputeBackend.COMPUTE_BACKEND_CPU, gpuCount: s.compute.gpuCount ?? 0, hardware: s.compute.hardware },
    priority: s.priority ?? 0,
    traceId: /^[0-9a-f]{2}-([0-9a-f]{32})-/.exec(s.trace?.["traceparent"] ?? "")?.[1] ?? "",
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
          meanTokenAccuracy: p.meanTokenAccuracy,
          evalMeanTokenAccuracy: p.evalMeanTokenAccuracy,
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
          finalMeanTokenAccuracy: r.finalMeanTokenAccuracy,
          finalEvalMeanTokenAccuracy: r.finalEvalMeanTokenAccuracy,
          tokensPerSecond: r.tokensPerSecond ?? 0,
          processedTokens: r.processedTokens ?? 0,
          ...plannedEstimate(row),
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

/** What the job's estimate said for the hardware it ran on: its estimate against its actual. */
function plannedEstimate(row: JobRow): { estimatedDuration?: { seconds: number; nanos: number }; estimatedTokensPerSecond: number; estimatedTokensPerSecondSource: string } {
  const estimate = FineTuningEstimate.fromJSON(row.estimate);
  const hardware = storedSpec(row).compute.hardware || estimate.recommendedHardware;
  const h = estimate.hardwareEstimates.find((e) => e.hardware === hardware);
  if (!h) return { estimatedTokensPerSecond: 0, estimatedTokensPerSecondSource: "" };
  return { estimatedDuration: h.duration, estimatedTokensPerSecond: h.tokensPerSecond, estimatedTokensPerSecondSource: h.tokensPerSecondSource || "cost table" };
}

export function toCheckpoint(row: CheckpointRow): Checkpoint {
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
    meanTokenAccuracy: row.mean_token_accuracy ?? undefined,
    evalMeanTokenAccuracy: row.eval_mean_token_accuracy ?? undefined,
  });
}

