import { context, SpanKind, trace } from "@opentelemetry/api";
import type { Kysely, Transaction } from "kysely";
import type { Logger } from "pino";
import type { EventMeta } from "@lathe/proto/lathe/events/v1/event_meta";
import { contextFromHeaders, tracer } from "../telemetry.js";
import type { Delivery, EventBus, Subscription } from "./bus.js";
import type { EventDef } from "./event.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

type Handler<T, DB> = (event: T, tx: { trx: Transaction<DB>; meta: EventMeta }) => Promise<void>;

/** The consumer's own table, in the service's schema (`eventsMigration` creates it). */
interface ConsumerTables {
  processed_events: { consumer: string; event_id: string };
}

/**
 * A durable, idempotent consumer: each event is applied in one transaction together with the
 * record of its id in `processed_events`, so an event delivered twice (a redelivery, a
 * republish after a crash) is applied once. Handlers run in the producer's trace. `DB` is the
 * service's tables, so a handler's transaction is typed like the rest of its queries.
 */
export class EventConsumer<DB = any> {
  private readonly handlers = new Map<string, { def: EventDef<any>; handle: Handler<any, DB> }>();
  private subscription: Subscription | undefined;

  constructor(
    private readonly opts: { name: string; db: Kysely<DB>; schema: string; bus: EventBus; logger: Logger },
  ) {}

  on<T extends { meta?: EventMeta | undefined }>(def: EventDef<T>, handle: Handler<T, DB>): this {
    this.handlers.set(def.subject, { def, handle });
    return this;
  }

  async start(): Promise<void> {
    if (this.handlers.size === 0) return;
    this.subscription = await this.opts.bus.subscribe({
      durable: this.opts.name,
      subjects: [...this.handlers.keys()],
      handler: (d) => this.apply(d),
    });
  }

  async stop(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
  }

  private async apply(d: Delivery): Promise<void> {
    const entry = this.handlers.get(d.subject);
    if (!entry) return;
    const event = entry.def.codec.decode(d.data) as { meta?: EventMeta };
    const meta = event.meta;
    if (!meta?.eventId) {
      this.opts.logger.error({ subject: d.subject }, "event without meta.event_id dropped");
      return;
    }
    const parent = contextFromHeaders({ ...d.headers });
    const span = tracer.startSpan(`consume ${d.subject}`, { kind: SpanKind.CONSUMER, attributes: { "messaging.system": "nats", "messaging.message.id": meta.eventId, "lathe.service": this.opts.name } }, parent);
    try {
      await context.with(trace.setSpan(parent, span), () =>
        this.opts.db.transaction().execute(async (trx) => {
          const inserted = await (trx as unknown as Transaction<ConsumerTables>)
            .withSchema(this.opts.schema)
            .insertInto("processed_events")
            .values({ consumer: this.opts.name, event_id: meta.eventId })
            .onConflict((oc) => oc.doNothing())
            .returning("event_id")
            .executeTakeFirst();
          if (!inserted) return; // applied before
          await entry.handle(event, { trx, meta });
        }),
      );
    } finally {
      span.end();
    }
  }
}
