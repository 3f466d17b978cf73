import { join, resolve } from "node:path";
import type { Kysely } from "kysely";
import type { Logger } from "pino";
import { LocalArtifactStore, type ArtifactStore } from "./artifacts/store.js";
import { AppError } from "./errors.js";
import { loadConfig, redactConfig, type BaseConfig } from "./config.js";
import { openDatabase, type Database } from "./db/database.js";
import { migrateCommand, type ServiceSchema } from "./db/migrate-command.js";
import type { EventBus } from "./events/bus.js";
import { JetStreamBus } from "./events/jetstream-bus.js";
import { MemoryBus } from "./events/memory-bus.js";
import { GrpcServer } from "./grpc/server.js";
import { createLogger } from "./logger.js";
import { setPageTokenSecret } from "./pagination.js";
import { spanStoreDir } from "./span-store.js";
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
  /**
   * Drains: health NOT_SERVING, calls in flight finish (up to the grace period), background work
   * stops, connections close. With `exit` (the process's owner: `runMain`, `lathe up`) the process
   * then ends, whatever was left open: see {@link StopOptions}.
   */
  stop(opts?: StopOptions): Promise<void>;
}

/** How `RunningPlatform.stop` ends. */
export interface StopOptions {
  /**
   * End the process once stopped. Each part gets at most `closeTimeoutMs` in all to close after
   * the drain (one that hangs is logged by name and left); then the process exits as soon as
   * nothing keeps it alive, or after `lingerMs` with a log of the handles still open. Exit code 0,
   * or 1 when stopping failed or a part did not close in time. So SIGTERM ends the process within
   * LATHE_SHUTDOWN_GRACE_MS + closeTimeoutMs + lingerMs, plus a margin.
   */
  exit?: boolean;
  /** Default 4000. */
  closeTimeoutMs?: number;
  /** Default 1000. */
  lingerMs?: number;
}

/** Ends the process now if nothing keeps it alive, else after `lingerMs`, logging what was still open. */
export function exitWhenIdle(logger: Logger, code: number, lingerMs = 1000): void {
  process.exitCode = code;
  setTimeout(() => {
    logger.warn({ resources: process.getActiveResourcesInfo().filter((r) => r !== "TTYWrap"), code }, "handles still open after stop; exiting");
    process.exit(code);
  }, lingerMs).unref();
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
  const telemetry: Telemetry = startTelemetry({
    serviceName: `lathe-${opts.name}`,
    otlpEndpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT,
    spanStore: { dir: spanStoreDir(resolve(config.LATHE_DATA_DIR)), maxBytes: config.LATHE_TRACE_STORE_MB * 1024 * 1024 },
  });
  const closers: { part: string; close: () => Promise<void> }[] = [{ part: "telemetry", close: () => telemetry.shutdown() }];
  // Closes in reverse order of opening. With a time limit (the process is about to exit), a part
  // that has not closed when it runs out is logged and left behind; returns whether all closed.
  const closeAll = async (timeoutMs?: number): Promise<boolean> => {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    let clean = true;
    for (const { part, close } of closers.reverse()) {
      const closing = close().then(
        () => "closed" as const,
        (err: unknown) => {
          logger.warn({ err, part }, "close failed");
          return "failed" as const;
        },
      );
      let timer: NodeJS.Timeout | undefined;
      const outcome =
        deadline === undefined
          ? await closing
          : await Promise.race([closing, new Promise<"timed out">((r) => (timer = setTimeout(() => r("timed out"), Math.max(0, deadline - Date.now()))))]);
      clearTimeout(timer);
      if (outcome === "timed out") logger.error({ part, timeoutMs }, "close timed out; leaving it behind");
      if (outcome !== "closed") clean = false;
    }
    return clean;
  };
  try {
    const dataDir = resolve(config.LATHE_DATA_DIR);
    const database: Database = await openDatabase({
      pgUrl: config.LATHE_PG_URL,
      pgliteDir: join(dataDir, "pg"),
      onIdleError: (err) => logger.warn({ err }, "an idle database connection was closed by the server; the pool opens another"),
    });
    closers.push({ part: "database", close: () => database.close() });
    const bus: EventBus = config.LATHE_NATS_URL
      ? await JetStreamBus.connect({ url: config.LATHE_NATS_URL, prefix: config.LATHE_EVENTS_PREFIX, name: `lathe-${opts.name}`, logger })
      : new MemoryBus(logger);
    closers.push({ part: "event bus", close: () => bus.close() });
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
      closers.push({ part: `service ${s.name}`, close: () => s.stop() });
    }
    const port = await server.listen(config.LATHE_GRPC_HOST, config.LATHE_GRPC_PORT);
    const host = config.LATHE_GRPC_HOST === "0.0.0.0" ? "127.0.0.1" : config.LATHE_GRPC_HOST;
    self.address = `${host}:${port}`;
    let stopping: Promise<boolean> | undefined;
    let exiting = false;
    return {
      port,
      address: `${host}:${port}`,
      logger,
      deps,
      stop: async (stopOpts: StopOptions = {}) => {
        const closeTimeoutMs = stopOpts.closeTimeoutMs ?? 4000;
        const lingerMs = stopOpts.lingerMs ?? 1000;
        if (stopOpts.exit && !exiting) {
          exiting = true;
          // The last resort, should the drain itself never end: no shutdown outlives its limits.
          const limitMs = config.LATHE_SHUTDOWN_GRACE_MS + closeTimeoutMs + lingerMs + 1000;
          setTimeout(() => {
            logger.error({ limitMs, resources: process.getActiveResourcesInfo() }, "shutdown did not finish in time; exiting");
            process.exit(1);
          }, limitMs).unref();
        }
        stopping ??= (async () => {
          logger.info({ graceMs: config.LATHE_SHUTDOWN_GRACE_MS }, "draining");
          await server.shutdown(config.LATHE_SHUTDOWN_GRACE_MS);
          const clean = await closeAll(exiting ? closeTimeoutMs : undefined);
          logger.info("stopped");
          return clean;
        })();
        let clean = false;
        try {
          clean = await stopping;
        } finally {
          if (exiting) exitWhenIdle(logger, clean ? 0 : 1, lingerMs);
        }
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/**
 * Runs one service as a process: reads the environment with the service's schema, starts, and
 * on SIGTERM or SIGINT drains and exits (0, or 1 when a part did not stop cleanly), also when
 * something was left open. A start failure is logged and exits 1. With `schema` given, the
 * argument `migrate [--check]` runs (or checks) the service's migrations instead and exits 0, or
 * 1 with the reason.
 */
export async function runMain<S extends z.ZodType<BaseConfig>>(opts: { name: string; configSchema: S; factory: ServiceFactory<z.infer<S>>; schema?: ServiceSchema }): Promise<void> {
  if (process.argv[2] === "migrate" && opts.schema) {
    // `main.js migrate [--check]`: the schema step alone (the chart's migration Job), then exit.
    try {
      const config = loadConfig(opts.configSchema, process.env);
      await migrateCommand({ config, schema: opts.schema, check: process.argv.includes("--check"), logger: createLogger({ service: opts.name, level: config.LATHE_LOG_LEVEL }) });
      process.exitCode = 0;
    } catch (err) {
      console.error(`lathe-${opts.name} migrate: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    }
    return;
  }
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
    p.stop({ exit: true }).catch((err: unknown) => p.logger.error({ err }, "shutdown failed"));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  p.logger.info({ address: p.address }, "started; SIGTERM or SIGINT drains and exits");
}
