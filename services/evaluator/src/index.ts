import { join, resolve } from "node:path";
import { EventConsumer, prepareService, type ServiceFactory } from "@lathe/kit";
import { EvaluatorServiceService } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import type { Kysely } from "kysely";
import { evaluatorOptionsOf, parsePrices, type EvaluatorOptions } from "./config.js";
import { migrations, type EvaluatorTables } from "./db/migrations.js";
import { FollowUpQueue } from "./domain/follow-up.js";
import { RunStore, schema } from "./domain/runs.js";
import { EvaluationWorker } from "./domain/worker.js";
import { adapterVersionCreated } from "./events.js";
import { evaluatorHandlers } from "./service.js";

export { configSchema, evaluatorOptionsOf, evaluatorOptionsSchema, parsePrices, type EvaluatorConfig, type EvaluatorOptions, type Prices } from "./config.js";
export { evaluationCompleted, evaluationFailed } from "./events.js";
export { EngineEncoder, defaultLayer } from "./domain/encoder.js";

export interface EvaluatorHooks {
  /** The gateway's OpenAI base URL when LATHE_EVALUATOR_GATEWAY_URL is not set (`lathe up`: the gateway in the process). */
  gatewayUrl?(): string | undefined;
}

/**
 * The evaluator with the given options: migrates its schema, serves EvaluatorService, relays its
 * outbox, works on evaluation runs (answers generated through the gateway, scored, compared),
 * and starts the run a registered version's follow-up asks for (`adapter_version_created`).
 */
export function evaluatorService(options: EvaluatorOptions, hooks: EvaluatorHooks = {}): ServiceFactory {
  return async (deps) => {
    const base = await prepareService(deps, schema, migrations);
    const db = deps.db as Kysely<EvaluatorTables>;
    const prices = options.LATHE_EVALUATOR_PRICES === undefined ? undefined : parsePrices(options.LATHE_EVALUATOR_PRICES);
    const workers: EvaluationWorker[] = [];
    const runs: RunStore = new RunStore(db, (key) => {
      base.relay.notify();
      runs.changes.emit("changed", key);
      for (const w of workers) w.notify();
    }, options.LATHE_EVALUATOR_BERTSCORE_MODEL);
    const onChange = (key: string) => {
      base.relay.notify();
      runs.changes.emit("changed", key);
    };
    for (let i = 0; i < options.LATHE_EVALUATOR_WORKERS; i++) {
      workers.push(
        new EvaluationWorker({
          db,
          artifacts: deps.artifacts,
          cacheDir: join(resolve(deps.config.LATHE_DATA_DIR), "cache", "evaluator"),
          logger: deps.logger.child({ component: "evaluation-worker" }),
          apiKeys: deps.config.LATHE_API_KEYS,
          peer: (s) => deps.peerAddress(s),
          gatewayUrl: () => options.LATHE_EVALUATOR_GATEWAY_URL?.replace(/\/+$/, "") ?? hooks.gatewayUrl?.(),
          prices,
          bertscore: { model: options.LATHE_EVALUATOR_BERTSCORE_MODEL, layer: options.LATHE_EVALUATOR_BERTSCORE_LAYER, threads: options.LATHE_EVALUATOR_THREADS },
          concurrency: options.LATHE_EVALUATOR_CONCURRENCY,
          pollMs: options.LATHE_EVALUATOR_POLL_MS,
          leaseMs: options.LATHE_EVALUATOR_LEASE_MS,
          onChange,
        }),
      );
    }
    const followUps = new FollowUpQueue({ db, runs, registryAddress: () => deps.peerAddress("registry"), apiKeys: deps.config.LATHE_API_KEYS, logger: deps.logger, pollMs: options.LATHE_EVALUATOR_POLL_MS });
    const consumer = new EventConsumer<EvaluatorTables>({ name: "evaluator", db, schema, bus: deps.bus, logger: deps.logger }).on(adapterVersionCreated, async (e, { trx, meta }) => {
      await FollowUpQueue.note(trx, meta.tenant, meta.eventId, e);
      setImmediate(() => followUps.notify());
    });
    const parts = [{ start: () => followUps.start(), stop: () => followUps.stop() }, ...workers.map((w) => ({ start: () => w.start(), stop: () => w.stop() }))];
    return {
      name: "evaluator",
      register(server) {
        server.add("lathe.evaluator.v1.EvaluatorService", EvaluatorServiceService, evaluatorHandlers({ runs, watchPollMs: 1000 }));
      },
      ...base.with(consumer, ...parts),
    };
  };
}

/** The evaluator with the options of its config (LATHE_EVALUATOR_*, loaded with `configSchema`). */
export const createEvaluatorService: ServiceFactory = (deps) => evaluatorService(evaluatorOptionsOf(deps.config))(deps);
