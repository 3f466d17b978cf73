import { join, resolve } from "node:path";
import type { Logger } from "pino";
import type { BaseConfig } from "../config.js";
import { openDatabase } from "./database.js";
import { migrateSchema, schemaState, type Migrations, type SchemaState } from "./migrate.js";

/** A service's schema and the migrations this release knows, for `main.js migrate`. */
export interface ServiceSchema {
  readonly name: string;
  readonly migrations: Migrations;
}

/** What `migrate` did: the migrations it ran (none with `check`) and where the schema stands after. */
export interface MigrateOutcome {
  readonly schema: string;
  readonly ran: readonly string[];
  readonly state: SchemaState;
}

/**
 * `node services/<name>/dist/main.js migrate [--check]`: opens the service's database, runs its
 * pending migrations (or with `check` only reads where the schema stands), and closes it. Run
 * before the services roll (the chart's migration Job), so new pods find their schema ready and
 * can run with LATHE_MIGRATIONS=verify. Throws SCHEMA_NEWER_THAN_RELEASE as the services do;
 * with `check`, a schema that still has pending migrations throws SCHEMA_NOT_MIGRATED.
 */
export async function migrateCommand(opts: { config: BaseConfig; schema: ServiceSchema; check: boolean; logger: Logger }): Promise<MigrateOutcome> {
  const { config, schema, logger } = opts;
  const database = await openDatabase({ pgUrl: config.LATHE_PG_URL, pgliteDir: join(resolve(config.LATHE_DATA_DIR), "pg"), poolSize: 1 });
  try {
    const ran = await migrateSchema(database.db, schema.name, schema.migrations, opts.check ? "verify" : "apply");
    const state = await schemaState(database.db, schema.name, schema.migrations);
    logger.info({ schema: schema.name, database: database.kind, ran, applied: state.applied.length, check: opts.check }, opts.check ? "schema is up to date" : "schema migrated");
    return { schema: schema.name, ran, state };
  } finally {
    await database.close();
  }
}
