import { migrateSchema, OutboxRelay, type ServiceFactory } from "@lathe/kit";
import { RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import { migrations, type RegistryTables } from "./db/migrations.js";
import { ModelStore, schema } from "./domain/models.js";
import { registryHandlers } from "./service.js";
import type { Kysely } from "kysely";

export { configSchema } from "./config.js";
export { modelCreated, modelDeleted } from "./events.js";

/** The registry: migrates its schema, serves RegistryService, relays its outbox. */
export const createRegistryService: ServiceFactory = async (deps) => {
  await migrateSchema(deps.db, schema, migrations);
  const relay = new OutboxRelay({ db: deps.db, schema, bus: deps.bus, logger: deps.logger, pollMs: deps.config.LATHE_OUTBOX_POLL_MS });
  const models = new ModelStore(deps.db as Kysely<RegistryTables>, () => relay.notify());
  return {
    name: "registry",
    register(server) {
      server.add("lathe.registry.v1.RegistryService", RegistryServiceService, registryHandlers(models));
    },
    async start() {
      relay.start();
    },
    async stop() {
      await relay.stop();
    },
  };
};
