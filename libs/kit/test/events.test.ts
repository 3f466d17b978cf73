import { randomUUID } from "node:crypto";
import { sql, type Kysely } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import {
  createLogger,
  defineEvent,
  encodeEvent,
  enqueueEvents,
  eventsMigration,
  EventConsumer,
  JetStreamBus,
  MemoryBus,
  migrateSchema,
  openDatabase,
  OutboxRelay,
  type Database,
  type Delivery,
  type EventBus,
} from "../src/index.js";
import { cleanupNatsPrefix, testNats, testPostgres, waitFor, type TestPostgres } from "../../testing/src/index.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

// Outbox → relay → bus → idempotent consumer, on a real Postgres and on both buses.

const SCHEMA = "kit_test";
const modelCreated = defineEvent("lathe.registry.v1.model_created", ModelCreated);
const logger = createLogger({ service: "kit-test", level: "silent" });
const created = (model: string) => ({ def: modelCreated, tenant: "acme", subject: model, payload: { model, displayName: model } });

const buses: [string, () => Promise<{ bus: EventBus; dispose(): Promise<void> }>][] = [
  ["MemoryBus", async () => {
    const bus = new MemoryBus(logger);
    return { bus, dispose: () => bus.close() };
  }],
  ["JetStreamBus", async () => {
    const nats = await testNats();
    const bus = await JetStreamBus.connect({ url: nats.url, prefix: nats.prefix, logger });
    return {
      bus,
      async dispose() {
        await bus.close();
        await cleanupNatsPrefix(nats.url, nats.prefix);
      },
    };
  }],
];

describe.each(buses)("outbox, relay and consumer on %s", (_name, open) => {
  let pg: TestPostgres;
  let database: Database;
  let db: Kysely<any>;
  let bus: EventBus;
  let disposeBus: () => Promise<void>;
  let relay: OutboxRelay;
  let consumer: EventConsumer;
  /** Models in the order the bus delivered them to an observer that is not idempotent. */
  const published: string[] = [];
  /** Handler invocations of the consumer, and how many times models starting with "flaky" still fail. */
  const attempts: string[] = [];
  const failuresLeft = new Map<string, number>();

  const effects = async (id: string) =>
    Number((await db.withSchema(SCHEMA).selectFrom("effects").select(sql<string>`count(*)`.as("n")).where("id", "=", id).executeTakeFirstOrThrow()).n);
  const effectApplied = (id: string) => waitFor(async () => (await effects(id)) > 0, { what: `the effect of ${id}` });
  const commit = async (...models: string[]) => {
    await db.transaction().execute((trx) => enqueueEvents(trx, SCHEMA, "kit-test", models.map(created)));
    relay.notify();
  };

  beforeAll(async () => {
    pg = await testPostgres();
    database = await openDatabase({ pgUrl: pg.url });
    db = database.db;
    await migrateSchema(db, SCHEMA, {
      "0000_events": eventsMigration,
      "0001_effects": (d) => d.schema.createTable("effects").addColumn("id", "text").execute(),
    });
    ({ bus, dispose: disposeBus } = await open());
    await bus.subscribe({
      durable: "observer",
      subjects: [modelCreated.subject],
      handler: async (d: Delivery) => void published.push(ModelCreated.decode(d.data).model),
    });
    consumer = new EventConsumer({ name: "effects", db, schema: SCHEMA, bus, logger }).on(modelCreated, async (event, { trx }) => {
      attempts.push(event.model);
      await trx.withSchema(SCHEMA).insertInto("effects").values({ id: event.model }).execute();
      const left = failuresLeft.get(event.model) ?? 0;
      if (left > 0) {
        failuresLeft.set(event.model, left - 1);
        throw new Error(`${event.model} fails this time`);
      }
    });
    await consumer.start();
    relay = new OutboxRelay({ db, schema: SCHEMA, bus, logger, pollMs: 50 });
    relay.start();
  });

  afterAll(async () => {
    await relay?.stop();
    await consumer?.stop();
    await disposeBus?.();
    await database?.close();
    await pg?.drop();
  });

  it("publishes committed events in order and never those of a rolled-back transaction", async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await enqueueEvents(trx, SCHEMA, "kit-test", [created("models/rolled-back")]);
        throw new Error("the change failed");
      }),
    ).rejects.toThrow("the change failed");
    await commit("models/a", "models/b");
    await commit("models/c");
    await effectApplied("models/c");
    await waitFor(() => published.includes("models/c"), { what: "the observer to see models/c" });

    expect(published.filter((m) => ["models/a", "models/b", "models/c", "models/rolled-back"].includes(m))).toEqual([
      "models/a",
      "models/b",
      "models/c",
    ]);
    expect(await effects("models/rolled-back")).toBe(0);
    const outbox = await db.withSchema(SCHEMA).selectFrom("outbox").select(["subject", "published_at"]).execute();
    expect(outbox).toHaveLength(3);
    expect(outbox.every((r) => r.subject === modelCreated.subject && r.published_at !== null)).toBe(true);
  });

  it("applies an event delivered twice under two bus ids once", async () => {
    const event = encodeEvent("kit-test", created("models/twice"));
    await bus.publish({ id: randomUUID(), subject: event.subject, data: event.data, headers: event.headers });
    await bus.publish({ id: randomUUID(), subject: event.subject, data: event.data, headers: event.headers });
    await commit("models/after-twice");
    await effectApplied("models/after-twice");
    await waitFor(() => published.filter((m) => m === "models/twice").length === 2, { what: "both deliveries" });

    expect(await effects("models/twice")).toBe(1);
    expect(attempts.filter((m) => m === "models/twice")).toHaveLength(1);
    const processed = await db.withSchema(SCHEMA).selectFrom("processed_events").select("consumer").where("event_id", "=", event.id).execute();
    expect(processed).toEqual([{ consumer: "effects" }]);
  });

  it("retries a handler that throws and keeps only the effect of the attempt that succeeded", async () => {
    failuresLeft.set("models/flaky", 1);
    await commit("models/flaky", "models/after-flaky");
    await effectApplied("models/after-flaky");
    await effectApplied("models/flaky");

    expect(attempts.filter((m) => m === "models/flaky")).toHaveLength(2);
    expect(await effects("models/flaky")).toBe(1);
    expect(await effects("models/after-flaky")).toBe(1);
  });

  it("publishes on stop what was committed just before", async () => {
    await db.transaction().execute((trx) => enqueueEvents(trx, SCHEMA, "kit-test", [created("models/last")]));
    await relay.stop();
    const left = await db.withSchema(SCHEMA).selectFrom("outbox").select("event_id").where("published_at", "is", null).execute();
    expect(left).toEqual([]);
    await effectApplied("models/last");
  });
});
