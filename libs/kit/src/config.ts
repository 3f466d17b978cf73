import { z } from "zod";

/** A key=tenant pair list such as `k1=acme,k2=globex`, parsed into a map from key to tenant. */
const apiKeysSchema = z
  .string()
  .default("")
  .transform((raw, ctx) => {
    const keys: Record<string, string> = {};
    for (const [i, entry] of raw.split(",").map((s) => s.trim()).entries()) {
      if (entry === "") continue;
      const eq = entry.indexOf("=");
      const key = entry.slice(0, eq).trim();
      const tenant = entry.slice(eq + 1).trim();
      if (eq <= 0 || key === "" || !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(tenant)) {
        ctx.addIssue({
          code: "custom",
          message: `entry ${i + 1} must be key=tenant with a tenant of lowercase letters, digits, '-' or '_'`,
        });
        continue;
      }
      keys[key] = tenant;
    }
    return keys;
  });

/**
 * The environment every service reads. A service's own `config.ts` extends it. Variables are
 * read by `loadConfig(schema, env)` only, never at import time, so tests pass their own env.
 */
export const baseConfigSchema = z.object({
  /** Address the gRPC server binds. Default `0.0.0.0`. */
  LATHE_GRPC_HOST: z.string().min(1).default("0.0.0.0"),
  /** gRPC port; 0 picks a free one. Default 50051. */
  LATHE_GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  /** Folder for local state: the embedded database, artifacts. Default `.lathe`. */
  LATHE_DATA_DIR: z.string().min(1).default(".lathe"),
  /** Postgres URL. Unset: an embedded PGlite database under LATHE_DATA_DIR/pg. */
  LATHE_PG_URL: z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL").optional(),
  /**
   * What a service does with its schema at start: `apply` runs its pending migrations; `verify`
   * only checks that none is pending (a separate step, such as the chart's migration Job, runs
   * them: `node services/<name>/dist/main.js migrate`). Both refuse a schema a newer release
   * migrated. Default `apply`.
   */
  LATHE_MIGRATIONS: z.enum(["apply", "verify"]).default("apply"),
  /** NATS URL (JetStream enabled). Unset: the in-process event bus. */
  LATHE_NATS_URL: z.string().regex(/^(nats|tls):\/\//, "must be a nats:// URL").optional(),
  /** Prefix of event subjects and stream name, to share one NATS between environments. Default empty. */
  LATHE_EVENTS_PREFIX: z.string().regex(/^[a-z0-9_-]*$/, "lowercase letters, digits, '-' and '_' only").default(""),
  /** API keys as comma-separated `key=tenant` pairs. A call without a known key is refused. Secret. */
  LATHE_API_KEYS: apiKeysSchema,
  /**
   * Key that signs page tokens (HMAC-SHA256), at least 16 characters. Secret. Unset: a random key
   * per process, so a token is good only in the process that made it: replicas behind one address
   * must share a secret, or a page token from one is refused (INVALID_ARGUMENT) by the next.
   */
  LATHE_PAGE_TOKEN_SECRET: z.string().min(16, "must be at least 16 characters").optional(),
  /**
   * The secret references requests may name (a teacher's, a judge's, an upstream's API key), as
   * comma-separated `env:NAME` / `file:/path` patterns, a trailing `*` matching any rest. Read
   * where a secret is resolved (secrets.ts); listed here so a malformed value is refused at start.
   * Default `env:LATHE_SECRET_*,file:/var/run/secrets/lathe/*`.
   */
  LATHE_SECRET_REFS: z
    .string()
    .optional()
    .refine((v) => v === undefined || v.split(",").every((p) => p.trim() === "" || /^(env:|file:\/)/.test(p.trim())), "each pattern must start with env: or file:/"),
  /** Folder of the content-addressed artifact store. Default LATHE_DATA_DIR/artifacts. */
  LATHE_ARTIFACTS_DIR: z.string().min(1).optional(),
  /**
   * Server-side folders callers may name for import (`models create --server-path`, a dataset's
   * tokenizer folder), as absolute paths separated by `:`. Each must lie outside LATHE_DATA_DIR
   * and the artifact store. Default empty: callers upload their files and name no server paths.
   */
  LATHE_IMPORT_ROOTS: z
    .string()
    .default("")
    .transform((raw) => raw.split(":").map((s) => s.trim()).filter((s) => s !== ""))
    .pipe(z.array(z.string().startsWith("/", "each import root must be an absolute path"))),
  /** Log level: trace, debug, info, warn, error, fatal or silent. Default `info`. */
  LATHE_LOG_LEVEL: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
  /** How long SIGTERM waits for calls in flight before closing them, in milliseconds. Default 10000. */
  LATHE_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
  /** How often the outbox relay looks for unsent events, in milliseconds. Default 500. */
  LATHE_OUTBOX_POLL_MS: z.coerce.number().int().min(10).default(500),
  /** Addresses (host:port) of the other services. Unset: the service is in this process (`lathe up`). */
  LATHE_REGISTRY_ADDR: z.string().min(1).optional(),
  LATHE_DATASET_ADDR: z.string().min(1).optional(),
  LATHE_SYNTHGEN_ADDR: z.string().min(1).optional(),
  LATHE_TRAINER_ADDR: z.string().min(1).optional(),
  LATHE_EVALUATOR_ADDR: z.string().min(1).optional(),
  LATHE_GATEWAY_ADDR: z.string().min(1).optional(),
  /** OTLP/HTTP endpoint for traces (e.g. http://collector:4318). Unset: traces are not exported. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().url().optional(),
  /**
   * The local span store's size in MB per process (LATHE_DATA_DIR/traces, read by `lathe trace`),
   * beside any OTLP export; 0 turns it off. Default 16.
   */
  LATHE_TRACE_STORE_MB: z.coerce.number().int().min(0).max(4096).default(16),
});

export type BaseConfig = z.infer<typeof baseConfigSchema>;

/** A configuration that cannot be used, listing every variable that is wrong. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
}

/**
 * Parses `env` with `schema`. Pure: reads nothing but its arguments. Throws ConfigError naming
 * each bad variable.
 */
export function loadConfig<S extends z.ZodType>(schema: S, env: Record<string, string | undefined>): z.infer<S> {
  // An empty variable (`LATHE_GRPC_PORT=` in an env file) counts as unset: z.coerce would make it 0.
  const result = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, v]) => v !== "")));
  if (!result.success) {
    throw new ConfigError(result.error.issues.map((i) => `${i.path.join(".") || "(env)"}: ${i.message}`));
  }
  return result.data;
}

