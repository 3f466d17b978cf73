import { describe, expect, it } from "vitest";
import type { AppError } from "@lathe/kit";
import { FineTuningJob } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { applyAutoHyperparameters, autoSettings } from "./auto.js";
import type { DataShape } from "./estimate.js";
import { checkJobUsefulness, jobPlan } from "./guards.js";
import { validateJob } from "./spec.js";

type Args = NonNullable<Parameters<typeof FineTuningJob.fromPartial>[0]["trainingArguments"]>;
const job = (args: Args = {}, evalV = "") =>
  FineTuningJob.fromPartial({ baseModel: "models/tiny", trainDatasetVersion: "datasets/fmt/versions/v1", evalDatasetVersion: evalV, trainingArguments: args });
const spec = (args: Args = {}, evalV = "") => validateJob(job(args, evalV), ["cpu"]);

/** `rows` rows of `tokens` tokens, `trained` of them trained, packed `perSequence` to a sequence. */
function shape(rows: number, tokens: number, trained: number, sequences: number, truncated = 0): DataShape {
  return { rows, tokens: Array(rows).fill(tokens), trainedTokens: Array(rows).fill(trained), truncated, sequences };
}

const refusal = (f: () => unknown): AppError => {
  try {
    f();
  } catch (err) {
    return err as AppError;
  }
  throw new Error("not refused");
};
const reasons = (w: { reason: string }[]) => w.map((x) => x.reason);

describe("no useless jobs", () => {
  it("refuses the issue's job: 240 rows packed into 5 sequences, 1 epoch of batch 4 × 4 is one step, and warmup makes its learning rate 0", () => {
    const s = spec({ numTrainEpochs: 1 });
    const data = shape(240, 40, 20, 5);
    expect(jobPlan(s, data)).toMatchObject({ stepsPerEpoch: 1, totalSteps: 1, warmupSteps: 1 });
    expect(refusal(() => checkJobUsefulness(s, data))).toMatchObject({
      code: "FAILED_PRECONDITION",
      reason: "LEARNING_RATE_ALWAYS_ZERO",
      field: "fine_tuning_job.training_arguments.warmup_ratio",
      message: expect.stringContaining("240 rows packed into 5 sequences, batch 4 × 4 accumulated, 1 epoch: 1 optimizer step"),
    });
    // Without warmup the one step trains; the epoch is still smaller than the step asked for.
    const w = checkJobUsefulness(spec({ numTrainEpochs: 1, warmupRatio: 0 }), data);
    expect(w).toEqual([expect.objectContaining({ field: "fine_tuning_job.training_arguments.gradient_accumulation_steps", reason: "EPOCH_SMALLER_THAN_STEP", message: expect.stringContaining("(4 × 4 = 16)") })]);
  });

  it("warns when warmup rounds up to more than the share asked (3 steps, 3 %: one step of three)", () => {
    const w = checkJobUsefulness(spec({ numTrainEpochs: 3 }), shape(240, 40, 20, 5));
    expect(reasons(w)).toEqual(["EPOCH_SMALLER_THAN_STEP", "WARMUP_LONGER_THAN_ASKED"]);
    expect(w[1]).toMatchObject({ field: "fine_tuning_job.training_arguments.warmup_ratio", message: expect.stringContaining("needs at least 34 optimizer steps") });
    // 40 steps: 3 % is 1.2 steps, rounded up to 2; no warning.
    expect(checkJobUsefulness(spec({ numTrainEpochs: 1, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1 }), shape(40, 40, 20, 40))).toEqual([]);
  });

  it("refuses a job whose every row is truncated before its answer, and warns about rows that lose their answer or their end", () => {
    const s = spec({ maxSeqLength: 16 });
    expect(refusal(() => checkJobUsefulness(s, shape(20, 16, 0, 20, 20)))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "ALL_ROWS_TRUNCATED", field: "fine_tuning_job.training_arguments.max_seq_length" });
    expect(refusal(() => checkJobUsefulness(spec(), shape(20, 30, 0, 20)))).toMatchObject({ reason: "NO_TRAINED_TOKENS", field: "fine_tuning_job.train_dataset_version" });
    const mixed: DataShape = { rows: 40, tokens: [...Array(30).fill(10), ...Array(6).fill(16), ...Array(4).fill(16)], trainedTokens: [...Array(30).fill(4), ...Array(6).fill(0), ...Array(4).fill(3)], truncated: 10, sequences: 40 };
    const w = checkJobUsefulness(spec({ maxSeqLength: 16, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1 }), mixed);
    expect(w).toEqual([
      expect.objectContaining({ reason: "ROWS_TRUNCATED_AWAY", field: "fine_tuning_job.training_arguments.max_seq_length", message: expect.stringContaining("6 rows of 40 lose their whole answer") }),
      expect.objectContaining({ reason: "ROWS_TRUNCATED", message: expect.stringContaining("4 rows of 40 are longer than max_seq_length 16") }),
    ]);
  });

  it("max_steps decides the steps; eval_steps without an eval set, or past the end, is a warning", () => {
    expect(jobPlan(spec({ numTrainEpochs: 1, maxSteps: 50 }), { sequences: 64 })).toMatchObject({ stepsPerEpoch: 4, totalSteps: 50, epochs: 13, warmupSteps: 2 });
    expect(reasons(checkJobUsefulness(spec({ evalSteps: 5, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1 }), shape(40, 10, 4, 40)))).toEqual(["EVAL_STEPS_WITHOUT_EVAL_SET"]);
    expect(reasons(checkJobUsefulness(spec({ evalSteps: 500, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1 }, "datasets/fmt/versions/e"), shape(40, 10, 4, 40)))).toEqual(["EVAL_STEPS_PAST_END"]);
  });
});

