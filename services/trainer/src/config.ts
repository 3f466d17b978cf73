import { baseConfigSchema, optionsOf, type BaseConfig } from "@lathe/kit";
import { z } from "zod";
import { kubernetesVariables } from "./runner/kubernetes-config.js";

/** The trainer's own variables, each with a default. */
export const trainerOptionsSchema = z.object({
  /** Jobs this process trains at once on its CPU (local worker slots). 0: none, an API-only replica. Default 1. */
  LATHE_TRAINER_WORKERS: z.coerce.number().int().min(0).max(64).default(1),
  /**
   * GPU jobs this process trains at once on its own GPU, one GPU each (the engine's CUDA backend).
   * "auto": 1 when the engine can use a CUDA device here, else 0. A number above 0 where the engine
   * has no CUDA device (and LATHE_TRAINER_GPU_DEVICE is cuda) stops the service at start. Default auto.
   */
  LATHE_TRAINER_GPUS: z.union([z.literal("auto"), z.coerce.number().int().min(0).max(16)]).optional(),
  /**
   * The engine backend GPU jobs train on, here and in their Kubernetes pods: "cuda" (default), or
   * "cpu" — GPU jobs on the CPU engine, for a development cluster or test without GPUs (slow: the
   * cost table's GPU throughput does not hold). A GPU job whose trainer has no CUDA device fails
   * with ENGINE_UNSUPPORTED naming the devices it has, never trains on the CPU unasked.
   */
  LATHE_TRAINER_GPU_DEVICE: z.enum(["cuda", "cpu"]).optional(),
  /** Engine threads per job; 0: every core. Default 0. */
  LATHE_TRAINER_THREADS: z.coerce.number().int().min(0).max(1024).default(0),
  /** How often an idle worker looks for queued jobs, in ms. Default 1000. */
  LATHE_TRAINER_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  /**
   * How long a worker's claim on a job lasts without a heartbeat, in ms. A job whose worker was
   * lost (killed process, lost node) is taken up again after this, from its last checkpoint.
   * Default 60000.
   */
  LATHE_TRAINER_LEASE_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
  /** A JSON cost table (see docs/training.md) replacing the built-in one. */
  LATHE_TRAINER_COST_TABLE: z.string().min(1).optional(),
  /**
   * Running jobs a tenant may have at once, over every worker and Kubernetes Job; its other jobs
   * wait in the queue. Every trainer replica must use the same value. 0: no limit. Default 0.
   */
  LATHE_TRAINER_MAX_RUNNING_PER_TENANT: z.coerce.number().int().min(0).max(100_000).optional(),
  /**
   * GPUs (the compute.gpu_count of its running jobs) a tenant may use at once; a job asking for
   * more is refused at creation. Every trainer replica must use the same value. 0: no limit. Default 0.
   */
  LATHE_TRAINER_MAX_GPUS_PER_TENANT: z.coerce.number().int().min(0).max(100_000).optional(),
  /**
   * The port of the trainer's Prometheus endpoint (`GET /metrics`: queue depth, running jobs,
   * throughput and finished jobs by outcome, per tenant). 0 turns it off. Default 0.
   */
  LATHE_TRAINER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /** The address the metrics endpoint listens on. Default 0.0.0.0 (every interface, for Prometheus in the cluster). */
  LATHE_TRAINER_METRICS_HOST: z.string().min(1).optional(),
  ...kubernetesVariables,
});

export type TrainerOptions = z.infer<typeof trainerOptionsSchema>;

/**
 * The trainer service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts) and its own above. Read once,
 * by `loadConfig` in `runMain` (or `lathe up`, which merges every service's schema), never from
 * process.env here.
 */
export const configSchema = baseConfigSchema.extend(trainerOptionsSchema.shape);

export type TrainerConfig = z.infer<typeof configSchema>;

/** The trainer's options in a loaded config (defaults where it was loaded without them). */
export function trainerOptionsOf(config: BaseConfig | TrainerConfig): TrainerOptions {
  return optionsOf(trainerOptionsSchema, config);
}
