import type { Kysely } from "kysely";
import { migrateSchema } from "./db/migrate.js";
import { OutboxRelay } from "./events/relay.js";
import type { ServiceDeps } from "./runtime.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** What every service owns: its migrated schema and the relay of its outbox. */
export interface ServiceBase {
  readonly schema: string;
  readonly relay: OutboxRelay;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Migrates the service's own schema (`schema`, also its name) and prepares its outbox relay.
 * The service calls `relay.notify()` after each commit that enqueued events.
 */
export async function prepareService(
  deps: ServiceDeps,
  schema: string,
  migrations: Record<string, (db: Kysely<any>) => Promise<void>>,
): Promise<ServiceBase> {
  await migrateSchema(deps.db, schema, migrations);
  const relay = new OutboxRelay({ db: deps.db, schema, bus: deps.bus, logger: deps.logger.child({ schema }), pollMs: deps.config.LATHE_OUTBOX_POLL_MS });
  return {
    schema,
    relay,
    async start() {
      relay.start();
    },
    async stop() {
      await relay.stop();
    },
  };
}
