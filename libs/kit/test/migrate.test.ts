import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError, migrateSchema, openDatabase, schemaState, type Database, type Migrations } from "../src/index.js";
import { testPostgres, type TestPostgres } from "../../testing/src/index.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

// A release's migrations against the schema an older or a newer release left, on real Postgres.

const release1: Migrations = {
  "0001_items": async (db: Kysely<any>) => {
    await db.schema.createTable("items").addColumn("id", "text", (c) => c.primaryKey()).execute();
  },
};
const release2: Migrations = {
  ...release1,
  "0002_item_size": async (db: Kysely<any>) => {
    await db.schema.alterTable("items").addColumn("size", "integer", (c) => c.notNull().defaultTo(0)).execute();
  },
};

async function columns(db: Kysely<any>, schema: string): Promise<string[]> {
  const r = await sql<{ column_name: string }>`select column_name from information_schema.columns where table_schema = ${schema} and table_name = 'items' order by column_name`.execute(db);
  return r.rows.map((x) => x.column_name);
}

async function refusal(p: Promise<unknown>): Promise<AppError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("migrateSchema", () => {
  let pg: TestPostgres;
  let database: Database;
  beforeAll(async () => {
    pg = await testPostgres();
    database = await openDatabase({ pgUrl: pg.url });
  });
  afterAll(async () => {
    await database?.close();
    await pg?.drop();
  });

  it("applies pending migrations in order and reports them, then has nothing to do", async () => {
    expect(await migrateSchema(database.db, "m_apply", release1)).toEqual(["0001_items"]);
    expect(await migrateSchema(database.db, "m_apply", release2)).toEqual(["0002_item_size"]);
    expect(await migrateSchema(database.db, "m_apply", release2)).toEqual([]);
    expect(await columns(database.db, "m_apply")).toEqual(["id", "size"]);
    expect(await schemaState(database.db, "m_apply", release2)).toEqual({ applied: ["0001_items", "0002_item_size"], pending: [], unknown: [] });
  });

  it("in verify mode refuses a schema with pending migrations and changes nothing", async () => {
    await migrateSchema(database.db, "m_verify", release1);
    const err = await refusal(migrateSchema(database.db, "m_verify", release2, "verify"));
    expect(err.reason).toBe("SCHEMA_NOT_MIGRATED");
    expect(err.message).toContain("0002_item_size");
    expect(await columns(database.db, "m_verify")).toEqual(["id"]);
    // Once migrated (by the migration Job), verify passes.
    await migrateSchema(database.db, "m_verify", release2);
    expect(await migrateSchema(database.db, "m_verify", release2, "verify")).toEqual([]);
  });

  it("in verify mode refuses a schema never migrated, without creating it", async () => {
    const err = await refusal(migrateSchema(database.db, "m_empty", release1, "verify"));
    expect(err.reason).toBe("SCHEMA_NOT_MIGRATED");
    const r = await sql<{ n: number }>`select count(*)::int as n from information_schema.schemata where schema_name = 'm_empty'`.execute(database.db);
    expect(r.rows[0]!.n).toBe(0);
  });

  it("refuses a schema a newer release migrated, in both modes, naming the unknown migrations", async () => {
    await migrateSchema(database.db, "m_newer", release2);
    for (const mode of ["apply", "verify"] as const) {
      const err = await refusal(migrateSchema(database.db, "m_newer", release1, mode));
      expect(err.code).toBe("FAILED_PRECONDITION");
      expect(err.reason).toBe("SCHEMA_NEWER_THAN_RELEASE");
      expect(err.message).toContain("0002_item_size");
    }
    expect(await schemaState(database.db, "m_newer", release1)).toEqual({ applied: ["0001_items", "0002_item_size"], pending: [], unknown: ["0002_item_size"] });
    expect(await columns(database.db, "m_newer")).toEqual(["id", "size"]);
  });
});
