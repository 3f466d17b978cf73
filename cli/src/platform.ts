import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { baseConfigSchema, loadConfig, startPlatform, type RunningPlatform, type ServiceFactory } from "@lathe/kit";
import { createDatasetService } from "@lathe/dataset";
import { createEvaluatorService } from "@lathe/evaluator";
import { createGatewayService } from "@lathe/gateway";
import { createRegistryService } from "@lathe/registry";
import { createSynthGenService } from "@lathe/synthgen";
import { createTrainerService } from "@lathe/trainer";

/** The six services, in the order they start. */
export const allServices: readonly ServiceFactory[] = [
  createRegistryService,
  createDatasetService,
  createSynthGenService,
  createTrainerService,
  createEvaluatorService,
  createGatewayService,
];

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
  env?: NodeJS.ProcessEnv;
}

/**
 * Starts all six services in this process on one port. Embedded by default (PGlite under the
 * data dir, the in-process bus, local artifacts); `pgUrl`/`natsUrl` switch to real servers.
 * The local key maps to tenant `default`; keys in LATHE_API_KEYS are honoured as well.
 */
export async function startLathe(opts: UpOptions): Promise<{ platform: RunningPlatform; apiKey: string }> {
  const env = opts.env ?? process.env;
  const apiKey = localApiKey(opts.dataDir, true)!;
  const extraKeys = env["LATHE_API_KEYS"] ? `,${env["LATHE_API_KEYS"]}` : "";
  const config = loadConfig(baseConfigSchema, {
    ...env,
    LATHE_DATA_DIR: opts.dataDir,
    LATHE_GRPC_HOST: opts.host,
    LATHE_GRPC_PORT: String(opts.port),
    LATHE_PG_URL: opts.pgUrl ?? env["LATHE_PG_URL"],
    LATHE_NATS_URL: opts.natsUrl ?? env["LATHE_NATS_URL"],
    LATHE_API_KEYS: `${apiKey}=default${extraKeys}`,
    LATHE_LOG_LEVEL: opts.logLevel ?? env["LATHE_LOG_LEVEL"] ?? "warn",
  });
  const platform = await startPlatform({ name: "lathe", config, factories: allServices });
  return { platform, apiKey };
}
