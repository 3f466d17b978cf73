import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { baseConfigSchema, loadConfig, startPlatform, type RunningPlatform, type ServiceFactory } from "@lathe/kit";
import { configSchema as datasetConfigSchema, createDatasetService } from "@lathe/dataset";
import { configSchema as evaluatorConfigSchema, createEvaluatorService, evaluatorOptionsOf, evaluatorService } from "@lathe/evaluator";
import { configSchema as gatewayConfigSchema, createGatewayService, gatewayOptionsOf, gatewayService } from "@lathe/gateway";
import { configSchema as registryConfigSchema, createRegistryService } from "@lathe/registry";
import { configSchema as synthgenConfigSchema, createSynthGenService } from "@lathe/synthgen";
import { configSchema as trainerConfigSchema, createTrainerService } from "@lathe/trainer";

/** The six services, in the order they start. */
export const allServices: readonly ServiceFactory[] = [
  createRegistryService,
  createDatasetService,
  createSynthGenService,
  createTrainerService,
  createEvaluatorService,
  createGatewayService,
];

/**
 * The environment of `lathe up`: the kit's variables and each service's own (LATHE_TRAINER_*, …),
 * so a service's variables in `lathe up`'s env reach it, are checked at start and logged at boot.
 */
export const latheConfigSchema = baseConfigSchema.extend({
  ...registryConfigSchema.shape,
  ...datasetConfigSchema.shape,
  ...synthgenConfigSchema.shape,
  ...trainerConfigSchema.shape,
  ...evaluatorConfigSchema.shape,
  ...gatewayConfigSchema.shape,
});

/** Where `lathe up` keeps its state and the CLI finds its key: LATHE_DATA_DIR, else ~/.lathe. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env["LATHE_DATA_DIR"] ?? join(homedir(), ".lathe"));
}

export const defaultPort = 50051;

/** The API key of the embedded platform: made once per data dir, kept in `<dir>/api-key` (mode 600). */
export function localApiKey(dataDir: string, create: boolean): string | undefined {
  const file = join(dataDir, "api-key");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  if (!create) return undefined;
  mkdirSync(dataDir, { recursive: true });
  const key = `lathe_${randomBytes(24).toString("base64url")}`;
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return key;
}

export interface UpOptions {
  dataDir: string;
  host: string;
  port: number;
  pgUrl?: string | undefined;
  natsUrl?: string | undefined;
  logLevel?: string | undefined;
  /** Port of the gateway's OpenAI-compatible HTTP API. Default: LATHE_GATEWAY_HTTP_PORT, else the gRPC port + 1 (a free one when the gRPC port is 0). */
  httpPort?: number | undefined;
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts all six services in this process on one port. Embedded by default (PGlite under the
 * data dir, the in-process bus, local artifacts); `pgUrl`/`natsUrl` switch to real servers.
 * The local key maps to tenant `default`; keys in LATHE_API_KEYS are honoured as well.
 */
export async function startLathe(opts: UpOptions): Promise<{ platform: RunningPlatform; apiKey: string; httpUrl: string }> {
  const apiKey = localApiKey(opts.dataDir, true)!;
  const config = latheConfig(opts, apiKey);
  let httpUrl = "";
  const gateway = gatewayService(gatewayOptionsOf(config), { onHttpListening: (url) => (httpUrl = url) });
  // The evaluator generates through the gateway in this process, wherever its HTTP API listens.
  const evaluator = evaluatorService(evaluatorOptionsOf(config), { gatewayUrl: () => (httpUrl === "" ? undefined : `${httpUrl}/v1`) });
  const factories = allServices.map((f) => (f === createGatewayService ? gateway : f === createEvaluatorService ? evaluator : f));
  const platform = await startPlatform({ name: "lathe", config, factories });
  return { platform, apiKey, httpUrl };
}

/**
 * The config `lathe up` starts with: its env (every service's variables, see latheConfigSchema)
 * under the options given. ConfigError naming each variable that is wrong.
 */
export function latheConfig(opts: UpOptions, apiKey: string) {
  const env = opts.env ?? process.env;
  const extraKeys = env["LATHE_API_KEYS"] ? `,${env["LATHE_API_KEYS"]}` : "";
  return loadConfig(latheConfigSchema, {
    ...env,
    LATHE_DATA_DIR: opts.dataDir,
    LATHE_GRPC_HOST: opts.host,
    LATHE_GRPC_PORT: String(opts.port),
    LATHE_PG_URL: opts.pgUrl ?? env["LATHE_PG_URL"],
    LATHE_NATS_URL: opts.natsUrl ?? env["LATHE_NATS_URL"],
    LATHE_API_KEYS: `${apiKey}=default${extraKeys}`,
    LATHE_LOG_LEVEL: opts.logLevel ?? env["LATHE_LOG_LEVEL"] ?? "warn",
    ...(opts.httpPort === undefined ? {} : { LATHE_GATEWAY_HTTP_PORT: String(opts.httpPort) }),
  });
}
