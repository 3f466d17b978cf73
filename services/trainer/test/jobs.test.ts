import { mkdtempSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { baseConfigSchema, call, createClient, fromGrpcError, loadConfig, materializeFolder, startPlatform, withMetadata, type RunningPlatform } from "@lathe/kit";
import { evalLoss } from "@lathe/engine";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { LineageDirection, Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import type {
  FineTuningJob} from "@lathe/proto/lathe/trainer/v1/trainer_service";
import {
  ComputeBackend,
  FineTuningJob_State as State,
  TrainerServiceClient,
  type WatchFineTuningJobResponse,
} from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { createDatasetService } from "@lathe/dataset";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { trainerService } from "../src/index.js";
import { fails, jobRequest, options, supportRows } from "./support.js";

describe("TrainerService: jobs from dataset versions to registered adapters", () => {
  let t: TestPlatform;
  let worker: RunningPlatform | undefined;
  let acme: TrainerServiceClient;
  let globex: TrainerServiceClient;
  let registry: RegistryServiceClient;
  let train = "";
  let evalV = "";
  let raw = "";
  const dir = mkdtempSync(join(tmpdir(), "lathe-trainer-"));
  const modelDir = join(dir, "tiny");

  /** A worker process: only the trainer, on the API platform's database, bus and artifacts. */
  const startWorker = async (): Promise<RunningPlatform> => {
    const base = t.platform.deps.config;
    const config = loadConfig(baseConfigSchema, {
      LATHE_GRPC_HOST: "127.0.0.1",
      LATHE_GRPC_PORT: "0",
      LATHE_PG_URL: t.pgUrl,
      LATHE_NATS_URL: t.nats?.url,
      LATHE_EVENTS_PREFIX: t.nats?.prefix ?? "",
      LATHE_API_KEYS: `${testKeys.acme}=acme`,
      LATHE_LOG_LEVEL: process.env["LATHE_TEST_LOG_LEVEL"] ?? "silent",
      LATHE_OUTBOX_POLL_MS: "100",
      LATHE_SHUTDOWN_GRACE_MS: "2000",
      LATHE_DATA_DIR: base.LATHE_DATA_DIR,
      LATHE_REGISTRY_ADDR: t.address,
      LATHE_DATASET_ADDR: t.address,
    });
    return startPlatform({ name: "trainer-worker", config, factories: [trainerService(options(1))] });
  };

  const watch = (client: TrainerServiceClient, name: string): Promise<FineTuningJob[]> =>
    new Promise((resolve, reject) => {
      const seen: FineTuningJob[] = [];
      const s = client.watchFineTuningJob({ name });
      s.on("data", (m: WatchFineTuningJobResponse) => seen.push(m.fineTuningJob!));
      s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
      s.on("end", () => resolve(seen));
    });

  beforeAll(async () => {
    await writeTinyModel(modelDir, { seed: 1 });
    // The API platform runs no training itself (0 worker slots); worker processes do.
    // The registry imports server-side folders only inside its import roots.
    t = await startTestPlatform({ env: { LATHE_IMPORT_ROOTS: dir }, factories: [createRegistryService, createDatasetService, trainerService(options(0))] });
    acme = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.globex });
    registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: modelDir }), requestId: "" });
    const datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
    await call(datasets, "createDataset", { datasetId: "support", dataset: Dataset.fromPartial({ displayName: "Support" }), requestId: "" });
    raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/support" }) });
      c.write({ chunk: Buffer.from(supportRows(20)) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    datasets.close();
    train = split.datasetVersion!.name;
    evalV = split.evalDatasetVersion!.name;
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    registry?.close();
    await worker?.stop();
    await t?.stop();
  });

  it("refuses what it cannot train, naming the field", async () => {
    const create = (job: FineTuningJob, id = "") => call(acme, "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: job, requestId: "" });
    expect(await fails(create(jobRequest(train, evalV, { baseModel: "" })))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.base_model" });
    expect(await fails(create(jobRequest(train, evalV, { baseModel: "models/nope" })))).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("models/nope is not a registered model") });
    expect(await fails(create(jobRequest("datasets/support/versions/nope", evalV)))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.train_dataset_version" });
    const badModule = jobRequest(train, evalV);
    badModule.loraConfig!.targetModules = ["q_proj", "qkv"];
    expect(await fails(create(badModule))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.lora_config.target_modules[1]" });
    const maxSteps = jobRequest(train, evalV);
    maxSteps.trainingArguments!.maxSteps = -1;
    expect(await fails(create(maxSteps))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.training_arguments.max_steps" });
    const long = jobRequest(train, evalV);
    long.trainingArguments!.maxSeqLength = 1 << 20;
    expect(await fails(create(long))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.training_arguments.max_seq_length", message: expect.stringContaining("context length") });
    expect(await fails(create(jobRequest(train, evalV, { compute: { backend: ComputeBackend.COMPUTE_BACKEND_CUDA, gpuCount: 1, hardware: "" } })))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "NO_GPU_SLOTS" });
    expect(await fails(create(jobRequest(train, evalV), "Bad Id"))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job_id" });
    const elsewhere = jobRequest(train, evalV, { followUp: { registration: { adapter: "models/other/adapters/x", description: "", labels: {} } } });
    expect(await fails(create(elsewhere))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.follow_up.registration.adapter" });
    expect((await call(acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" })).fineTuningJobs).toEqual([]);
  });

  it("estimates tokens, steps, memory and cost per hardware type without creating a job", async () => {
    const { estimate } = await call(acme, "estimateFineTuningJob", { fineTuningJob: jobRequest(train, evalV), hardware: [] });
    expect(estimate).toMatchObject({ trainRowCount: 16, sequencesPerEpoch: 16, stepsPerEpoch: 4, totalSteps: 12, recommendedHardware: "cpu" });
    expect(estimate!.tokensPerEpoch).toBeGreaterThan(estimate!.trainedTokensPerEpoch);
    expect(estimate!.hardwareEstimates.map((h) => h.hardware)).toEqual(expect.arrayContaining(["cpu", "nvidia-a100-40gb", "nvidia-h100-80gb"]));
    const a100 = estimate!.hardwareEstimates.find((h) => h.hardware === "nvidia-a100-40gb")!;
    expect(a100).toMatchObject({ fits: true, currencyCode: "USD", hourlyPrice: 2.67 });
    const only = await call(acme, "estimateFineTuningJob", { fineTuningJob: jobRequest(train, evalV), hardware: ["nvidia-a10g-24gb"] });
    expect(only.estimate!.hardwareEstimates.map((h) => h.hardware)).toEqual(["nvidia-a10g-24gb"]);
    expect(await fails(call(acme, "estimateFineTuningJob", { fineTuningJob: jobRequest(train, evalV), hardware: ["tpu-v9"] }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "hardware[0]" });
  });

  it("trains a queued job on a worker, streams its progress, keeps checkpoints, and the registry registers its adapter with lineage back to the dataset", async () => {
    const followUp = { registration: { adapter: "models/tiny/adapters/support", description: "from a job", labels: {} } };
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const traced = withMetadata({ traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
    const { fineTuningJob: queued } = await call(acme, "createFineTuningJob", { fineTuningJobId: "first", fineTuningJob: jobRequest(train, evalV, { followUp, labels: { team: "support" } }), requestId: "req-first" }, traced);
    expect(queued).toMatchObject({ name: "fineTuningJobs/first", state: State.STATE_QUEUED, attemptCount: 0 });
    expect(queued!.estimate!.totalSteps).toBe(12);
    // A retry (the same request with the same request id) returns the same job.
    const again = await call(acme, "createFineTuningJob", { fineTuningJobId: "first", fineTuningJob: jobRequest(train, evalV, { followUp, labels: { team: "support" } }), requestId: "req-first" });
    expect(again.fineTuningJob!.name).toBe("fineTuningJobs/first");
    // Another tenant sees nothing of it.
    expect(await fails(call(globex, "getFineTuningJob", { name: "fineTuningJobs/first" }))).toMatchObject({ code: "NOT_FOUND" });
    expect((await call(globex, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" })).fineTuningJobs).toEqual([]);

    const streamed = watch(acme, "fineTuningJobs/first");
    worker = await startWorker();
    const seen = await streamed;
    const done = seen[seen.length - 1]!;
    expect(done.state).toBe(State.STATE_SUCCEEDED);
    expect(seen[0]!.state).toBe(State.STATE_QUEUED);
    expect(seen.some((j) => j.state === State.STATE_RUNNING && (j.progress?.step ?? 0) > 0)).toBe(true);
    expect(done.progress).toMatchObject({ step: 12, totalSteps: 12 });
    // The stream carries logged steps (logging_steps 2), not every step.
    const steps = seen.filter((j) => j.state === State.STATE_RUNNING).map((j) => j.progress?.step ?? 0);
    expect(steps.every((s) => s % 2 === 0)).toBe(true);
    expect(done.progress!.epoch).toBeCloseTo(3, 10);
    expect(done).toMatchObject({ attemptCount: 1, worker: expect.stringMatching(/^local-/) });
    expect(done.result!.adapterArtifactDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(done.result!.checkpoint).toBe("fineTuningJobs/first/checkpoints/step-12");
    expect(done.result!.chatTemplateFingerprint).toMatch(/^sha256:/);

    // Checkpoints every 2 steps, each in the artifact store; the eval loss at each epoch's end.
    const { checkpoints } = await call(acme, "listCheckpoints", { parent: "fineTuningJobs/first", pageSize: 0, pageToken: "" });
    expect(checkpoints.map((c) => c.step)).toEqual([2, 4, 6, 8, 10, 12]);
    expect(checkpoints.filter((c) => c.evalLoss !== undefined).map((c) => c.step)).toEqual([4, 8, 12]);
    expect(done.result!.finalEvalLoss).toBe(checkpoints[5]!.evalLoss);
    // The last epoch's eval loss, measured after its last logged step, reaches the progress too.
    expect(done.progress!.evalLoss).toBe(done.result!.finalEvalLoss);
    // The adapter names the model it was trained on, not the worker's cache folder.
    const adapterDir = join(dir, "adapter-first");
    await materializeFolder(t.platform.deps.artifacts, done.result!.adapterArtifactDigest.replace(/^sha256:/, ""), adapterDir);
    expect(JSON.parse(await readFile(join(adapterDir, "adapter_config.json"), "utf8"))).toMatchObject({ base_model_name_or_path: "models/tiny" });

    // It learned: the eval loss of the adapter is well under the base model's.
    const evalFile = join(dir, "eval.jsonl");
    await writeFile(evalFile, `${supportRows(20).split("\n").slice(16).join("\n")}\n`);
    const base = await evalLoss(modelDir, evalFile, { numThreads: 1 });
    expect(done.result!.finalEvalLoss!).toBeLessThan(base.loss * 0.8);

    // The registry registers the adapter the job asked for, and the job learns its version.
    const versioned = await waitFor(async () => {
      const j = (await call(acme, "getFineTuningJob", { name: "fineTuningJobs/first" })).fineTuningJob!;
      return j.adapterVersion !== "" ? j : undefined;
    }, { timeoutMs: 20_000, what: "the job's adapter version" });
    const version = (await call(registry, "getAdapterVersion", { name: versioned.adapterVersion })).adapterVersion!;
    expect(version).toMatchObject({ fineTuningJob: "fineTuningJobs/first", artifactDigest: done.result!.adapterArtifactDigest, trainDatasetVersion: train, evalDatasetVersion: evalV, chatTemplateFingerprint: done.result!.chatTemplateFingerprint });

    // Lineage, filled from the events of the dataset service, the trainer and the registry.
    const up = await call(registry, "getLineage", { name: versioned.adapterVersion, direction: LineageDirection.LINEAGE_DIRECTION_UPSTREAM, depth: 6 });
    expect(up.nodes.map((n) => n.name)).toEqual(expect.arrayContaining(["fineTuningJobs/first", "models/tiny", train, evalV, raw]));
    const down = await call(registry, "getLineage", { name: raw, direction: LineageDirection.LINEAGE_DIRECTION_DOWNSTREAM, depth: 6 });
    expect(down.nodes.map((n) => n.name)).toEqual(expect.arrayContaining([train, "fineTuningJobs/first", versioned.adapterVersion, "fineTuningJobs/first/checkpoints/step-12"]));

    // One trace: the worker's events continue the trace of the call that created the job.
    const db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
    try {
      const { rows } = await db.query<{ subject: string; traceparent: string }>("select subject, headers->>'traceparent' as traceparent from trainer.outbox order by seq");
      const traceOf = (subject: string) => rows.find((r) => r.subject.endsWith(subject))?.traceparent.split("-")[1];
      expect(traceOf("fine_tuning_job_queued")).toBe(traceId);
      expect(traceOf("fine_tuning_job_succeeded")).toBe(traceOf("fine_tuning_job_queued"));
      expect(traceOf("checkpoint_saved")).toBe(traceOf("fine_tuning_job_queued"));
    } finally {
      await db.end();
    }

    // Filters.
    const list = (filter: string) => call(acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter }).then((r) => r.fineTuningJobs.map((j) => j.name));
    expect(await list("state = STATE_SUCCEEDED AND labels.team = \"support\"")).toEqual(["fineTuningJobs/first"]);
    expect(await list("state != STATE_SUCCEEDED")).toEqual([]);
    expect(await list(`train_dataset_version = "${train}"`)).toEqual(["fineTuningJobs/first"]);
    expect(await fails(list("colour = \"red\""))).toMatchObject({ code: "INVALID_ARGUMENT", field: "filter" });
    expect(await fails(call(acme, "cancelFineTuningJob", { name: "fineTuningJobs/first", reason: "" }))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "FINE_TUNING_JOB_FINISHED" });
  }, 120_000);

  it("cancels a running job within a step and keeps its checkpoints", async () => {
    const long = jobRequest(train, evalV);
    long.trainingArguments!.numTrainEpochs = 100;
    long.trainingArguments!.perDeviceTrainBatchSize = 1;
    await call(acme, "createFineTuningJob", { fineTuningJobId: "long", fineTuningJob: long, requestId: "" });
    await waitFor(async () => ((await call(acme, "listCheckpoints", { parent: "fineTuningJobs/long", pageSize: 0, pageToken: "" })).checkpoints.length > 0 ? true : undefined), { timeoutMs: 60_000, what: "a checkpoint" });
    const { fineTuningJob: cancelled } = await call(acme, "cancelFineTuningJob", { name: "fineTuningJobs/long", reason: "wrong data" });
    expect(cancelled).toMatchObject({ state: State.STATE_CANCELLED, cancelReason: "wrong data" });
    const stepAtCancel = cancelled!.progress?.step ?? 0;
    await new Promise((r) => setTimeout(r, 500));
    const later = (await call(acme, "getFineTuningJob", { name: "fineTuningJobs/long" })).fineTuningJob!;
    expect(later.state).toBe(State.STATE_CANCELLED);
    expect(later.progress!.step).toBeLessThanOrEqual(stepAtCancel + 1);
    expect((await call(acme, "listCheckpoints", { parent: "fineTuningJobs/long", pageSize: 0, pageToken: "" })).checkpoints.length).toBeGreaterThan(0);
  }, 90_000);

  it("a job whose worker stops is taken up by another from its last checkpoint, and ends with the same adapter as an uninterrupted run", async () => {
    const spec = jobRequest(train, evalV);
    spec.trainingArguments!.numTrainEpochs = 4;
    spec.trainingArguments!.perDeviceTrainBatchSize = 2;
    await call(acme, "createFineTuningJob", { fineTuningJobId: "whole", fineTuningJob: spec, requestId: "" });
    const whole = (await watch(acme, "fineTuningJobs/whole")).pop()!;
    expect(whole.state).toBe(State.STATE_SUCCEEDED);

    await call(acme, "createFineTuningJob", { fineTuningJobId: "interrupted", fineTuningJob: spec, requestId: "" });
    await waitFor(async () => ((await call(acme, "listCheckpoints", { parent: "fineTuningJobs/interrupted", pageSize: 0, pageToken: "" })).checkpoints.length >= 2 ? true : undefined), { timeoutMs: 60_000, what: "two checkpoints" });
    await worker!.stop(); // gives the job back to the queue
    worker = undefined;
    const between = (await call(acme, "getFineTuningJob", { name: "fineTuningJobs/interrupted" })).fineTuningJob!;
    expect(between.state).toBe(State.STATE_QUEUED);

    worker = await startWorker();
    const resumed = (await watch(acme, "fineTuningJobs/interrupted")).pop()!;
    expect(resumed).toMatchObject({ state: State.STATE_SUCCEEDED, attemptCount: 2 });
    expect(resumed.result!.adapterArtifactDigest).toBe(whole.result!.adapterArtifactDigest);
  }, 120_000);

  it("takes over a job whose worker was lost once its lease runs out", async () => {
    await worker!.stop();
    worker = undefined;
    await call(acme, "createFineTuningJob", { fineTuningJobId: "orphan", fineTuningJob: jobRequest(train, evalV), requestId: "" });
    // A worker that claimed the job and died: RUNNING, its lease over.
    const client = new pg.Client({ connectionString: t.pgUrl });
    await client.connect();
    try {
      await client.query("update trainer.jobs set state = 'RUNNING', worker = 'local-dead', attempt_count = 1, lease_until = now() - interval '1 second' where job_id = 'orphan'");
    } finally {
      await client.end();
    }
    worker = await startWorker();
    const done = (await watch(acme, "fineTuningJobs/orphan")).pop()!;
    expect(done).toMatchObject({ state: State.STATE_SUCCEEDED, attemptCount: 2 });
    expect(done.worker).not.toBe("local-dead");
  }, 90_000);
});
