import { baseConfigSchema, optionsOf, pricesVariable, type BaseConfig } from "@lathe/kit";
import { z } from "zod";

/** The synthetic-data service's own variables, each with a default. */
export const synthgenOptionsSchema = z.object({
  /** Generation jobs this process works on at once. 0: none, an API-only replica. Default 1. */
  LATHE_SYNTHGEN_WORKERS: z.coerce.number().int().min(0).max(64).default(1),
  /** How often an idle worker looks for queued jobs, in ms. Default 1000. */
  LATHE_SYNTHGEN_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  /** How long a worker's claim on a job lasts without a heartbeat, in ms; a lost worker's job is resumed after it. Default 60000. */
  LATHE_SYNTHGEN_LEASE_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
  /** Prices per million input and output tokens by teacher model, as JSON, for the cost and the cost budget. Default none. */
  LATHE_SYNTHGEN_PRICES: pricesVariable.optional(),
  /** Attempts per teacher request on 429 and 5xx (and no answer) before the job fails. Default 6. */
  LATHE_SYNTHGEN_ATTEMPTS: z.coerce.number().int().min(1).max(20).default(6),
  /** The first retry's delay in ms, doubled per attempt (with jitter), unless the teacher sends Retry-After. Default 500. */
  LATHE_SYNTHGEN_BACKOFF_MS: z.coerce.number().int().min(1).max(60_000).default(500),
});

export type SynthgenOptions = z.infer<typeof synthgenOptionsSchema>;

/**
 * The synthetic-data service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts) and its own above.
 */
export const configSchema = baseConfigSchema.extend(synthgenOptionsSchema.shape);

export type SynthgenConfig = z.infer<typeof configSchema>;

/** The service's options in a loaded config (defaults where it was loaded without them). */
export function synthgenOptionsOf(config: BaseConfig | SynthgenConfig): SynthgenOptions {
  return optionsOf(synthgenOptionsSchema, config);
}
