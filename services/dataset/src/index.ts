import { join, resolve } from "node:path";
import { openImportRoots, PollingLoop, prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { DatasetServiceService } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { migrations, type DatasetTables } from "./db/migrations.js";
import { errorFields } from "./domain/faults.js";
import { DatasetStore, schema } from "./domain/store.js";
import { Tokenizers } from "./domain/tokenizers.js";
import { datasetHandlers } from "./service.js";

export { configSchema } from "./config.js";
export { datasetValidated, datasetVersionCreated } from "./events.js";

/** Uploads older than this without a heartbeat belong to a dead process: their rows are swept. */
const staleStagingMs = 10 * 60_000;

/** The dataset service: migrates its schema, serves DatasetService, relays its outbox. */
export const createDatasetService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, schema, migrations);
  const store = new DatasetStore(deps.db as Kysely<DatasetTables>, () => base.relay.notify());
  const dataDir = resolve(deps.config.LATHE_DATA_DIR);
  const artifactsDir = resolve(deps.config.LATHE_ARTIFACTS_DIR ?? join(dataDir, "artifacts"));
  // A caller may name a tokenizer folder only inside these; they may not hold the service's own state.
  const importRoots = await openImportRoots(deps.config.LATHE_IMPORT_ROOTS, [dataDir, artifactsDir]);
  const tokenizers = new Tokenizers({
    registryAddress: () => deps.peerAddress("registry"),
    artifacts: deps.artifacts,
    importRoots,
    cacheDir: join(dataDir, "cache", "dataset-tokenizers"),
    logger: deps.logger,
  });
  // Sweeps rows of abandoned uploads, one sweep at a time. It logs its own failures: a database
  // error's message may quote rows, so only errorFields of it are logged.
  const sweeper = new PollingLoop({
    name: "staging sweep",
    intervalMs: staleStagingMs / 2,
    logger: deps.logger,
    tick: async () => {
      try {
        const n = await store.sweepStaging(staleStagingMs);
        if (n > 0) deps.logger.info({ uploads: n }, "removed rows of abandoned uploads");
      } catch (err) {
        deps.logger.warn(errorFields(err), "staging sweep failed");
      }
    },
  });
  return {
    name: "dataset",
    register(server) {
      server.add("lathe.dataset.v1.DatasetService", DatasetServiceService, datasetHandlers({ store, artifacts: deps.artifacts, tokenizers, logger: deps.logger }));
    },
    async start() {
      await base.start();
      sweeper.start();
    },
    async stop() {
      await sweeper.stop();
      await base.stop();
    },
  };
};