/**
 * A service's own options (`schema`, each with a default) out of a loaded config. A config loaded
 * without that schema (only the kit's, as a test platform loads it) lacks them: each takes its
 * default. ConfigError naming the variable when one is wrong.
 */
export function optionsOf<S extends z.ZodObject>(schema: S, config: object): z.infer<S> {
  const given = config as Record<string, unknown>;
  return loadConfig(schema, Object.fromEntries(Object.keys(schema.shape).map((k) => [k, given[k] === undefined ? undefined : String(given[k])])));
}

const secretName = /(KEYS?|SECRET|PASSWORD|TOKEN|CREDENTIALS?)$/;

/** A copy of a config fit for logs: secrets replaced, passwords in URLs masked. */
export function redactConfig(config: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    if (secretName.test(k)) {
      out[k] = v && typeof v === "object" ? `[redacted: ${Object.keys(v).length} entries]` : "[redacted]";
    } else if (typeof v === "string" && /^[a-z]+:\/\/[^/]*@/.test(v)) {
      // user:password@ keeps the user; a lone user part (a NATS token) is hidden whole.
      out[k] = v.replace(/^([a-z]+:\/\/)([^:/@]*)(:[^@/]*)?@/, (_m, scheme: string, user: string, pass?: string) => (pass ? `${scheme}${user}:***@` : `${scheme}***@`));
    } else {
      out[k] = v;
    }
  }
  return out;
}
