import { parsePrices, prepareService, type ServiceFactory } from "@lathe/kit";
import { SynthGenServiceService } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import type { Kysely } from "kysely";
import { synthgenOptionsOf, type SynthgenOptions } from "./config.js";
import { migrations, type SynthgenTables } from "./db/migrations.js";
import { JobStore, schema } from "./domain/jobs.js";
import { GenerationWorker } from "./domain/worker.js";
import { synthgenHandlers } from "./service.js";

export { configSchema, synthgenOptionsOf, synthgenOptionsSchema, type SynthgenConfig, type SynthgenOptions } from "./config.js";
export { examplesPublished, generationJobFailed, generationJobSucceeded } from "./events.js";

/**
 * The synthetic-data service with the given options: migrates its schema, serves
 * SynthGenService, relays its outbox, and works on generation jobs (a teacher model asked for
 * examples, each checked by the dataset service and deduplicated, a sample held for review).
 */
export function synthgenService(options: SynthgenOptions): ServiceFactory {
  return async (deps) => {
    const base = await prepareService(deps, schema, migrations);
    const db = deps.db as Kysely<SynthgenTables>;
    const prices = options.LATHE_SYNTHGEN_PRICES === undefined ? undefined : parsePrices(options.LATHE_SYNTHGEN_PRICES);
    const workers: GenerationWorker[] = [];
    const onChange = (key: string) => {
      base.relay.notify();
      jobs.changes.emit("changed", key);
    };
    const jobs: JobStore = new JobStore(db, prices, (key) => {
      onChange(key);
      for (const w of workers) w.notify();
    });
    for (let i = 0; i < options.LATHE_SYNTHGEN_WORKERS; i++) {
      workers.push(
        new GenerationWorker({
          db,
          logger: deps.logger.child({ component: "generation-worker" }),
          apiKeys: deps.config.LATHE_API_KEYS,
          peer: (s) => deps.peerAddress(s),
          prices,
          retry: { attempts: options.LATHE_SYNTHGEN_ATTEMPTS, backoffMs: options.LATHE_SYNTHGEN_BACKOFF_MS },
          pollMs: options.LATHE_SYNTHGEN_POLL_MS,
          leaseMs: options.LATHE_SYNTHGEN_LEASE_MS,
          onChange,
        }),
      );
    }
    const parts = workers.map((w) => ({ start: () => w.start(), stop: () => w.stop() }));
    return {
      name: "synthgen",
      register(server) {
        server.add("lathe.synthgen.v1.SynthGenService", SynthGenServiceService, synthgenHandlers({ db, jobs, datasetAddress: () => deps.peerAddress("dataset"), onChange, watchPollMs: 1000 }));
      },
      ...base.with(...parts),
    };
  };
}

/** The synthetic-data service with the options of its config (LATHE_SYNTHGEN_*, loaded with `configSchema`). */
export const createSynthGenService: ServiceFactory = (deps) => synthgenService(synthgenOptionsOf(deps.config))(deps);
