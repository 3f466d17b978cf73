import { baseConfigSchema, call, createClient, loadConfig, startPlatform, uploadFolder, type ServiceDeps, type ServiceFactory } from "@lathe/kit";
import { gatewayOptionsSchema, gatewayService, type GatewayOptions } from "@lathe/gateway";
import { AdapterVersion, Model, RegistryServiceClient, type CreateAdapterVersionRequest, type UploadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys } from "@lathe/testing";

/** The registry and the gateway in this process, the base model and its adapters registered. */
export interface BenchPlatform {
  /** Base URL of the gateway's OpenAI-compatible HTTP API. */
  readonly url: string;
  /** `127.0.0.1:<port>` of the gRPC server (the registry). */
  readonly address: string;
  readonly apiKey: string;
  /** The tenant of that key. */
  readonly tenant: string;
  /** The platform's database (for timing a query like the gateway's own lookups). */
  readonly db: ServiceDeps["db"];
  /** Contexts the gateway has made since it started (each adapter switch makes one). */
  contextsMade(): number;
  stop(): Promise<void>;
}

export interface BenchPlatformOptions {
  /** Folder of the platform's state: the embedded database, artifacts, the gateway's GGUF cache. */
  dataDir: string;
  /** Folder holding the base model (LATHE_IMPORT_ROOTS). */
  importRoot: string;
  /** A fresh database on the Postgres of LATHE_TEST_PG_URL instead of the embedded PGlite. */
  postgres: boolean;
  /** Gateway options over the defaults (the HTTP port is always a free one). */
  gateway: Partial<GatewayOptions>;
  /** The base model's folder, registered as model `bench`. */
  modelDir: string;
  /** Adapter folders, each uploaded as adapter `<id>` of `bench` (version 1). */
  adapters: readonly { id: string; dir: string }[];
}

const BENCH_KEY = "key-bench-0123456789";

/**
 * Starts the registry and the gateway as `lathe up` does (one process, one gRPC port): by default
 * embedded (PGlite under `dataDir`, the in-process bus), so no server is needed; with `postgres`,
 * on a fresh database of LATHE_TEST_PG_URL's server through @lathe/testing. Then registers the
 * model (imported from its folder) and uploads the adapters through the registry's gRPC API.
 */
export async function startBenchPlatform(opts: BenchPlatformOptions): Promise<BenchPlatform> {
  let url = "";
  let contextsMade = () => 0;
  const gateway = gatewayService(gatewayOptionsSchema.parse({ ...opts.gateway, LATHE_GATEWAY_HTTP_PORT: 0 }), {
    onHttpListening: (u) => (url = u),
    onBackend: (b) => (contextsMade = () => b.contextsMade),
  });
  const factories: ServiceFactory[] = [createRegistryService, gateway];
  const env = { LATHE_IMPORT_ROOTS: opts.importRoot, LATHE_DATA_DIR: opts.dataDir, LATHE_LOG_LEVEL: process.env["LATHE_LOG_LEVEL"] ?? "error" };
  let running: { address: string; apiKey: string; tenant: string; db: ServiceDeps["db"]; stop(): Promise<void> };
  if (opts.postgres) {
    const t = await startTestPlatform({ factories, memoryBus: true, env });
    running = { address: t.address, apiKey: testKeys.acme, tenant: "acme", db: t.platform.deps.db, stop: () => t.stop() };
  } else {
    const config = loadConfig(baseConfigSchema, { ...env, LATHE_GRPC_HOST: "127.0.0.1", LATHE_GRPC_PORT: "0", LATHE_API_KEYS: `${BENCH_KEY}=bench`, LATHE_SHUTDOWN_GRACE_MS: "2000" });
    const p = await startPlatform({ name: "bench", config, factories });
    running = { address: p.address, apiKey: BENCH_KEY, tenant: "bench", db: p.deps.db, stop: () => p.stop() };
  }
  try {
    await register(running.address, running.apiKey, opts);
  } catch (err) {
    await running.stop();
    throw err;
  }
  return { url, contextsMade: () => contextsMade(), ...running };
}

async function register(address: string, apiKey: string, opts: BenchPlatformOptions): Promise<void> {
  const registry = createClient(RegistryServiceClient, address, { apiKey });
  try {
    await call(registry, "createModel", { modelId: "bench", model: Model.fromPartial({ sourceUri: opts.modelDir }), requestId: "" });
    for (const a of opts.adapters) {
      const header: CreateAdapterVersionRequest = { parent: `models/bench/adapters/${a.id}`, adapterVersion: AdapterVersion.fromPartial({ description: "bench" }), allowMissing: true, requestId: "" };
      await uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>((cb) => registry.uploadAdapterVersion(cb), header, a.dir);
    }
  } finally {
    registry.close();
  }
}