describe("auto hyperparameters", () => {
  const auto = (args: Args, data: Pick<DataShape, "rows" | "sequences">) => applyAutoHyperparameters(spec(args), autoSettings(job(args)), data).args;

  it("picks nothing unless asked", () => {
    expect(autoSettings(job({ numTrainEpochs: 0 }))).toEqual([]);
  });

  it("small sets: more epochs (100 rows seen), batch 1, a learning rate scaled down with the batch, warmup when it is a step", () => {
    expect(auto({ autoHyperparameters: true }, { rows: 16, sequences: 16 })).toMatchObject({ epochs: 6, batchSize: 1, gradAccum: 1, lr: 5e-5, warmupRatio: 0.03 });
    // The 240 rows packed into 5 sequences: 3 epochs would be 15 steps, enough; no warmup (3 % of 15 is under a step).
    expect(auto({ autoHyperparameters: true }, { rows: 240, sequences: 5 })).toMatchObject({ epochs: 3, batchSize: 1, gradAccum: 1, warmupRatio: 0 });
    // 2 sequences: raised to 5 epochs for 10 steps.
    expect(auto({ autoHyperparameters: true }, { rows: 60, sequences: 2 })).toMatchObject({ epochs: 5 });
  });

  it("large sets: fewer epochs (25,000 rows seen), a batch of 0.2 % capped at 256, 4 per device, the rest accumulated", () => {
    expect(auto({ autoHyperparameters: true }, { rows: 20_000, sequences: 20_000 })).toMatchObject({ epochs: 1, batchSize: 4, gradAccum: 10, lr: 3.2e-4 });
    expect(auto({ autoHyperparameters: true }, { rows: 500_000, sequences: 200_000 })).toMatchObject({ epochs: 1, batchSize: 4, gradAccum: 64, lr: 8e-4 });
  });

  it("keeps what the request sets and picks the rest around it", () => {
    expect(auto({ autoHyperparameters: true, perDeviceTrainBatchSize: 8, learningRate: 1e-3, warmupRatio: 0.1 }, { rows: 20_000, sequences: 20_000 })).toMatchObject({ batchSize: 8, gradAccum: 5, lr: 1e-3, warmupRatio: 0.1, epochs: 1 });
  });
});
