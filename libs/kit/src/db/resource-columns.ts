import { sql, type CreateTableBuilder } from "kysely";

/**
 * The columns every AIP resource table has besides its keys: a sequence for stable paging,
 * display name, description, labels (JSON), the request id of an idempotent create, and times.
 * Callers add `tenant`, their id columns and the primary key.
 */
export function withResourceColumns<T extends string, C extends string>(t: CreateTableBuilder<T, C>): CreateTableBuilder<T, C | "seq" | "display_name" | "description" | "labels" | "request_id" | "create_time" | "update_time"> {
  return t
    .addColumn("seq", "bigserial", (c) => c.notNull())
    .addColumn("display_name", "text", (c) => c.notNull())
    .addColumn("description", "text", (c) => c.notNull())
    .addColumn("labels", "jsonb", (c) => c.notNull())
    .addColumn("request_id", "text")
    .addColumn("create_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("update_time", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`));
}
