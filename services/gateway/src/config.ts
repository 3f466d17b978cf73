import { baseConfigSchema, optionsOf, type BaseConfig } from "@lathe/kit";
import { z } from "zod";

/** The gateway's own variables, each with a default. */
export const gatewayOptionsSchema = z.object({
  /** Address the OpenAI-compatible HTTP server binds. Default: LATHE_GRPC_HOST. */
  LATHE_GATEWAY_HTTP_HOST: z.string().min(1).optional(),
  /** Its port; 0 picks a free one. Default: the gRPC port + 1 (0 when the gRPC port is 0). */
  LATHE_GATEWAY_HTTP_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  /** Contexts (one per adapter, or the bare base) kept loaded per base model; the least recently used idle one makes room. Default 4. */
  LATHE_GATEWAY_MAX_CONTEXTS: z.coerce.number().int().min(1).max(256).default(4),
  /**
   * Memory (MiB) the contexts of one base model may take together, KV cache and buffers as llama.cpp
   * estimates them; fewer than LATHE_GATEWAY_MAX_CONTEXTS are kept when they would not fit (at least
   * one). 0: a quarter of the machine's memory. Default 0.
   */
  LATHE_GATEWAY_CONTEXT_MEMORY_MB: z.coerce.number().int().min(0).max(16_777_216).default(0),
  /** Sequences per context: requests of one adapter answered at once. Default 2. */
  LATHE_GATEWAY_SEQUENCES: z.coerce.number().int().min(1).max(64).default(2),
  /** Requests per base model waiting for a sequence; one more is answered 429. Default 64. */
  LATHE_GATEWAY_QUEUE: z.coerce.number().int().min(0).max(100_000).default(64),
  /** Retry-After (seconds) of a 429. Default 1. */
  LATHE_GATEWAY_RETRY_AFTER_S: z.coerce.number().int().min(1).max(3600).default(1),
  /** Tokens per sequence (prompt and answer), at most the model's context length. Default 4096. */
  LATHE_GATEWAY_CONTEXT_SIZE: z.coerce.number().int().min(16).max(1_048_576).default(4096),
  /** llama.cpp threads per context; 0: the machine's cores (node-llama-cpp's own default may exceed them). Default 0. */
  LATHE_GATEWAY_THREADS: z.coerce.number().int().min(0).max(1024).default(0),
  /** Requests per minute one API key may send to the OpenAI-compatible API (`/v1/*`); more are answered 429. 0: no limit. Default 600. */
  LATHE_GATEWAY_RATE_LIMIT: z.coerce.number().int().min(0).max(10_000_000).default(600),
  /** How often (ms) the rollout looks for deployments to bring to their spec, besides being woken by changes (an alias moved: at the next look); also its first retry delay. Default 2000. */
  LATHE_GATEWAY_ROLLOUT_POLL_MS: z.coerce.number().int().min(10).max(3_600_000).default(2000),
  /** The largest file `POST /v1/files` takes, in MiB (held in memory while it is sent on to the dataset service). Default 100. */
  LATHE_GATEWAY_FILES_MAX_MB: z.coerce.number().int().min(1).max(4096).default(100),
  /** How long (ms) `POST /v1/files` waits for the dataset checks of a `fine-tune` file before answering with status `uploaded` (the checks go on; GET shows the outcome). Default 60000. */
  LATHE_GATEWAY_FILE_CHECK_WAIT_MS: z.coerce.number().int().min(0).max(3_600_000).default(60_000),
  /** Tensor type the base model is exported to GGUF with. Default F16. */
  LATHE_GATEWAY_GGUF_TYPE: z.enum(["F16", "F32"]).default("F16"),
});

export type GatewayOptions = z.infer<typeof gatewayOptionsSchema>;

/**
 * The gateway service's environment: the kit's variables (LATHE_GRPC_PORT, LATHE_PG_URL,
 * LATHE_NATS_URL, LATHE_API_KEYS, …; see libs/kit/src/config.ts) and its own above.
 */
export const configSchema = baseConfigSchema.extend(gatewayOptionsSchema.shape);

export type GatewayConfig = z.infer<typeof configSchema>;

/** The gateway's options in a loaded config (defaults where it was loaded without them). */
export function gatewayOptionsOf(config: BaseConfig | GatewayConfig): GatewayOptions {
  return optionsOf(gatewayOptionsSchema, config);
}

/**
 * Where the HTTP server listens: its own host and port, else the gRPC host and the gRPC port + 1
 * (`defaulted`: when that one is taken, any free port will do, and the address is logged).
 */
export function httpListenOf(config: BaseConfig, options: GatewayOptions): { host: string; port: number; defaulted: boolean } {
  const port = options.LATHE_GATEWAY_HTTP_PORT ?? (config.LATHE_GRPC_PORT === 0 ? 0 : config.LATHE_GRPC_PORT + 1);
  if (port > 65535) throw new RangeError(`LATHE_GATEWAY_HTTP_PORT: the gRPC port + 1 is ${port}; set the HTTP port`);
  return { host: options.LATHE_GATEWAY_HTTP_HOST ?? config.LATHE_GRPC_HOST, port, defaulted: options.LATHE_GATEWAY_HTTP_PORT === undefined };
}
