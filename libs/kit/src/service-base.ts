import type { Kysely } from "kysely";
import { migrateSchema } from "./db/migrate.js";
import { OutboxRelay } from "./events/relay.js";
import type { ServiceDeps } from "./runtime.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** Something a service runs beside its handlers: an event consumer, a worker. */
export interface ServicePart {
  start(): void | Promise<void>;
  stop(): Promise<void>;
}

/** What every service owns: its migrated schema and the relay of its outbox. */
export interface ServiceBase {
  readonly schema: string;
  readonly relay: OutboxRelay;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The base and these parts as one: started base first, then in order; stopped in reverse, base last. */
  with(...parts: ServicePart[]): { start(): Promise<void>; stop(): Promise<void> };
}

/**
 * Migrates the service's own schema (`schema`, also its name), or checks it is migrated
 * (LATHE_MIGRATIONS=verify), and prepares its outbox relay.
 * The service calls `relay.notify()` after each commit that enqueued events.
 */
export async function prepareService(
  deps: ServiceDeps,
  schema: string,
  migrations: Record<string, (db: Kysely<any>) => Promise<void>>,
): Promise<ServiceBase> {
  // A config loaded without the kit's schema (some tests build their own) has no mode: apply.
  await migrateSchema(deps.db, schema, migrations, deps.config.LATHE_MIGRATIONS ?? "apply");
  const relay = new OutboxRelay({ db: deps.db, schema, bus: deps.bus, logger: deps.logger.child({ schema }), pollMs: deps.config.LATHE_OUTBOX_POLL_MS });
  const base: ServiceBase = {
    schema,
    relay,
    async start() {
      relay.start();
    },
    async stop() {
      await relay.stop();
    },
    with(...parts) {
      const all: ServicePart[] = [base, ...parts];
      return {
        async start() {
          for (const p of all) await p.start();
        },
        async stop() {
          for (const p of [...all].reverse()) await p.stop();
        },
      };
    },
  };
  return base;
}
