import { prepareService, type ServiceFactory } from "@lathe/kit";
import { DatasetServiceService } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { migrations } from "./db/migrations.js";
import { datasetHandlers } from "./service.js";

export { configSchema } from "./config.js";

/** The dataset service: migrates its schema, serves DatasetService, relays its outbox. */
export const createDatasetService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, "dataset", migrations);
  return {
    name: "dataset",
    register(server) {
      server.add("lathe.dataset.v1.DatasetService", DatasetServiceService, datasetHandlers());
    },
    start: base.start,
    stop: base.stop,
  };
};
