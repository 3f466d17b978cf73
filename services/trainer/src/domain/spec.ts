import { checkLabels, checkResourceId, checkText, fineTuningMethods, invalidArgument, lrSchedulers, parseName, parseNestedName, resourceName } from "@lathe/kit";
import { LORA_MODULES, RECIPE, RecipeError, resolveRecipe, type Recipe, type RecipeKey } from "@lathe/models";
import { FollowUp } from "@lathe/proto/lathe/type/v1/follow_up";
import type { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { computeOf, type JobCompute } from "./compute.js";

/** LoRA module names in PEFT's spelling. */
export { LORA_MODULES };

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
    saveTotalLimit: number;
    trainOnInputs: boolean;
    // Jobs stored before these were request fields trained by epochs, evaluated per epoch, and had no auto.
    /** 0: num_train_epochs decides. */
    maxSteps?: number;
    /** 0: at the end of every epoch. */
    evalSteps?: number;
    /** Whether unset epochs, batch, lr and warmup were picked from the data (auto.ts). */
    autoHyperparameters?: boolean;
  };
  compute: JobCompute;
  /** FollowUp as proto JSON. */
  followUp: unknown;
}

/** What a job was pinned to when it was created: digests in the artifact store. */
export interface JobInputs {
  modelDigest: string;
  /** The base model's parameters (absent in jobs created before it was kept): the shape past throughput is compared by. */
  parameterCount?: number;
  modelContextLength: number;
  chatTemplateFingerprint: string;
  /** The rows as chat JSONL, for lineage. */
  trainRowsDigest: string;
  evalRowsDigest: string;
  /**
   * The tokenized, masked sequences the job trains on (`encodeSequences` of libs/models); "" for
   * no eval set. Absent in jobs created before sequences were pinned: the worker tokenizes their rows.
   */
  trainSequencesDigest?: string;
  evalSequencesDigest?: string;
  trainRows: number;
  evalRows: number;
}

/** Where a setting sits in the request: LoRA's under lora_config, the rest under training_arguments. */
const settingField = (key: RecipeKey) => `fine_tuning_job.${RECIPE[key].lora ? "lora_config" : "training_arguments"}.${RECIPE[key].hf}`;

/** A proto3 number where 0 means "the default". */
const orDefault = (v: number | undefined) => (v === undefined || v === 0 ? undefined : v);

/** The recipe a job asks for: the request's settings with the recipe's defaults and ranges. */
export function jobRecipe(job: FineTuningJob): Recipe {
  const l = job.loraConfig;
  const a = job.trainingArguments;
  const scheduler = a === undefined ? undefined : lrSchedulers.name(a.lrSchedulerType);
  if (a !== undefined && scheduler === undefined) throw invalidArgument(settingField("lrSchedulerType"), `unknown value ${a.lrSchedulerType}`);
  try {
    return resolveRecipe(
      {
        r: orDefault(l?.r),
        loraAlpha: orDefault(l?.loraAlpha),
        loraDropout: l?.loraDropout,
        targetModules: l === undefined || l.targetModules.length === 0 ? undefined : l.targetModules,
        useRslora: l?.useRslora,
        numTrainEpochs: orDefault(a?.numTrainEpochs),
        maxSteps: a?.maxSteps,
        perDeviceTrainBatchSize: orDefault(a?.perDeviceTrainBatchSize),
        gradientAccumulationSteps: orDefault(a?.gradientAccumulationSteps),
        learningRate: orDefault(a?.learningRate),
        lrSchedulerType: scheduler,
        warmupRatio: a?.warmupRatio,
        weightDecay: a?.weightDecay,
        maxGradNorm: a?.maxGradNorm,
        maxSeqLength: orDefault(a?.maxSeqLength),
        packing: a?.packing,
        gradientCheckpointing: a?.gradientCheckpointing,
        trainOnInputs: a?.trainOnInputs,
        seed: a?.seed,
        loggingSteps: orDefault(a?.loggingSteps),
        evalSteps: a?.evalSteps,
        saveSteps: orDefault(a?.saveSteps),
        saveTotalLimit: a?.saveTotalLimit,
      },
      settingField,
    );
  } catch (err) {
    if (err instanceof RecipeError) throw invalidArgument(err.field, err.reason);
    throw err;
  }
}

