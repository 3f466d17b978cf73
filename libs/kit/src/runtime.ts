import { join, resolve } from "node:path";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { LocalArtifactStore, type ArtifactStore } from "./artifacts/store.js";
import { AppError } from "./errors.js";
import { loadConfig, redactConfig, type BaseConfig } from "./config.js";
import { openDatabase, type Database } from "./db/database.js";
import type { EventBus } from "./events/bus.js";
import { JetStreamBus } from "./events/jetstream-bus.js";
import { MemoryBus } from "./events/memory-bus.js";
import { GrpcServer } from "./grpc/server.js";
import { createLogger } from "./logger.js";
import { setPageTokenSecret } from "./pagination.js";
import { startTelemetry, type Telemetry } from "./telemetry.js";
import type { z } from "zod";

/** What a service is built from. In `lathe up` all six share one set. */
export interface ServiceDeps<C extends BaseConfig = BaseConfig> {
  readonly config: C;
  readonly logger: Logger;
  readonly db: Kysely<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  readonly bus: EventBus;
  readonly artifacts: ArtifactStore;
  /**
   * The address of another service: its LATHE_<NAME>_ADDR, else this process's own server (all
   * services in one process under `lathe up`). Known once the server listens.
   */
  peerAddress(service: PeerName): string;
}

export type PeerName = "registry" | "dataset" | "synthgen" | "trainer" | "evaluator" | "gateway";

/** A service as the runtime sees it: gRPC services to serve, background work to start and stop. */
export interface ServiceInstance {
  /** Short name, also its Postgres schema: `registry`. */
  readonly name: string;
  /** Adds its gRPC services to the server. */
  register(server: GrpcServer): void;
  /** Starts background work: outbox relay, event consumers. */
  start(): Promise<void>;
  /** Stops background work after the server has drained. */
  stop(): Promise<void>;
}

export type ServiceFactory<C extends BaseConfig = BaseConfig> = (deps: ServiceDeps<C>) => Promise<ServiceInstance>;

export interface RunningPlatform {
  readonly port: number;
  readonly address: string;
  readonly logger: Logger;
  readonly deps: ServiceDeps;
  /** Drains: health NOT_SERVING, calls in flight finish (up to the grace period), background work stops, connections close. */
  stop(): Promise<void>;
}

/**
 * The wiring every `main.ts` shares: config → logger → telemetry → deps (Postgres or PGlite,
 * JetStream or the in-process bus, artifacts) → services → one gRPC server → drain on stop.
 * `name` is the process name (`registry`, or `lathe` when several services share a process).
 */
export async function startPlatform<C extends BaseConfig>(opts: {
  name: string;
  config: C;
  factories: readonly ServiceFactory<C>[];
  logger?: Logger;
}): Promise<RunningPlatform> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ service: opts.name, level: config.LATHE_LOG_LEVEL });
  logger.info({ config: redactConfig(config as unknown as Record<string, unknown>) }, "starting");
  if (Object.keys(config.LATHE_API_KEYS).length === 0) {
    throw new Error("LATHE_API_KEYS: at least one key=tenant pair is required; every call needs an API key");
  }
  setPageTokenSecret(config.LATHE_PAGE_TOKEN_SECRET);
  const telemetry: Telemetry = startTelemetry({ serviceName: `lathe-${opts.name}`, otlpEndpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT });
  const closers: (() => Promise<void>)[] = [() => telemetry.shutdown()];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close().catch((err: unknown) => logger.warn({ err }, "close failed"));
  };
  try {
    const dataDir = resolve(config.LATHE_DATA_DIR);
    const database: Database = await openDatabase({ pgUrl: config.LATHE_PG_URL, pgliteDir: join(dataDir, "pg") });
    closers.push(() => database.close());
    const bus: EventBus = config.LATHE_NATS_URL
      ? await JetStreamBus.connect({ url: config.LATHE_NATS_URL, prefix: config.LATHE_EVENTS_PREFIX, name: `lathe-${opts.name}`, logger })
      : new MemoryBus(logger);
    closers.push(() => bus.close());
    const artifacts = await LocalArtifactStore.open(resolve(config.LATHE_ARTIFACTS_DIR ?? join(dataDir, "artifacts")));
    const self: { address?: string } = {};
    const local = new Set<string>();
    const peerAddress = (service: PeerName): string => {
      const configured = (config as Record<string, unknown>)[`LATHE_${service.toUpperCase()}_ADDR`];
      if (typeof configured === "string") return configured;
      if (!local.has(service)) {
        throw new AppError("FAILED_PRECONDITION", "PEER_NOT_CONFIGURED", `the ${service} service is needed but LATHE_${service.toUpperCase()}_ADDR is not set and it does not run in this process`);
      }
      if (self.address === undefined) throw new Error(`the address of ${service} is not known before the server listens`);
      return self.address;
    };
    const deps: ServiceDeps<C> = { config, logger, db: database.db, bus, artifacts, peerAddress };
    logger.info({ database: database.kind, bus: bus.kind }, "dependencies ready");

    const services: ServiceInstance[] = [];
    for (const factory of opts.factories) services.push(await factory(deps));
    for (const s of services) local.add(s.name);
    const server = new GrpcServer({ logger, apiKeys: config.LATHE_API_KEYS });
    for (const s of services) s.register(server);
    for (const s of services) {
      await s.start();
      closers.push(() => s.stop());
    }
    const port = await server.listen(config.LATHE_GRPC_HOST, config.LATHE_GRPC_PORT);
    const host = config.LATHE_GRPC_HOST === "0.0.0.0" ? "127.0.0.1" : config.LATHE_GRPC_HOST;
    self.address = `${host}:${port}`;
    let stopping: Promise<void> | undefined;
    return {
      port,
      address: `${host}:${port}`,
      logger,
      deps,
      stop: () =>
        (stopping ??= (async () => {
          logger.info({ graceMs: config.LATHE_SHUTDOWN_GRACE_MS }, "draining");
          await server.shutdown(config.LATHE_SHUTDOWN_GRACE_MS);
          await closeAll();
          logger.info("stopped");
        })()),
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * Runs one service as a process: reads the environment with the service's schema, starts, and
 * on SIGTERM or SIGINT drains and exits 0. A start failure is logged and exits 1.
 */
export async function runMain<S extends z.ZodType<BaseConfig>>(opts: { name: string; configSchema: S; factory: ServiceFactory<z.infer<S>> }): Promise<void> {
  let platform: RunningPlatform | undefined;
  try {
    const config = loadConfig(opts.configSchema, process.env);
    platform = await startPlatform({ name: opts.name, config, factories: [opts.factory] });
  } catch (err) {
    console.error(`lathe-${opts.name}: failed to start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
  const p = platform;
  const onSignal = (signal: string) => {
    p.logger.info({ signal }, "shutdown requested");
    p.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        p.logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}
