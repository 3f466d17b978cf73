import { sql, type ColumnType, type Generated, type Kysely, type Selectable } from "kysely";
import { eventsMigration } from "@lathe/kit";

/* eslint-disable @typescript-eslint/no-explicit-any */

/** The registry's schema, in order. Never edit a released migration; add a new one. */
export const migrations: Record<string, (db: Kysely<any>) => Promise<void>> = {
  "0000_events": eventsMigration,
  "0001_models": async (db) => {
    await db.schema
      .createTable("models")
      .addColumn("tenant", "text", (c) => c.notNull())
      .addColumn("model_id", "text", (c) => c.notNull())
      .addColumn("seq", "bigserial", (c) => c.notNull())
      .addColumn("display_name", "text", (c) => c.notNull())
      .addColumn("description", "text", (c) => c.notNull())
      .addColumn("source_uri", "text", (c) => c.notNull())
      .addColumn("labels", "jsonb", (c) => c.notNull())
      .addColumn("request_id", "text")
      .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn("update_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
      .addPrimaryKeyConstraint("models_pk", ["tenant", "model_id"])
      .addUniqueConstraint("models_request_id", ["tenant", "request_id"])
      .execute();
    await db.schema.createIndex("models_list").on("models").columns(["tenant", "seq"]).execute();
  },
};

/** Row types of the registry's tables. */
export interface ModelsTable {
  tenant: string;
  model_id: string;
  seq: Generated<number>;
  display_name: string;
  description: string;
  source_uri: string;
  /** JSON text on the way in, an object on the way out. */
  labels: ColumnType<Record<string, string>, string, string>;
  request_id: string | null;
  create_time: Generated<Date>;
  update_time: Generated<Date>;
}

export type ModelRow = Selectable<ModelsTable>;

export interface RegistryTables {
  models: ModelsTable;
}