/** The engine's settings of a stored job. */
export function recipeOf(spec: JobSpec): Recipe {
  const { lora: l, args: a } = spec;
  return {
    r: l.r, loraAlpha: l.alpha, loraDropout: l.dropout, targetModules: l.targetModules as Recipe["targetModules"], useRslora: l.useRslora,
    numTrainEpochs: a.epochs, maxSteps: a.maxSteps ?? 0, evalSteps: a.evalSteps ?? 0, perDeviceTrainBatchSize: a.batchSize, gradientAccumulationSteps: a.gradAccum, learningRate: a.lr, lrSchedulerType: a.scheduler,
    warmupRatio: a.warmupRatio, weightDecay: a.weightDecay, maxGradNorm: a.maxGradNorm, maxSeqLength: a.maxSeqLength, packing: a.packing,
    gradientCheckpointing: a.gradientCheckpointing, seed: a.seed, loggingSteps: a.loggingSteps, saveSteps: a.saveSteps,
    // Jobs stored before these were request fields trained with the recipe's values.
    trainOnInputs: a.trainOnInputs ?? (RECIPE.trainOnInputs.default as boolean),
    saveTotalLimit: a.saveTotalLimit ?? (RECIPE.saveTotalLimit.default as number),
  };
}

/**
 * Checks a job as CreateFineTuningJob and EstimateFineTuningJob receive it and applies the
 * reference recipe's defaults (the proto states each). Every error names its field. What needs
 * other services (the model exists, the dataset version is ready) is checked afterwards, and so
 * is what needs the data (guards.ts; auto_hyperparameters, auto.ts).
 */
export function validateJob(job: FineTuningJob | undefined, hardwareTypes: readonly string[], gpusPerJob = 0): JobSpec {
  if (!job) throw invalidArgument("fine_tuning_job", "is required");
  const f = (name: string) => `fine_tuning_job.${name}`;
  parseName(f("base_model"), job.baseModel, "models");
  parseNestedName(f("train_dataset_version"), job.trainDatasetVersion, ["datasets", "versions"]);
  if (job.evalDatasetVersion !== "") parseNestedName(f("eval_dataset_version"), job.evalDatasetVersion, ["datasets", "versions"]);
  const recipe = jobRecipe(job);
  const method = fineTuningMethods.name(job.method);
  if (method === undefined) throw invalidArgument(f("method"), `unknown value ${job.method}`);

  const compute = computeOf(job.compute, hardwareTypes, gpusPerJob);
  const reg = job.followUp?.registration;
  if (reg !== undefined && reg.adapter !== "") {
    const [model] = parseNestedName(f("follow_up.registration.adapter"), reg.adapter, ["models", "adapters"]);
    const owner = resourceName("models", model!);
    if (owner !== job.baseModel) throw invalidArgument(f("follow_up.registration.adapter"), `${reg.adapter} belongs to ${owner}, but the job trains ${job.baseModel}`);
  }
  return {
    displayName: checkText(f("display_name"), job.displayName, 200),
    labels: checkLabels(f("labels"), job.labels),
    baseModel: job.baseModel,
    trainDatasetVersion: job.trainDatasetVersion,
    evalDatasetVersion: job.evalDatasetVersion,
    method,
    lora: { r: recipe.r, alpha: recipe.loraAlpha, dropout: recipe.loraDropout, targetModules: recipe.targetModules, useRslora: recipe.useRslora },
    args: {
      epochs: recipe.numTrainEpochs,
      batchSize: recipe.perDeviceTrainBatchSize,
      gradAccum: recipe.gradientAccumulationSteps,
      lr: recipe.learningRate,
      scheduler: recipe.lrSchedulerType,
      warmupRatio: recipe.warmupRatio,
      maxSeqLength: recipe.maxSeqLength,
      packing: recipe.packing,
      gradientCheckpointing: recipe.gradientCheckpointing,
      seed: recipe.seed,
      weightDecay: recipe.weightDecay,
      maxGradNorm: recipe.maxGradNorm,
      loggingSteps: recipe.loggingSteps,
      saveSteps: recipe.saveSteps,
      saveTotalLimit: recipe.saveTotalLimit,
      trainOnInputs: recipe.trainOnInputs,
      maxSteps: recipe.maxSteps,
      evalSteps: recipe.evalSteps,
      autoHyperparameters: job.trainingArguments?.autoHyperparameters ?? false,
    },
    compute,
    followUp: FollowUp.toJSON(job.followUp ?? FollowUp.fromPartial({})),
  };
}

/** Checks the id of a new job, or makes one. */
export function jobIdOf(id: string): string {
  if (id === "") return `ftjob-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  return checkResourceId("fine_tuning_job_id", id);
}
