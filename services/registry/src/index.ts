import { prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import { migrations, type RegistryTables } from "./db/migrations.js";
import { ModelStore, schema } from "./domain/models.js";
import { registryHandlers } from "./service.js";

export { configSchema } from "./config.js";
export { modelCreated, modelDeleted } from "./events.js";

/** The registry: migrates its schema, serves RegistryService, relays its outbox. */
export const createRegistryService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, schema, migrations);
  const models = new ModelStore(deps.db as Kysely<RegistryTables>, () => base.relay.notify());
  return {
    name: "registry",
    register(server) {
      server.add("lathe.registry.v1.RegistryService", RegistryServiceService, registryHandlers(models));
    },
    start: base.start,
    stop: base.stop,
  };
};
