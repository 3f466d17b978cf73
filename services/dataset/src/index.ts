import { prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { DatasetServiceService } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { migrations, type DatasetTables } from "./db/migrations.js";
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
  const tokenizers = new Tokenizers(() => deps.peerAddress("registry"));
  let sweeper: NodeJS.Timeout | undefined;
  return {
    name: "dataset",
    register(server) {
      server.add("lathe.dataset.v1.DatasetService", DatasetServiceService, datasetHandlers({ store, artifacts: deps.artifacts, tokenizers, logger: deps.logger }));
    },
    async start() {
      await base.start();
      const sweep = () =>
        store.sweepStaging(staleStagingMs).then(
          (n) => n > 0 && deps.logger.info({ uploads: n }, "removed rows of abandoned uploads"),
          (err: unknown) => deps.logger.warn({ err }, "staging sweep failed"),
        );
      void sweep();
      sweeper = setInterval(() => void sweep(), staleStagingMs / 2);
      sweeper.unref();
    },
    async stop() {
      if (sweeper) clearInterval(sweeper);
      await base.stop();
    },
  };
};
