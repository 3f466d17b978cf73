import { join, resolve } from "node:path";
import { devices } from "@lathe/engine";
import { ConfigError, EventConsumer, prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { TrainerServiceService } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { trainerOptionsOf, type TrainerOptions } from "./config.js";
import { migrations } from "./db/migrations.js";
import { schema, type TrainerTables } from "./db/tables.js";
import { maxGpusPerJob } from "./domain/compute.js";
import { loadCostTable } from "./domain/estimate.js";
import { JobStore } from "./domain/job-store.js";
import { JobLeases } from "./domain/lease.js";
import { ThroughputHistory } from "./domain/throughput.js";
import { LocalWorker } from "./domain/worker.js";
import { adapterVersionCreated } from "./events.js";
import { kubernetesOptionsOf } from "./runner/kubernetes-config.js";
import { KubernetesRunner, kubernetesApis } from "./runner/kubernetes-runner.js";
import { MetricsServer, TrainerMetrics } from "./metrics-server.js";
import { trainerHandlers } from "./service.js";

export { configSchema, trainerOptionsOf, trainerOptionsSchema, type TrainerConfig, type TrainerOptions } from "./config.js";
export { defaultCostTable, type CostTable } from "./domain/estimate.js";
export * from "./events.js";
export { runTrainJob, parseTrainJobArgs, type TrainJobArgs } from "./runner/train-job.js";
export { trainingJobManifest, trainingJobName } from "./runner/job-manifest.js";
export { kubernetesOptionsOf, type KubernetesOptions } from "./runner/kubernetes-config.js";

/**
 * The GPU jobs this process trains at once (LATHE_TRAINER_GPUS): "auto" is 1 where the engine can
 * use a CUDA device here, else 0; a number above 0 needs one, unless GPU jobs are told to train on
 * the CPU (LATHE_TRAINER_GPU_DEVICE=cpu).
 */
export function localGpuSlots(options: Pick<TrainerOptions, "LATHE_TRAINER_GPUS" | "LATHE_TRAINER_GPU_DEVICE">, usable: readonly string[] = devices()): number {
  const asked = options.LATHE_TRAINER_GPUS ?? "auto";
  const cuda = usable.includes("cuda");
  if (asked === "auto") return cuda ? 1 : 0;
  if (asked > 0 && !cuda && (options.LATHE_TRAINER_GPU_DEVICE ?? "cuda") === "cuda")
    throw new ConfigError([
      `LATHE_TRAINER_GPUS: ${asked} GPU slots, but the engine has no CUDA device here (devices: ${usable.join(", ")}): build the engine with its CUDA backend on a machine with an NVIDIA GPU, set LATHE_TRAINER_GPUS=0, or LATHE_TRAINER_GPU_DEVICE=cpu to train GPU jobs on the CPU`,
    ]);
  return asked;
}

/**
 * A trainer service with the given options: migrates its schema, serves TrainerService, relays
 * its outbox, runs CPU jobs on its local worker slots, GPU jobs on its own GPU slots
 * (LATHE_TRAINER_GPUS) and, with LATHE_TRAINER_K8S_NAMESPACE, GPU jobs (or all) as Kubernetes Jobs, learns from the registry which adapter version each job
 * became and, with LATHE_TRAINER_METRICS_PORT, serves Prometheus metrics.
 */
export function trainerService(options: TrainerOptions): ServiceFactory {
  return async (deps) => {
    const kubernetes = kubernetesOptionsOf(options);
    const gpus = localGpuSlots(options);
    const base = await prepareService(deps, schema, migrations);
    const db = deps.db as Kysely<TrainerTables>;
    const jobs = new JobStore(db, () => base.relay.notify());
    const dataDir = resolve(deps.config.LATHE_DATA_DIR);
    const costTable = loadCostTable(options.LATHE_TRAINER_COST_TABLE);
    const leases = new JobLeases(db, jobs, { maxRunningJobs: options.LATHE_TRAINER_MAX_RUNNING_PER_TENANT ?? 0, maxGpus: options.LATHE_TRAINER_MAX_GPUS_PER_TENANT ?? 0 });
    if (kubernetes?.route === "all" && options.LATHE_TRAINER_WORKERS > 0) deps.logger.info({ workers: options.LATHE_TRAINER_WORKERS }, "LATHE_TRAINER_K8S_ROUTE is all: every job runs as a Kubernetes Job, the local worker slots stay idle");
    const worker = new LocalWorker({
      jobs,
      leases,
      artifacts: deps.artifacts,
      logger: deps.logger.child({ component: "trainer-worker" }),
      workDir: join(dataDir, "work", "trainer"),
      slots: kubernetes?.route === "all" ? 0 : options.LATHE_TRAINER_WORKERS,
      gpuSlots: kubernetes?.route === "all" ? 0 : gpus,
      gpuDevice: options.LATHE_TRAINER_GPU_DEVICE,
      threads: options.LATHE_TRAINER_THREADS,
      pollMs: options.LATHE_TRAINER_POLL_MS,
      leaseMs: options.LATHE_TRAINER_LEASE_MS,
    });
    const runner =
      kubernetes === null
        ? undefined
        : new KubernetesRunner({
            leases,
            logger: deps.logger.child({ component: "trainer-kubernetes" }),
            apis: kubernetesApis(kubernetes.kubeconfig),
            config: kubernetes,
            paths: { dataDir, artifactsDir: resolve(deps.config.LATHE_ARTIFACTS_DIR ?? join(dataDir, "artifacts")), gpuDevice: options.LATHE_TRAINER_GPU_DEVICE },
            pollMs: options.LATHE_TRAINER_POLL_MS,
            leaseMs: options.LATHE_TRAINER_LEASE_MS,
          });
    const metricsPort = options.LATHE_TRAINER_METRICS_PORT ?? 0;
    const metrics = metricsPort === 0 ? undefined : new MetricsServer(new TrainerMetrics(db), { host: options.LATHE_TRAINER_METRICS_HOST ?? "0.0.0.0", port: metricsPort, logger: deps.logger.child({ component: "trainer-metrics" }) });
    const consumer = new EventConsumer<TrainerTables>({ name: "trainer", db, schema, bus: deps.bus, logger: deps.logger }).on(adapterVersionCreated, async (e, { trx, meta }) => {
      if (e.fineTuningJob !== "") await jobs.setAdapterVersion(trx, meta.tenant, e.fineTuningJob, e.adapterVersion);
    });
    return {
      name: "trainer",
      register(server) {
        server.add(
          "lathe.trainer.v1.TrainerService",
          TrainerServiceService,
          trainerHandlers({
            jobs,
            artifacts: deps.artifacts,
            costTable,
            cacheDir: join(dataDir, "cache", "trainer"),
            peer: (s) => deps.peerAddress(s),
            onQueued: () => {
              worker.notify();
              runner?.notify();
            },
            gpusPerJob: kubernetes !== null ? maxGpusPerJob : gpus > 0 ? 1 : 0,
            maxGpusPerTenant: options.LATHE_TRAINER_MAX_GPUS_PER_TENANT ?? 0,
            watchPollMs: Math.min(1000, options.LATHE_TRAINER_POLL_MS),
            throughput: new ThroughputHistory(db),
          }),
        );
      },
      ...base.with(consumer, worker, ...(runner ? [runner] : []), ...(metrics ? [metrics] : [])),
    };
  };
}

/** The trainer service with the options of its config (LATHE_TRAINER_*, loaded with `configSchema`). */
export const createTrainerService: ServiceFactory = (deps) => trainerService(trainerOptionsOf(deps.config))(deps);
