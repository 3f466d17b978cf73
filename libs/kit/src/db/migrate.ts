import { sql, type Kysely } from "kysely";
import { Migrator, type Migration } from "kysely/migration";

/**
 * Brings a service's own schema up to date. `migrations` are named in order (`0001_models`,
 * …) and receive a Kysely bound to the schema; their bookkeeping tables live in that schema too,
 * so services never touch each other's tables. Throws with the failing migration's name.
 */
export async function migrateSchema(
  db: Kysely<any>, // eslint-disable-line @typescript-eslint/no-explicit-any
  schema: string,
  migrations: Record<string, (db: Kysely<any>) => Promise<void>>, // eslint-disable-line @typescript-eslint/no-explicit-any
): Promise<void> {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${JSON.stringify(schema)}`);
  await sql`create schema if not exists ${sql.id(schema)}`.execute(db);
  const provider = {
    async getMigrations(): Promise<Record<string, Migration>> {
      // Each migration runs in the migrator's transaction (`trx`), never on a second connection:
      // PGlite has one, and on Postgres the lock and the change must commit together.
      return Object.fromEntries(Object.entries(migrations).map(([name, up]) => [name, { up: (trx: Kysely<any>) => up(trx.withSchema(schema)) }])); // eslint-disable-line @typescript-eslint/no-explicit-any
    },
  };
  const migrator = new Migrator({ db, provider, migrationTableSchema: schema });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error) {
    throw new Error(`migrating schema ${schema} failed${failed ? ` at ${failed.migrationName}` : ""}: ${String((error as Error).message ?? error)}`);
  }
}
