import { join, resolve } from "node:path";
import { openImportRoots, prepareService, type ServiceFactory } from "@lathe/kit";
import type { Kysely } from "kysely";
import { RegistryServiceService } from "@lathe/proto/lathe/registry/v1/registry_service";
import { migrations, type RegistryTables } from "./db/migrations.js";
import { AdapterStore } from "./domain/adapters.js";
import { AliasStore } from "./domain/aliases.js";
import { registryConsumer } from "./domain/consumers.js";
import { ModelStore, schema } from "./domain/models.js";
import { RegistrationWorker } from "./domain/registration.js";
import { registryHandlers } from "./service.js";
import { sweepStaging } from "./domain/folders.js";

export { configSchema } from "./config.js";
export { adapterVersionCreated, aliasMoved, modelCreated, modelDeleted } from "./events.js";

/**
 * The registry: migrates its schema, serves RegistryService, relays its outbox, consumes the
 * other services' events (lineage, evaluations, registrations) and registers what jobs asked for.
 */
export const createRegistryService: ServiceFactory = async (deps) => {
  const base = await prepareService(deps, schema, migrations);
  const db = deps.db as Kysely<RegistryTables>;
  const notify = () => base.relay.notify();
  // Materialized folders, merged models and GGUF files, all keyed by digest.
  const dataDir = resolve(deps.config.LATHE_DATA_DIR);
  const cacheDir = join(dataDir, "cache", "registry");
  const importRoots = await openImportRoots(deps.config.LATHE_IMPORT_ROOTS, [dataDir, resolve(deps.config.LATHE_ARTIFACTS_DIR ?? join(dataDir, "artifacts"))]);
  const stagingDir = join(cacheDir, "staging");
  await sweepStaging(stagingDir);
  const models = new ModelStore(db, deps.artifacts, notify);
  const adapters = new AdapterStore(db, models, deps.artifacts, cacheDir, notify);
  const aliases = new AliasStore(db, adapters, notify);
  const worker = new RegistrationWorker({ db, adapters, artifacts: deps.artifacts, cacheDir, logger: deps.logger, pollMs: 2000 });
  const consumer = registryConsumer({ db, bus: deps.bus, logger: deps.logger, aliases, onRegistration: () => worker.notify() });
  return {
    name: "registry",
    register(server) {
      server.add("lathe.registry.v1.RegistryService", RegistryServiceService, registryHandlers({ db, models, adapters, aliases, artifacts: deps.artifacts, cacheDir, importRoots, stagingDir }));
    },
    ...base.with(consumer, worker),
  };
};
