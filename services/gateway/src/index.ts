import { availableParallelism, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { EventConsumer, prepareService, type ServiceFactory } from "@lathe/kit";
import { GatewayServiceService } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import type { Kysely } from "kysely";
import { gatewayOptionsOf, httpListenOf, type GatewayOptions } from "./config.js";
import { migrations, type GatewayTables } from "./db/migrations.js";
import { DeploymentStore, schema } from "./domain/deployments.js";
import { EmbeddedBackend } from "./domain/embedded.js";
import { ServingFiles } from "./domain/files.js";
import { GatewayMetrics } from "./domain/metrics.js";
import { RegistryModels } from "./domain/registry.js";
import { ModelResolver } from "./domain/resolve.js";
import { FineTunedModels } from "./domain/fine-tuned-models.js";
import { OpenAiFineTuning } from "./domain/openai-fine-tuning.js";
import { Rollout, upstreamFolderCache } from "./domain/rollout.js";
import { Backends } from "./domain/serving.js";
import { aliasMoved } from "./events.js";
import { consoleDistDir } from "./console-static.js";
import { buildHttp } from "./http.js";
import { gatewayHandlers } from "./service.js";

export { deploymentDeleted, deploymentUpdated } from "./events.js";
export { configSchema, gatewayOptionsOf, gatewayOptionsSchema, httpListenOf, type GatewayConfig, type GatewayOptions } from "./config.js";

export interface GatewayHooks {
  /** Called with the HTTP server's base URL (`http://127.0.0.1:50052`) once it listens. */
  onHttpListening?(url: string): void;
  /** Called with the embedded backend once made (to read its counts: base models loaded, contexts made). */
  onBackend?(backend: Pick<EmbeddedBackend, "loadedBaseModels" | "contextsMade" | "stats">): void;
}

/**
 * A gateway service with the given options: migrates its schema, serves GatewayService
 * (deployments, rolled out in the background and again when an alias they serve moves), relays
 * its outbox, and serves the OpenAI-compatible HTTP API: deployments on their backend (embedded
 * llama.cpp or an upstream OpenAI-compatible server), any other registry model on demand on the
 * embedded backend, resolving names with each caller's key.
 */
export function gatewayService(options: GatewayOptions, hooks: GatewayHooks = {}): ServiceFactory {
  return async (deps) => {
    const base = await prepareService(deps, schema, migrations);
    const db = deps.db as Kysely<GatewayTables>;
    const cacheDir = join(resolve(deps.config.LATHE_DATA_DIR), "cache", "gateway");
    const listen = httpListenOf(deps.config, options);
    const files = new ServingFiles(deps.artifacts, cacheDir, options.LATHE_GATEWAY_GGUF_TYPE);
    const backend = new EmbeddedBackend(files, {
      maxContexts: options.LATHE_GATEWAY_MAX_CONTEXTS,
      contextMemoryBytes: options.LATHE_GATEWAY_CONTEXT_MEMORY_MB > 0 ? options.LATHE_GATEWAY_CONTEXT_MEMORY_MB * 2 ** 20 : Math.floor(totalmem() / 4),
      sequencesPerContext: options.LATHE_GATEWAY_SEQUENCES,
      maxQueue: options.LATHE_GATEWAY_QUEUE,
      retryAfterS: options.LATHE_GATEWAY_RETRY_AFTER_S,
      contextSize: options.LATHE_GATEWAY_CONTEXT_SIZE,
      // 0: the machine's cores (node-llama-cpp's own default can be more threads than cores, many times slower).
      threads: options.LATHE_GATEWAY_THREADS > 0 ? options.LATHE_GATEWAY_THREADS : availableParallelism(),
    });
    hooks.onBackend?.(backend);
    const registry = new RegistryModels(() => deps.peerAddress("registry"));
    const deployments: DeploymentStore = new DeploymentStore(db, () => {
      base.relay.notify();
      rollout.notify();
    }, deps.logger);
    const rollout: Rollout = new Rollout({
      store: deployments,
      registry,
      embedded: backend,
      artifacts: deps.artifacts,
      folderCache: upstreamFolderCache(cacheDir),
      apiKeys: deps.config.LATHE_API_KEYS,
      logger: deps.logger.child({ component: "gateway-rollout" }),
      intervalMs: options.LATHE_GATEWAY_ROLLOUT_POLL_MS,
    });
    // A moved alias rolls out to every deployment that serves it.
    const consumer = new EventConsumer<GatewayTables>({ name: "gateway", db, schema, bus: deps.bus, logger: deps.logger }).on(aliasMoved, async (e, { trx, meta }) => {
      await deployments.aliasMoved(trx, meta.tenant, e.alias, e.deployment);
    });
    // OpenAI's fine-tuning API: files and jobs through the dataset and trainer services, as the caller.
    const fineTuning = new OpenAiFineTuning({
      db,
      schema,
      artifacts: deps.artifacts,
      dataset: () => deps.peerAddress("dataset"),
      trainer: () => deps.peerAddress("trainer"),
      checkWaitMs: options.LATHE_GATEWAY_FILE_CHECK_WAIT_MS,
    });
    fineTuning.consume(consumer);
    let ready = false;
    const http = await buildHttp({
      apiKeys: deps.config.LATHE_API_KEYS,
      models: new FineTunedModels(new ModelResolver(deployments, registry), fineTuning),
      fineTuning: { api: fineTuning, filesMaxBytes: options.LATHE_GATEWAY_FILES_MAX_MB * 2 ** 20 },
      backends: new Backends(backend),
      metrics: new GatewayMetrics(() => backend.stats()),
      logger: deps.logger.child({ component: "gateway-http" }),
      rateLimitPerMinute: options.LATHE_GATEWAY_RATE_LIMIT,
      ready: () => ready,
      console: { api: { peerAddress: deps.peerAddress, logger: deps.logger.child({ component: "gateway-console" }) }, distDir: consoleDistDir() },
    });
    const server = {
      async start() {
        try {
          await http.listen({ host: listen.host, port: listen.port });
        } catch (err) {
          // The port next to gRPC's was only a default: take a free one rather than fail to start.
          if (!listen.defaulted || (err as NodeJS.ErrnoException).code !== "EADDRINUSE") throw err;
          deps.logger.warn({ port: listen.port }, "the port after the gRPC port is taken; the HTTP API listens on a free port instead");
          await http.listen({ host: listen.host, port: 0 });
        }
        const addr = http.server.address();
        const port = typeof addr === "object" && addr !== null ? addr.port : listen.port;
        const host = listen.host === "0.0.0.0" ? "127.0.0.1" : listen.host;
        ready = true;
        const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
        deps.logger.info({ url }, "OpenAI-compatible HTTP listening");
        hooks.onHttpListening?.(url);
      },
      async stop() {
        ready = false;
        await http.close();
        await backend.close();
      },
    };
    return {
      name: "gateway",
      register(s) {
        s.add("lathe.gateway.v1.GatewayService", GatewayServiceService, gatewayHandlers({ deployments, registry, rollout }));
      },
      // Stopped in reverse: the HTTP server, the rollout, the consumer, then the clients they used.
      ...base.with(
        {
          start: () => undefined,
          stop: async () => {
            registry.close();
            fineTuning.close();
          },
        },
        consumer,
        rollout,
        server,
      ),
    };
  };
}

/** The gateway service with the options of its config (LATHE_GATEWAY_*, loaded with `configSchema`). */
export const createGatewayService: ServiceFactory = (deps) => gatewayService(gatewayOptionsOf(deps.config))(deps);
