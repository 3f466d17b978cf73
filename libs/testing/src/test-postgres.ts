import { Client } from "pg";
import { PG_ENV, resolvePgAdminUrl } from "./pg-admin-url.js";
import { redactUrl } from "./missing-server-error.js";
import { randomHex } from "./random-token.js";
import { errorText, sleep } from "./wait-for.js";

/** A fresh database of its own for one test (or one test file). */
export interface TestPostgres {
  /** Connection URL of the new database (the admin URL with its database replaced). */
  url: string;
  /** The database name, `lathe_t_<hex>`. */
  database: string;
  /** Ends the database's connections and drops it; harmless when it is already gone. */
  drop(): Promise<void>;
}

/** SQLSTATE object_in_use: CREATE sees template1 busy, or DROP sees a late connection. */
const OBJECT_IN_USE = "55006";

/**
 * Creates an isolated database named `lathe_t_<random hex>` on the server of `LATHE_TEST_PG_URL`
 * (else a testcontainers postgres:16, else a clear error), so tests can run in parallel.
 */
export async function testPostgres(): Promise<TestPostgres> {
  const adminUrl = await resolvePgAdminUrl(process.env);
  const database = `lathe_t_${randomHex(6)}`;
  await withAdmin(adminUrl, (c) => retryInUse(() => c.query(`CREATE DATABASE ${quoteIdent(database)}`)));
  const url = new URL(adminUrl);
  url.pathname = `/${database}`;
  return {
    url: url.toString(),
    database,
    drop: () => dropDatabase(adminUrl, database),
  };
}

async function dropDatabase(adminUrl: string, database: string): Promise<void> {
  await withAdmin(adminUrl, (c) =>
    retryInUse(async () => {
      // Terminate first rather than DROP ... WITH (FORCE): that needs PostgreSQL 13, this works everywhere.
      await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [
        database,
      ]);
      await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(database)}`);
    }),
  );
}

/** Runs `fn` on a short-lived admin connection, naming the server in connection errors. */
async function withAdmin<T>(adminUrl: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: adminUrl });
  // A server-side termination arrives as an 'error' event; without a listener it would crash the process.
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (err) {
    const source = process.env[PG_ENV]?.trim() ? ` (from ${PG_ENV})` : "";
    throw new Error(`cannot connect to PostgreSQL at ${redactUrl(adminUrl)}${source}: ${errorText(err)}`, { cause: err });
  }
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

/** Retries briefly while PostgreSQL reports the database (or template1) busy. */
async function retryInUse<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 20 || (err as { code?: unknown }).code !== OBJECT_IN_USE) throw err;
      await sleep(100);
    }
  }
}

function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}
