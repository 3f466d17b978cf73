import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sql } from "kysely";
import pg from "pg";
import { testPostgres, waitFor, type TestPostgres } from "../../testing/src/index.js";
import { openDatabase, type Database } from "../src/index.js";

// The pool's idle connections can be ended by the server at any time (a restart, an
// administrator, a test dropping its database while the pool is closing). That must not be an
// uncaught exception: the process lives on and the next query gets a fresh connection.
// testPostgres() uses LATHE_TEST_PG_URL (CI sets it), else testcontainers, else fails saying which.
describe("openDatabase on Postgres", () => {
  let pgdb: TestPostgres;
  let database: Database | undefined;
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown) => void uncaught.push(err);

  beforeAll(async () => {
    pgdb = await testPostgres();
    process.on("uncaughtException", onUncaught);
  });
  afterAll(async () => {
    process.off("uncaughtException", onUncaught);
    await database?.close().catch(() => {});
    await pgdb?.drop();
  });

  const terminateOthers = async () => {
    const admin = new pg.Client({ connectionString: pgdb.url });
    await admin.connect();
    try {
      const r = await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()");
      return r.rowCount ?? 0;
    } finally {
      await admin.end();
    }
  };

  it("an idle connection the server terminates is reported, dropped from the pool, and the next query works", async () => {
    const idleErrors: Error[] = [];
    database = await openDatabase({ pgUrl: pgdb.url, poolSize: 3, onIdleError: (e) => void idleErrors.push(e) });
    // Three idle connections in the pool.
    await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.05)`.execute(database!.db)));
    const terminated = await terminateOthers();
    expect(terminated).toBeGreaterThanOrEqual(1);
    // Each idle connection hears of its end on its own; a query handed one still about to hear
    // would fail (the pool does not retry queries), so wait for all of them.
    await waitFor(async () => idleErrors.length >= terminated, { what: "the pool's idle errors" });
    expect(idleErrors[0]!.message).toMatch(/terminating connection/);
    const r = await sql<{ one: number }>`select 1 as one`.execute(database.db);
    expect(r.rows[0]!.one).toBe(1);
    expect(uncaught).toEqual([]);
  });

  it("closing the pool while the server ends its connections throws nothing", async () => {
    const db = await openDatabase({ pgUrl: pgdb.url, poolSize: 4 });
    await Promise.all([1, 2, 3, 4].map(() => sql`select pg_sleep(0.05)`.execute(db.db)));
    // The pool's end resolves before its sockets are closed; terminate them in that window.
    await Promise.all([db.close(), terminateOthers()]);
    await new Promise((r) => setTimeout(r, 200));
    expect(uncaught).toEqual([]);
  });
});
