import { join, resolve } from "node:path";
import { EventConsumer, prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { TrainerServiceService } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { trainerOptionsOf, type TrainerOptions } from "./config.js";
import { migrations } from "./db/migrations.js";
import { schema, type TrainerTables } from "./db/tables.js";
import { loadCostTable } from "./domain/estimate.js";
import { JobStore } from "./domain/job-store.js";
import { JobLeases } from "./domain/lease.js";
import { LocalWorker } from "./domain/worker.js";
import { adapterVersionCreated } from "./events.js";
import { trainerHandlers } from "./service.js";

export { configSchema, trainerOptionsOf, trainerOptionsSchema, type TrainerConfig, type TrainerOptions } from "./config.js";
export { defaultCostTable, type CostTable } from "./domain/estimate.js";
export * from "./events.js";

/**
 * A trainer service with the given options: migrates its schema, serves TrainerService, relays
 * its outbox, runs jobs on its local worker slots, and learns from the registry which adapter
 * version each job became.
 */
export function trainerService(options: TrainerOptions): ServiceFactory {
  return async (deps) => {
    const base = await prepareService(deps, schema, migrations);
    const db = deps.db as Kysely<TrainerTables>;
    const jobs = new JobStore(db, () => base.relay.notify());
    const dataDir = resolve(deps.config.LATHE_DATA_DIR);
    const costTable = loadCostTable(options.LATHE_TRAINER_COST_TABLE);
    const worker = new LocalWorker({
      jobs,
      leases: new JobLeases(db, jobs),
      artifacts: deps.artifacts,
      logger: deps.logger.child({ component: "trainer-worker" }),
      workDir: join(dataDir, "work", "trainer"),
      slots: options.LATHE_TRAINER_WORKERS,
      threads: options.LATHE_TRAINER_THREADS,
      pollMs: options.LATHE_TRAINER_POLL_MS,
      leaseMs: options.LATHE_TRAINER_LEASE_MS,
    });
    const consumer = new EventConsumer<TrainerTables>({ name: "trainer", db, schema, bus: deps.bus, logger: deps.logger }).on(adapterVersionCreated, async (e, { trx, meta }) => {
      if (e.fineTuningJob !== "") await jobs.setAdapterVersion(trx, meta.tenant, e.fineTuningJob, e.adapterVersion);
    });
    return {
      name: "trainer",
      register(server) {
        server.add(
          "lathe.trainer.v1.TrainerService",
          TrainerServiceService,
          trainerHandlers({
            jobs,
            artifacts: deps.artifacts,
            costTable,
            cacheDir: join(dataDir, "cache", "trainer"),
            peer: (s) => deps.peerAddress(s),
            onQueued: () => worker.notify(),
            watchPollMs: Math.min(1000, options.LATHE_TRAINER_POLL_MS),
          }),
        );
      },
      ...base.with(consumer, worker),
    };
  };
}

/** The trainer service with the options of its config (LATHE_TRAINER_*, loaded with `configSchema`). */
export const createTrainerService: ServiceFactory = (deps) => trainerService(trainerOptionsOf(deps.config))(deps);
