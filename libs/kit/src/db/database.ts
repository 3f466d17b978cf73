import { mkdirSync } from "node:fs";
import { PGlite } from "@electric-sql/pglite";
import { Kysely, PostgresDialect, sql } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import pg from "pg";

/** A database handle shared by the services of a process; each service works in its own schema. */
export interface Database {
  /** The Kysely instance, unqualified: services call `db.withSchema(schema)`. */
  readonly db: Kysely<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** `postgres` for a server, `pglite` for the embedded database. */
  readonly kind: "postgres" | "pglite";
  close(): Promise<void>;
}

// int8 (bigint, e.g. bigserial sequence numbers) as JS numbers: ours stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

/**
 * Opens Postgres: a pool on `pgUrl` when given, else an embedded PGlite database in `pgliteDir`
 * (created when missing). PGlite serves one connection, so the dialect queues queries.
 */
export async function openDatabase(opts: { pgUrl?: string | undefined; pgliteDir?: string; poolSize?: number; onIdleError?: (err: Error) => void }): Promise<Database> {
  if (opts.pgUrl) {
    const pool = new pg.Pool({ connectionString: opts.pgUrl, max: opts.poolSize ?? 10 });
    // An idle connection the server ended (a restart, an administrator, a failover) is dropped
    // from the pool and the next query opens another. Without a listener the pool's 'error'
    // event would be an uncaught exception that takes the whole process down.
    pool.on("error", (err) => opts.onIdleError?.(err));
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) }); // eslint-disable-line @typescript-eslint/no-explicit-any
    await sql`select 1`.execute(db);
    return { db, kind: "postgres", close: () => db.destroy() };
  }
  if (!opts.pgliteDir) throw new Error("openDatabase needs pgUrl or pgliteDir");
  mkdirSync(opts.pgliteDir, { recursive: true });
  const client = await PGlite.create(opts.pgliteDir);
  const db = new Kysely<any>({ dialect: new PGliteDialect(client) }); // eslint-disable-line @typescript-eslint/no-explicit-any
  return { db, kind: "pglite", close: () => db.destroy() };
}
