import { AppError, checkLabels, checkResourceId, checkText, invalidArgument, parseName, parseNestedName } from "@lathe/kit";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import { ComputeBackend, LearningRateScheduler, type FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";

/** LoRA module names in PEFT's spelling. */
export const LORA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"] as const;
const DEFAULT_MODULES = LORA_MODULES.filter((m) => m !== "lm_head");

/** A job as asked, every default applied; stored once and never changed. */
export interface JobSpec {
  displayName: string;
  labels: Record<string, string>;
  baseModel: string;
  trainDatasetVersion: string;
  evalDatasetVersion: string;
  method: "lora" | "qlora";
  lora: { r: number; alpha: number; dropout: number; targetModules: string[]; useRslora: boolean };
  args: {
    epochs: number;
    batchSize: number;
    gradAccum: number;
    lr: number;
    scheduler: "cosine" | "linear" | "constant";
    warmupRatio: number;
    maxSeqLength: number;
    packing: boolean;
    gradientCheckpointing: boolean;
    seed: number;
    weightDecay: number;
    maxGradNorm: number;
    loggingSteps: number;
    saveSteps: number;
  };
  compute: { backend: "cpu"; hardware: string };
  /** FollowUp as proto JSON. */
  followUp: unknown;
}

/** What a job was pinned to when it was created: digests in the artifact store. */
export interface JobInputs {
  modelDigest: string;
  modelContextLength: number;
  chatTemplateFingerprint: string;
  trainRowsDigest: string;
  evalRowsDigest: string;
  trainRows: number;
  evalRows: number;
}

const between = (field: string, v: number, lo: number, hi: number, what = "") => {
  if (!Number.isFinite(v) || v < lo || v > hi) throw invalidArgument(field, `must be from ${lo} to ${hi}${what}, got ${v}`);
  return v;
};
const intOr = (field: string, v: number, dflt: number, lo: number, hi: number) => (v === 0 ? dflt : between(field, v, lo, hi));

/**
 * Checks a job as CreateFineTuningJob and EstimateFineTuningJob receive it and applies the
 * reference recipe's defaults (the proto states each). Every error names its field. What needs
 * other services (the model exists, the dataset version is ready) is checked afterwards.
 */
export function validateJob(job: FineTuningJob | undefined, hardwareTypes: readonly string[]): JobSpec {
  if (!job) throw invalidArgument("fine_tuning_job", "is required");
  const f = (name: string) => `fine_tuning_job.${name}`;
  parseName(f("base_model"), job.baseModel, "models");
  parseNestedName(f("train_dataset_version"), job.trainDatasetVersion, ["datasets", "versions"]);
  if (job.evalDatasetVersion !== "") parseNestedName(f("eval_dataset_version"), job.evalDatasetVersion, ["datasets", "versions"]);
  const l = job.loraConfig;
  const r = intOr(f("lora_config.r"), l?.r ?? 0, 16, 1, 256);
  const targetModules = l === undefined || l.targetModules.length === 0 ? [...DEFAULT_MODULES] : [...new Set(l.targetModules)];
  for (const [i, m] of targetModules.entries()) {
    if (!(LORA_MODULES as readonly string[]).includes(m)) throw invalidArgument(f(`lora_config.target_modules[${i}]`), `${JSON.stringify(m)} is not one of ${LORA_MODULES.join(", ")}`);
  }
  const a = job.trainingArguments;
  if (a?.maxSteps !== undefined) throw invalidArgument(f("training_arguments.max_steps"), "is not supported yet; set num_train_epochs instead", "UNSUPPORTED_FIELD");
  if ((a?.evalSteps ?? 0) !== 0) throw invalidArgument(f("training_arguments.eval_steps"), "is not supported yet: the eval loss is computed at the end of every epoch; leave it 0", "UNSUPPORTED_FIELD");
  const ta = (n: string) => f(`training_arguments.${n}`);
  const schedulers = { [LearningRateScheduler.LEARNING_RATE_SCHEDULER_UNSPECIFIED]: "cosine", [LearningRateScheduler.LEARNING_RATE_SCHEDULER_COSINE]: "cosine", [LearningRateScheduler.LEARNING_RATE_SCHEDULER_LINEAR]: "linear", [LearningRateScheduler.LEARNING_RATE_SCHEDULER_CONSTANT]: "constant" } as const;
  const scheduler = schedulers[(a?.lrSchedulerType ?? 0) as keyof typeof schedulers];
  if (scheduler === undefined) throw invalidArgument(ta("lr_scheduler_type"), `unknown value ${a?.lrSchedulerType}`);
  const seed = Number(a?.seed ?? 42);
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) throw invalidArgument(ta("seed"), `must be from 0 to ${0xffffffff}, got ${a?.seed}`);
  const methods = { [FineTuningMethod.FINE_TUNING_METHOD_UNSPECIFIED]: "lora", [FineTuningMethod.FINE_TUNING_METHOD_LORA]: "lora", [FineTuningMethod.FINE_TUNING_METHOD_QLORA]: "qlora" } as const;
  const method = methods[job.method as keyof typeof methods];
  if (method === undefined) throw invalidArgument(f("method"), `unknown value ${job.method}`);

  const c = job.compute;
  if (c?.backend === ComputeBackend.COMPUTE_BACKEND_CUDA || (c?.gpuCount ?? 0) > 0) {
    throw new AppError("FAILED_PRECONDITION", "NO_GPU_SLOTS", `${f("compute")}: this trainer has no CUDA slots (the engine's CUDA backend is not built yet); use COMPUTE_BACKEND_CPU or leave compute unset`, { field: f("compute") });
  }
  const hardware = c?.hardware ?? "";
  if (hardware !== "" && !hardwareTypes.includes(hardware)) throw invalidArgument(f("compute.hardware"), `${JSON.stringify(hardware)} is not in the cost table (${hardwareTypes.join(", ")})`);
  if (hardware !== "" && hardware !== "cpu") {
    throw new AppError("FAILED_PRECONDITION", "NO_GPU_SLOTS", `${f("compute.hardware")}: ${hardware} needs a GPU slot and this trainer has none yet; estimate it with EstimateFineTuningJob, train on cpu`, { field: f("compute.hardware") });
  }
  const reg = job.followUp?.registration;
  if (reg !== undefined && reg.adapter !== "") {
    const [model] = parseNestedName(f("follow_up.registration.adapter"), reg.adapter, ["models", "adapters"]);
    if (`models/${model}` !== job.baseModel) throw invalidArgument(f("follow_up.registration.adapter"), `${reg.adapter} belongs to models/${model}, but the job trains ${job.baseModel}`);
  }
  return {
    displayName: checkText(f("display_name"), job.displayName, 200),
    labels: checkLabels(f("labels"), job.labels),
    baseModel: job.baseModel,
    trainDatasetVersion: job.trainDatasetVersion,
    evalDatasetVersion: job.evalDatasetVersion,
    method,
    lora: {
      r,
      alpha: intOr(f("lora_config.lora_alpha"), l?.loraAlpha ?? 0, 32, 1, 1024),
      dropout: between(f("lora_config.lora_dropout"), l?.loraDropout ?? 0.05, 0, 0.5),
      targetModules,
      useRslora: l?.useRslora ?? true,
    },
    args: {
      epochs: intOr(ta("num_train_epochs"), a?.numTrainEpochs ?? 0, 3, 1, 100),
      batchSize: intOr(ta("per_device_train_batch_size"), a?.perDeviceTrainBatchSize ?? 0, 4, 1, 1024),
      gradAccum: intOr(ta("gradient_accumulation_steps"), a?.gradientAccumulationSteps ?? 0, 4, 1, 1024),
      lr: (a?.learningRate ?? 0) === 0 ? 2e-4 : between(ta("learning_rate"), a!.learningRate, Number.MIN_VALUE, 1, " (greater than 0)"),
      scheduler,
      warmupRatio: between(ta("warmup_ratio"), a?.warmupRatio ?? 0.03, 0, 0.5),
      maxSeqLength: intOr(ta("max_seq_length"), a?.maxSeqLength ?? 0, 2048, 16, 1_048_576),
      packing: a?.packing ?? true,
      gradientCheckpointing: a?.gradientCheckpointing ?? true,
      seed,
      weightDecay: between(ta("weight_decay"), a?.weightDecay ?? 0, 0, 1),
      maxGradNorm: (() => {
        const v = a?.maxGradNorm ?? 1;
        if (!(v > 0) || !Number.isFinite(v)) throw invalidArgument(ta("max_grad_norm"), `must be greater than 0, got ${v}`);
        return v;
      })(),
      loggingSteps: intOr(ta("logging_steps"), a?.loggingSteps ?? 0, 10, 1, 10_000),
      saveSteps: intOr(ta("save_steps"), a?.saveSteps ?? 0, 0, 1, 10_000_000),
    },
    compute: { backend: "cpu", hardware: "cpu" },
    followUp: FollowUp.toJSON(job.followUp ?? FollowUp.fromPartial({})),
  };
}

/** Checks the id of a new job, or makes one. */
export function jobIdOf(id: string): string {
  if (id === "") return `ftjob-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  return checkResourceId("fine_tuning_job_id", id);
}
