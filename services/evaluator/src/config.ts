import { baseConfigSchema, optionsOf, pricesVariable, type BaseConfig } from "@lathe/kit";

export { parsePrices, type Prices } from "@lathe/kit";
import { z } from "zod";

/** The evaluator's own variables, each with a default. */
export const evaluatorOptionsSchema = z.object({
  /**
   * The gateway's OpenAI-compatible API the evaluator generates answers through, up to and
   * including `/v1` (e.g. `http://gateway:8081/v1`). Under `lathe up`: the gateway in the process.
   */
  LATHE_EVALUATOR_GATEWAY_URL: z.string().url().optional(),
  /** Runs this process works on at once. 0: none, an API-only replica. Default 1. */
  LATHE_EVALUATOR_WORKERS: z.coerce.number().int().min(0).max(64).default(1),
  /** Answers one run asks the gateway for at once. Default 4. */
  LATHE_EVALUATOR_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(4),
  /** How often an idle worker looks for queued runs, in ms. Default 1000. */
  LATHE_EVALUATOR_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  /** How long a worker's claim on a run lasts without a heartbeat, in ms; a lost worker's run is resumed after it. Default 60000. */
  LATHE_EVALUATOR_LEASE_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
  /** Prices per million input and output tokens by model, as JSON, for cost per 1,000 answers. Default none. */
  LATHE_EVALUATOR_PRICES: pricesVariable.optional(),
  /** The encoder for BERTScore when a run names none, `models/{model}` in the registry. Default none. */
  LATHE_EVALUATOR_BERTSCORE_MODEL: z.string().regex(/^models\/[a-z0-9][a-z0-9._-]{0,62}$/, "must be models/{model}").optional(),
  /** Its layer whose hidden states are the token embeddings; 0: two thirds of the way up (rounded). Default 0. */
  LATHE_EVALUATOR_BERTSCORE_LAYER: z.coerce.number().int().min(0).max(1024).default(0),
  /** Engine threads for BERTScore's encoder and teacher forcing (mean token accuracy, eval loss); 0: every core. Default 0. */
  LATHE_EVALUATOR_THREADS: z.coerce.number().int().min(0).max(1024).default(0),
});

export type EvaluatorOptions = z.infer<typeof evaluatorOptionsSchema>;

/**
 * The evaluator service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts) and its own above.
 */
export const configSchema = baseConfigSchema.extend(evaluatorOptionsSchema.shape);

export type EvaluatorConfig = z.infer<typeof configSchema>;

/** The evaluator's options in a loaded config (defaults where it was loaded without them). */
export function evaluatorOptionsOf(config: BaseConfig | EvaluatorConfig): EvaluatorOptions {
  return optionsOf(evaluatorOptionsSchema, config);
}
