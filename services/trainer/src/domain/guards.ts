import { AppError } from "@lathe/kit";
import { peakLr, planSteps, type StepPlan } from "@lathe/engine";
import type { FineTuningWarning } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { DataShape } from "./estimate.js";
import type { JobSpec } from "./spec.js";

/*
 * "No useless jobs": what a job's settings do on its data, checked once the data is tokenized
 * (CreateFineTuningJob and EstimateFineTuningJob both). What cannot train at all is refused with
 * FAILED_PRECONDITION naming the field to change; what trains worse than it was probably meant to
 * is a warning, and the job is accepted. The settings are never changed behind the user's back.
 */

const arg = (name: string) => `fine_tuning_job.training_arguments.${name}`;

/** The steps a job takes on its data, as the engine will take them. */
export function jobPlan(spec: JobSpec, data: Pick<DataShape, "sequences">): StepPlan {
  const a = spec.args;
  return planSteps({ units: data.sequences, batchSize: a.batchSize, gradAccum: a.gradAccum, epochs: a.epochs, maxSteps: a.maxSteps ?? 0, warmupRatio: a.warmupRatio });
}

const plural = (n: number, one: string, many = `${one}s`) => `${n.toLocaleString("en-US")} ${n === 1 ? one : many}`;

/** How the run's steps come about, for messages: "240 rows packed into 3 sequences, batch 4 × 4, 1 epoch". */
function stepsText(spec: JobSpec, data: DataShape, plan: StepPlan): string {
  const a = spec.args;
  const seqs = a.packing ? `${plural(data.rows, "row")} packed into ${plural(data.sequences, "sequence")}` : plural(data.sequences, "row");
  const length = (a.maxSteps ?? 0) > 0 ? `max_steps ${a.maxSteps}` : plural(a.epochs, "epoch");
  return `${seqs}, batch ${a.batchSize} × ${a.gradAccum} accumulated, ${length}: ${plural(plan.totalSteps, "optimizer step")}`;
}

/**
 * Refuses a job that cannot train (every row truncated away, or a learning rate of 0 at every
 * step) and returns the warnings of one that trains worse than asked.
 * @throws AppError FAILED_PRECONDITION naming the field to change.
 */
export function checkJobUsefulness(spec: JobSpec, data: DataShape): FineTuningWarning[] {
  const a = spec.args;
  const warnings: FineTuningWarning[] = [];
  const warn = (field: string, reason: string, message: string) => warnings.push({ field, reason, message });

  // Rows whose every trained token lies past max_seq_length teach nothing.
  const trained = data.trainedTokens.reduce((s, t) => s + t, 0);
  const cutAway = data.trainedTokens.filter((t, i) => t === 0 && (data.tokens[i] ?? 0) >= a.maxSeqLength).length;
  if (trained === 0) {
    if (cutAway > 0) {
      throw new AppError(
        "FAILED_PRECONDITION",
        "ALL_ROWS_TRUNCATED",
        `${arg("max_seq_length")}: at ${a.maxSeqLength} tokens every row of ${spec.trainDatasetVersion} is cut before its answer starts, so no token would be trained; raise max_seq_length (the model takes up to its context length) or shorten the prompts`,
        { field: arg("max_seq_length") },
      );
    }
    throw new AppError(
      "FAILED_PRECONDITION",
      "NO_TRAINED_TOKENS",
      `fine_tuning_job.train_dataset_version: ${spec.trainDatasetVersion} has no assistant answer to train on; give rows with an assistant turn, or set train_on_inputs`,
      { field: "fine_tuning_job.train_dataset_version" },
    );
  }
  if (cutAway > 0) {
    warn(arg("max_seq_length"), "ROWS_TRUNCATED_AWAY", `${plural(cutAway, "row")} of ${data.rows} lose their whole answer at max_seq_length ${a.maxSeqLength} and teach nothing; raise max_seq_length or shorten their prompts`);
  }
  const cutShort = data.truncated - cutAway;
  if (cutShort > 0) {
    warn(arg("max_seq_length"), "ROWS_TRUNCATED", `${plural(cutShort, "row")} of ${data.rows} are longer than max_seq_length ${a.maxSeqLength} and lose their end (the answer is trained only up to the cut); raise max_seq_length to train them whole`);
  }

  const plan = jobPlan(spec, data);
  const schedule = { scheduler: a.scheduler, baseLr: a.lr, totalSteps: plan.totalSteps, warmupSteps: plan.warmupSteps };
  if (peakLr(schedule) === 0) {
    throw new AppError(
      "FAILED_PRECONDITION",
      "LEARNING_RATE_ALWAYS_ZERO",
      `${arg("warmup_ratio")}: the job takes ${stepsText(spec, data, plan)}, and warmup (warmup_ratio ${a.warmupRatio}) takes ${plural(plan.warmupSteps, "step")}, so the learning rate is 0 at every step and the adapter would not change; set warmup_ratio 0, or take more steps: more epochs, max_steps, or a smaller per_device_train_batch_size or gradient_accumulation_steps`,
      { field: arg("warmup_ratio") },
    );
  }

  const perStep = a.batchSize * a.gradAccum;
  if (data.sequences < perStep) {
    const field = a.gradAccum > 1 ? arg("gradient_accumulation_steps") : arg("per_device_train_batch_size");
    warn(
      field,
      "EPOCH_SMALLER_THAN_STEP",
      `an epoch has ${plural(data.sequences, "sequence")}${a.packing ? ` (${plural(data.rows, "row")} packed)` : ""}, fewer than one optimizer step takes (${a.batchSize} × ${a.gradAccum} = ${perStep}): each epoch is a single step of ${data.sequences}; lower ${a.gradAccum > 1 ? "gradient_accumulation_steps" : "per_device_train_batch_size"}${a.packing ? " or turn packing off" : ""} for more, smaller steps`,
    );
  }
  // HF rounds warmup up to whole steps: with few steps it takes a larger share than asked, and its first step has lr 0.
  if (plan.warmupSteps > 0 && a.warmupRatio * plan.totalSteps < 1) {
    warn(
      arg("warmup_ratio"),
      "WARMUP_LONGER_THAN_ASKED",
      `warmup_ratio ${a.warmupRatio} needs at least ${Math.ceil(1 / a.warmupRatio)} optimizer steps to be one step; the job takes ${stepsText(spec, data, plan)}, so warmup rounds up to ${plural(plan.warmupSteps, "step")} (${Math.round((100 * plan.warmupSteps) / plan.totalSteps)} % of the run, the first with learning rate 0); set warmup_ratio 0 or take more steps`,
    );
  }
  const evalSteps = a.evalSteps ?? 0;
  if (evalSteps > 0 && spec.evalDatasetVersion === "") {
    warn(arg("eval_steps"), "EVAL_STEPS_WITHOUT_EVAL_SET", `eval_steps ${evalSteps} has nothing to evaluate: the job has no eval_dataset_version`);
  } else if (evalSteps > plan.totalSteps && spec.evalDatasetVersion !== "") {
    warn(arg("eval_steps"), "EVAL_STEPS_PAST_END", `eval_steps ${evalSteps} is more than the job's ${plan.totalSteps} steps: the eval loss is computed only after the last step`);
  }
  return warnings;
}
