import { join, resolve } from "node:path";
import { ConfigError, createLogger, LocalArtifactStore, loadConfig, openDatabase, type Logger } from "@lathe/kit";
import type { Kysely } from "kysely";
import { configSchema, trainerOptionsOf } from "../config.js";
import type { TrainerTables } from "../db/tables.js";
import { JobStore } from "../domain/job-store.js";
import { JobLeases } from "../domain/lease.js";
import { LocalWorker } from "../domain/worker.js";

/** What `train-job` is told: which job, which attempt, and the claim's holder (the Kubernetes Job's name). */
export interface TrainJobArgs {
  tenant: string;
  jobId: string;
  attempt: number;
  worker: string;
}

/** Reads `--job TENANT/JOB_ID --attempt N --worker NAME`; ConfigError naming the argument that is wrong. */
export function parseTrainJobArgs(argv: readonly string[]): TrainJobArgs {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    if (!["--job", "--attempt", "--worker"].includes(flag)) throw new ConfigError([`train-job: unknown argument ${JSON.stringify(flag)} (usage: train-job --job TENANT/JOB_ID --attempt N --worker NAME)`]);
    const value = argv[++i];
    if (value === undefined) throw new ConfigError([`train-job: ${flag} needs a value`]);
    given.set(flag, value);
  }
  const problems: string[] = [];
  const m = /^([a-z0-9][a-z0-9_-]{0,62})\/([a-z0-9][a-z0-9._-]{0,62})$/.exec(given.get("--job") ?? "");
  if (!m) problems.push(`train-job: --job must be TENANT/JOB_ID, got ${JSON.stringify(given.get("--job") ?? "")}`);
  const attempt = Number(given.get("--attempt"));
  if (!Number.isInteger(attempt) || attempt < 1) problems.push(`train-job: --attempt must be a whole number from 1, got ${JSON.stringify(given.get("--attempt") ?? "")}`);
  const worker = given.get("--worker") ?? "";
  if (worker === "") problems.push("train-job: --worker (the claim's holder, the Kubernetes Job's name) is required");
  if (problems.length > 0) throw new ConfigError(problems);
  return { tenant: m![1]!, jobId: m![2]!, attempt, worker };
}

/**
 * The training pod's process: trains one attempt that a Kubernetes runner claimed, then ends.
 * It reads the trainer's environment (Postgres, artifacts, LATHE_TRAINER_*), renews the runner's
 * claim while it trains, and records progress, checkpoints and the outcome as a local worker does;
 * `signal` (SIGTERM: the pod is being stopped) gives the job back to the queue. Resolves to the
 * exit code: 0 once the attempt ended with its outcome recorded (or it was no longer this
 * attempt's to run); a failure to start rejects.
 */
export async function runTrainJob(argv: readonly string[], env: Record<string, string | undefined>, opts: { signal?: AbortSignal; logger?: Logger } = {}): Promise<number> {
  const args = parseTrainJobArgs(argv);
  const config = loadConfig(configSchema, env);
  const options = trainerOptionsOf(config);
  if (!config.LATHE_PG_URL) throw new ConfigError(["LATHE_PG_URL: is required by train-job: a training pod records its progress in the trainer's Postgres"]);
  const logger = (opts.logger ?? createLogger({ service: "trainer-job", level: config.LATHE_LOG_LEVEL })).child({ component: "train-job", tenant: args.tenant, job: `fineTuningJobs/${args.jobId}`, attempt: args.attempt, worker: args.worker });
  const database = await openDatabase({ pgUrl: config.LATHE_PG_URL, poolSize: 2, onIdleError: (err) => logger.warn({ err }, "an idle database connection was closed by the server; the pool opens another") });
  try {
    const db = database.db as Kysely<TrainerTables>;
    const dataDir = resolve(config.LATHE_DATA_DIR);
    const artifacts = await LocalArtifactStore.open(resolve(config.LATHE_ARTIFACTS_DIR ?? join(dataDir, "artifacts")));
    // The trainer's outbox relay publishes what this process records; watchers poll the table.
    const jobs = new JobStore(db, () => undefined);
    const worker = new LocalWorker({
      jobs,
      leases: new JobLeases(db, jobs),
      artifacts,
      logger,
      workDir: join(dataDir, "work", "trainer"),
      slots: 0,
      // A GPU job's pod trains on the CUDA backend (LATHE_TRAINER_GPU_DEVICE, from the trainer's environment)
      gpuDevice: options.LATHE_TRAINER_GPU_DEVICE,
      threads: options.LATHE_TRAINER_THREADS,
      pollMs: options.LATHE_TRAINER_POLL_MS,
      leaseMs: options.LATHE_TRAINER_LEASE_MS,
    });
    logger.info("training pod: starting its attempt");
    const ran = await worker.runAttempt(args.tenant, args.jobId, args.attempt, args.worker, opts.signal ?? new AbortController().signal);
    if (ran === "not-held") logger.warn("training pod: the job is no longer this attempt's (cancelled, finished or taken over); nothing to do");
    else logger.info("training pod: attempt ended");
    return 0;
  } finally {
    await database.close();
  }
}
