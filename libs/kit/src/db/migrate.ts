import { sql, type Kysely } from "kysely";
import { Migrator, type Migration } from "kysely/migration";
import { AppError } from "../errors.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** A service's migrations, named in order (`0001_models`, …), each given a Kysely bound to its schema. */
export type Migrations = Record<string, (db: Kysely<any>) => Promise<void>>;

/** Where a schema stands against the migrations this release knows. */
export interface SchemaState {
  /** Migrations recorded as run in the schema, in the order they ran. */
  readonly applied: readonly string[];
  /** Known migrations not run yet. */
  readonly pending: readonly string[];
  /** Migrations recorded as run that this release does not know: a newer release ran them. */
  readonly unknown: readonly string[];
}

/** What {@link migrateSchema} does with pending migrations. */
export type MigrationMode = "apply" | "verify";

// Kysely's bookkeeping table, kept in the service's own schema (migrationTableSchema below).
const MIGRATION_TABLE = "kysely_migration";

function checkSchemaName(schema: string): void {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${JSON.stringify(schema)}`);
}

/** Reads which of `migrations` a schema has run, which it has not, and which it ran that are unknown here. */
export async function schemaState(db: Kysely<any>, schema: string, migrations: Migrations): Promise<SchemaState> {
  checkSchemaName(schema);
  const exists = await sql<{ t: string | null }>`select to_regclass(${`${schema}.${MIGRATION_TABLE}`})::text as t`.execute(db);
  const applied =
    exists.rows[0]?.t == null
      ? []
      : (await sql<{ name: string }>`select name from ${sql.id(schema, MIGRATION_TABLE)} order by timestamp, name`.execute(db)).rows.map((r) => r.name);
  const known = Object.keys(migrations);
  const ran = new Set(applied);
  return {
    applied,
    pending: known.filter((n) => !ran.has(n)),
    unknown: applied.filter((n) => !(n in migrations)),
  };
}

/**
 * Brings a service's own schema up to date (mode `apply`, the default) or only checks that it
 * is (`verify`: when a separate step, such as the chart's migration Job, owns schema changes).
 * Their bookkeeping tables live in that schema too, so services never touch each other's tables.
 *
 * Refuses, before changing anything, a schema that has run migrations this release does not
 * know (FAILED_PRECONDITION, SCHEMA_NEWER_THAN_RELEASE): a newer release migrated it, and code
 * that does not know the new columns and constraints must not write to it. In `verify` mode a
 * schema with pending migrations is refused too (SCHEMA_NOT_MIGRATED). Throws with the failing
 * migration's name when one fails. Returns the migrations it ran.
 */
export async function migrateSchema(db: Kysely<any>, schema: string, migrations: Migrations, mode: MigrationMode = "apply"): Promise<string[]> {
  checkSchemaName(schema);
  const state = await schemaState(db, schema, migrations);
  if (state.unknown.length > 0) {
    throw new AppError(
      "FAILED_PRECONDITION",
      "SCHEMA_NEWER_THAN_RELEASE",
      `schema ${schema} has migrations this release does not know (${state.unknown.join(", ")}): a newer release migrated it; run that release or restore the database from before its upgrade`,
      { schema, unknown: state.unknown.join(",") },
    );
  }
  if (mode === "verify") {
    if (state.pending.length > 0) {
      throw new AppError(
        "FAILED_PRECONDITION",
        "SCHEMA_NOT_MIGRATED",
        `schema ${schema} lacks migrations ${state.pending.join(", ")} and LATHE_MIGRATIONS=verify: run this release's migrate step first (\`node services/${schema}/dist/main.js migrate\`, the chart's migration Job)`,
        { schema, pending: state.pending.join(",") },
      );
    }
    return [];
  }
  if (state.pending.length === 0) return [];
  await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  const provider = {
    async getMigrations(): Promise<Record<string, Migration>> {
      // Each migration runs in the migrator's transaction (`trx`), never on a second connection:
      // PGlite has one, and on Postgres the lock and the change must commit together.
      return Object.fromEntries(Object.entries(migrations).map(([name, up]) => [name, { up: (trx: Kysely<any>) => up(trx.withSchema(schema)) }]));
    },
  };
  const migrator = new Migrator({ db, provider, migrationTableSchema: schema });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error) {
    throw new Error(`migrating schema ${schema} failed${failed ? ` at ${failed.migrationName}` : ""}: ${String((error as Error).message ?? error)}`);
  }
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
