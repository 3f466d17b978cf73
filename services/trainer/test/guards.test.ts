// "No useless jobs" on real Postgres, NATS and gRPC: what cannot train is refused naming the field,
// what trains worse than asked is a warning, max_steps / eval_steps / save_steps do what HF's
// Trainer does, a diverging job fails at the step its loss stopped being finite, and
// auto_hyperparameters picks from the data.
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, type RunningPlatform } from "@lathe/kit";
import { listTensors, readTensorF32, writeSafetensors, writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FineTuningJob, MetricsFormat, FineTuningJob_State as State } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { testKeys } from "@lathe/testing";
import { fails, jobRequest, startTrainerTestPlatform, supportRows, type TrainerTestPlatform } from "./support.js";

describe("TrainerService: no useless jobs", () => {
  let p: TrainerTestPlatform;
  let worker: RunningPlatform | undefined;
  let fmt = "";
  let broken = "";

  /** Uploads `text` as a new version of a new dataset `id`. */
  const upload = async (id: string, text: string): Promise<string> => {
    const datasets = createClient(DatasetServiceClient, p.t.address, { apiKey: testKeys.acme });
    try {
      await call(datasets, "createDataset", { datasetId: id, dataset: Dataset.fromPartial({ displayName: id }), requestId: "" });
      return await new Promise<string>((resolve, reject) => {
        const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
        c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: `datasets/${id}`, versionId: "v1" }) });
        c.write({ chunk: Buffer.from(text) });
        c.end();
      });
    } finally {
      datasets.close();
    }
  };
  const create = (job: FineTuningJob, id = "") => call(p.acme, "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: job, requestId: "" });
  const estimate = (job: FineTuningJob) => call(p.acme, "estimateFineTuningJob", { fineTuningJob: job, hardware: ["cpu"] });

  beforeAll(async () => {
    p = await startTrainerTestPlatform();
    fmt = await upload("fmt", supportRows(240));
    broken = await upload("broken", `${supportRows(20)}\n{"messages": [`);
    // A base model whose final norm is scaled by 1e36: its losses are near 1e35, so a learning rate of 1 overflows within a few steps.
    const hot = join(p.dir, "hot");
    await writeTinyModel(hot, { seed: 1 });
    const tensors = await listTensors(hot);
    const scaled = [];
    for (const t of tensors) {
      const data = await readTensorF32(t);
      if (t.name === "model.norm.weight") data.forEach((v, i) => (data[i] = v * 1e36));
      scaled.push({ name: t.name, dtype: "F32" as const, shape: t.shape, data });
    }
    await writeSafetensors(tensors[0]!.file, scaled);
    const registry = createClient(RegistryServiceClient, p.t.address, { apiKey: testKeys.acme });
    await call(registry, "createModel", { modelId: "hot", model: Model.fromPartial({ sourceUri: hot }), requestId: "" });
    registry.close();
    worker = await p.startWorker();
  }, 60_000);
  afterAll(async () => {
    await worker?.stop();
    await p?.stop();
  });

  it("refuses the issue's job (240 rows, 1 epoch: one optimizer step with learning rate 0) in Create and Estimate, naming warmup_ratio", async () => {
    // `lathe jobs create --model tiny --train fmt@v1 --epochs 1`: every other setting the recipe's.
    const asIssue = FineTuningJob.fromPartial({ baseModel: "models/tiny", trainDatasetVersion: fmt, trainingArguments: { numTrainEpochs: 1 } });
    for (const refused of [await fails(create(asIssue)), await fails(estimate(asIssue))]) {
      expect(refused).toMatchObject({ code: "FAILED_PRECONDITION", reason: "LEARNING_RATE_ALWAYS_ZERO", field: "fine_tuning_job.training_arguments.warmup_ratio" });
      expect(refused.message).toMatch(/240 rows packed into \d+ sequences, batch 4 × 4 accumulated, 1 epoch: 1 optimizer step, and warmup .* takes 1 step, so the learning rate is 0 at every step/);
    }
    // With 3 epochs it trains, with warnings in the response, the estimate and the job.
    const est = await estimate(FineTuningJob.fromPartial({ ...asIssue, trainingArguments: { numTrainEpochs: 3 } }));
    expect(est.warnings.map((w) => [w.field, w.reason])).toEqual([
      ["fine_tuning_job.training_arguments.gradient_accumulation_steps", "EPOCH_SMALLER_THAN_STEP"],
      ["fine_tuning_job.training_arguments.warmup_ratio", "WARMUP_LONGER_THAN_ASKED"],
    ]);
    expect(est.estimate!.warnings).toEqual(est.warnings);
    expect(est.trainingArguments).toMatchObject({ numTrainEpochs: 3, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 4, warmupRatio: 0.03 });
    expect((await call(p.acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" })).fineTuningJobs).toEqual([]);
  });

  it("refuses all rows truncated away (max_seq_length) and a NOT_READY dataset version, naming the field", async () => {
    const short = jobRequest(p.train, "");
    short.trainingArguments!.maxSeqLength = 16;
    expect(await fails(estimate(short))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "ALL_ROWS_TRUNCATED", field: "fine_tuning_job.training_arguments.max_seq_length" });
    expect(await fails(create(jobRequest(broken, "")))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "DATASET_VERSION_NOT_READY", field: "fine_tuning_job.train_dataset_version" });
    expect(await fails(create(jobRequest(p.train, broken)))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "DATASET_VERSION_NOT_READY", field: "fine_tuning_job.eval_dataset_version" });
  });

  it("max_steps, eval_steps and save_steps: 5 steps over 2 epochs of 4, eval loss every 2 steps and after the last, a checkpoint every 3 and at each end", async () => {
    const job = jobRequest(p.train, p.evalV, { trainingArguments: { numTrainEpochs: 1, maxSteps: 5, evalSteps: 2, saveSteps: 3, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, maxSeqLength: 128, packing: false, loggingSteps: 1, warmupRatio: 0 } });
    const { fineTuningJob: queued, warnings } = await create(job, "steps");
    expect(warnings).toEqual([]);
    expect(queued!.estimate).toMatchObject({ stepsPerEpoch: 4, totalSteps: 5 });
    expect(queued!.trainingArguments).toMatchObject({ maxSteps: 5, evalSteps: 2, saveSteps: 3 });
    const seen = await p.watch(queued!.name);
    const done = seen.at(-1)!;
    expect(done.state).toBe(State.STATE_SUCCEEDED);
    expect(done.progress).toMatchObject({ step: 5, totalSteps: 5 });
    expect(done.progress!.epoch).toBeCloseTo(1.25, 6);
    // The eval loss was measured at 2, 4 and 5, not only once per epoch: the logged steps say so
    // (a watcher may see fewer snapshots than steps when the job is this quick).
    const { rows } = await call(p.acme, "getFineTuningJobMetrics", { name: queued!.name, format: MetricsFormat.METRICS_FORMAT_UNSPECIFIED });
    expect(rows.filter((r) => r.evalLoss !== undefined).map((r) => r.step)).toEqual([2, 4, 5]);
    const { checkpoints } = await call(p.acme, "listCheckpoints", { parent: queued!.name, pageSize: 0, pageToken: "" });
    expect(checkpoints.map((c) => c.step)).toEqual([3, 4, 5]);
    expect(checkpoints.map((c) => c.evalLoss === undefined)).toEqual([true, false, false]);
    expect(done.result!.finalEvalLoss).toBe(checkpoints[2]!.evalLoss);
  });

  it("a diverging job fails at once at the step its loss stopped being finite, with reason LOSS_NOT_FINITE and what to lower", async () => {
    const job = jobRequest(p.train, "", { baseModel: "models/hot", loraConfig: { r: 8, loraAlpha: 16, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"], useRslora: false } });
    job.trainingArguments!.learningRate = 1;
    job.trainingArguments!.warmupRatio = 0;
    job.trainingArguments!.maxGradNorm = 1;
    const { fineTuningJob: queued } = await create(job, "diverges");
    const done = (await p.watch(queued!.name)).at(-1)!;
    expect(done.state).toBe(State.STATE_FAILED);
    expect(done.error).toMatchObject({ code: "INVALID_ARGUMENT", reason: "LOSS_NOT_FINITE", metadata: { field: "fine_tuning_job.training_arguments.learning_rate" } });
    expect(done.error!.message).toMatch(/not finite at step \d+ \(learning rate .*\): the run diverged; lower learning_rate/);
    const step = Number(/at step (\d+)/.exec(done.error!.message)![1]);
    expect(step).toBeLessThan(queued!.estimate!.totalSteps);
    expect(done.progress?.step ?? 0).toBeLessThan(step);
  });

  it("auto_hyperparameters picks epochs, batch and learning rate from the data and says so in the job", async () => {
    const job = FineTuningJob.fromPartial({ baseModel: "models/tiny", trainDatasetVersion: p.train, loraConfig: { r: 4, targetModules: ["q_proj", "v_proj"] }, trainingArguments: { autoHyperparameters: true, packing: false, maxSeqLength: 128 } });
    const est = await estimate(job);
    // 16 rows: 6 epochs (100 rows seen), batch 1 (0.2 % of 16 sequences, at least 1), 2e-4 × √(1/16).
    expect(est.trainingArguments).toMatchObject({ autoHyperparameters: true, numTrainEpochs: 6, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1, learningRate: 5e-5, warmupRatio: 0.03 });
    expect(est.estimate).toMatchObject({ stepsPerEpoch: 16, totalSteps: 96 });
    expect(est.warnings).toEqual([]);
    // What the request sets is kept.
    const kept = await estimate(FineTuningJob.fromPartial({ ...job, trainingArguments: { ...job.trainingArguments, numTrainEpochs: 2 } }));
    expect(kept.trainingArguments).toMatchObject({ numTrainEpochs: 2, learningRate: 5e-5 });
  });
});
