import { sql, type Kysely, type Transaction } from "kysely";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import { encodeEvent, type NewEvent } from "./event.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

/**
 * The kit's tables in a service's schema: `outbox` (events written in the same transaction as
 * the change they announce, published later by the relay) and `processed_events` (ids a
 * consumer has applied, so a redelivery changes nothing). Services list this migration first.
 */
export async function eventsMigration(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("outbox")
    .addColumn("seq", "bigserial", (c) => c.primaryKey())
    .addColumn("event_id", "uuid", (c) => c.notNull().unique())
    .addColumn("subject", "text", (c) => c.notNull())
    .addColumn("data", "bytea", (c) => c.notNull())
    .addColumn("headers", "jsonb", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("published_at", "timestamptz")
    .execute();
  await db.schema.createIndex("outbox_unpublished").on("outbox").column("seq").where(sql.ref("published_at"), "is", null).execute();
  await db.schema
    .createTable("processed_events")
    .addColumn("consumer", "text", (c) => c.notNull())
    .addColumn("event_id", "text", (c) => c.notNull())
    .addColumn("processed_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("processed_events_pk", ["consumer", "event_id"])
    .execute();
}

/**
 * Writes events to the outbox inside the caller's transaction: they become visible (and get
 * published) only if the change they announce commits. Returns the event ids.
 */
export async function enqueueEvents(
  trx: Transaction<any> | Kysely<any>,
  schema: string,
  source: string,
  events: readonly NewEvent<{ meta?: EventMeta | undefined }>[],
): Promise<string[]> {
  if (events.length === 0) return [];
  const rows = events.map((e) => {
    const enc = encodeEvent(source, e);
    return { event_id: enc.id, subject: enc.subject, data: Buffer.from(enc.data), headers: JSON.stringify(enc.headers) };
  });
  await trx.withSchema(schema).insertInto("outbox").values(rows).execute();
  return rows.map((r) => r.event_id);
}
