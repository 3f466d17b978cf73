import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { baseConfigSchema, call, createClient, fromGrpcError, loadConfig, startPlatform, type AppError, type RunningPlatform } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FineTuningJob, TrainerServiceClient, type WatchFineTuningJobResponse } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { createDatasetService } from "@lathe/dataset";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { trainerService, type TrainerOptions } from "../src/index.js";

/* Shared by the trainer's integration tests: a platform with the tiny model registered and a split support set. */

export const fails = (p: Promise<unknown>): Promise<AppError> =>
  p.then(
    () => {
      throw new Error("the call succeeded");
    },
    (e: unknown) => e as AppError,
  );

export const options = (workers: number): TrainerOptions => ({ LATHE_TRAINER_WORKERS: workers, LATHE_TRAINER_THREADS: 1, LATHE_TRAINER_POLL_MS: 100, LATHE_TRAINER_LEASE_MS: 1500 });

/** A small support-desk set in chat form, the same every time. */
export function supportRows(n: number): string {
  const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet"];
  const issues = ["does not turn on", "keeps restarting", "is very slow", "shows an error code", "loses its connection", "makes a strange noise"];
  return Array.from({ length: n }, (_, i) => {
    const p = products[i % products.length]!;
    const issue = issues[i % issues.length]!;
    return JSON.stringify({
      messages: [
        { role: "user", content: `My ${p} ${issue} (ticket ${1000 + i}). What should I do?` },
        { role: "assistant", content: `Unplug the ${p} for thirty seconds and start it again. If it still ${issue}, reply to ticket ${1000 + i}.` },
      ],
    });
  }).join("\n");
}

/** The request of a small job on the tiny model: LoRA on some projections and the head. */
export function jobRequest(train: string, evalV: string, over: Parameters<typeof FineTuningJob.fromPartial>[0] = {}): FineTuningJob {
  return FineTuningJob.fromPartial({
    baseModel: "models/tiny",
    trainDatasetVersion: train,
    evalDatasetVersion: evalV,
    loraConfig: { r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"], useRslora: false },
    trainingArguments: { numTrainEpochs: 3, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, maxSeqLength: 128, packing: false, loggingSteps: 2, saveSteps: 2 },
    ...over,
  });
}

export interface TrainerTestPlatform {
  t: TestPlatform;
  acme: TrainerServiceClient;
  train: string;
  evalV: string;
  /** A scratch folder of the test. */
  dir: string;
  /** A worker process: only the trainer, on the platform's database, bus and artifacts; `dataDir` holds its work folder. */
  startWorker(opts?: { dataDir?: string; artifactsDir?: string }): Promise<RunningPlatform>;
  watch(name: string): Promise<FineTuningJob[]>;
  stop(): Promise<void>;
}

/** Registers the tiny model at `modelDir` as models/tiny and uploads 20 support rows split 80/20 (version `s`), as acme. */
export async function seedTinyAndSupport(address: string, modelDir: string): Promise<{ train: string; evalV: string }> {
  const registry = createClient(RegistryServiceClient, address, { apiKey: testKeys.acme });
  await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: modelDir }), requestId: "" });
  registry.close();
  const datasets = createClient(DatasetServiceClient, address, { apiKey: testKeys.acme });
  try {
    await call(datasets, "createDataset", { datasetId: "support", dataset: Dataset.fromPartial({ displayName: "Support" }), requestId: "" });
    const raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/support" }) });
      c.write({ chunk: Buffer.from(supportRows(20)) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    return { train: split.datasetVersion!.name, evalV: split.evalDatasetVersion!.name };
  } finally {
    datasets.close();
  }
}

/**
 * An API platform (registry, dataset, trainer without worker slots) with `models/tiny` and a
 * train/eval split; `trainer` adds options of the API's trainer (e.g. its metrics port).
 */
export async function startTrainerTestPlatform(trainer: Partial<TrainerOptions> = {}): Promise<TrainerTestPlatform> {
  const dir = mkdtempSync(join(tmpdir(), "lathe-trainer-"));
  const modelDir = join(dir, "tiny");
  await writeTinyModel(modelDir, { seed: 1 });
  // The registry imports server-side folders only inside its import roots.
  const t = await startTestPlatform({ env: { LATHE_IMPORT_ROOTS: dir }, factories: [createRegistryService, createDatasetService, trainerService({ ...options(0), ...trainer })] });
  const acme = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
  const split = await seedTinyAndSupport(t.address, modelDir);
  const base = t.platform.deps.config;
  return {
    t,
    acme,
    train: split.train,
    evalV: split.evalV,
    dir,
    startWorker(opts = {}) {
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
        LATHE_DATA_DIR: opts.dataDir ?? base.LATHE_DATA_DIR,
        LATHE_ARTIFACTS_DIR: opts.artifactsDir ?? base.LATHE_ARTIFACTS_DIR ?? join(base.LATHE_DATA_DIR, "artifacts"),
        LATHE_REGISTRY_ADDR: t.address,
        LATHE_DATASET_ADDR: t.address,
      });
      return startPlatform({ name: "trainer-worker", config, factories: [trainerService(options(1))] });
    },
    watch: (name) =>
      new Promise((resolve, reject) => {
        const seen: FineTuningJob[] = [];
        const s = acme.watchFineTuningJob({ name });
        s.on("data", (m: WatchFineTuningJobResponse) => seen.push(m.fineTuningJob!));
        s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
        s.on("end", () => resolve(seen));
      }),
    async stop() {
      acme.close();
      await t.stop();
    },
  };
}
