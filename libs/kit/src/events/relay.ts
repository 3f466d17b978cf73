import { sql, type Kysely } from "kysely";
import type { Logger } from "pino";
import { PollingLoop } from "../polling-loop.js";
import type { EventBus } from "./bus.js";

/* eslint-disable @typescript-eslint/no-explicit-any */

export interface RelayOptions {
  db: Kysely<any>;
  schema: string;
  bus: EventBus;
  logger: Logger;
  /** Poll interval in milliseconds when nothing wakes the relay. */
  pollMs: number;
  /** Rows published per transaction. Default 100. */
  batchSize?: number;
}

/**
 * Publishes a service's outbox in order. Rows are claimed with `for update skip locked`, so
 * replicas share the work; a row is marked sent only after the bus acknowledged it, so a crash
 * or a NATS outage between commit and publish delays the event and never loses it. A publish
 * repeated after a crash carries the same event id, which JetStream drops as a duplicate.
 */
export class OutboxRelay {
  private readonly loop: PollingLoop;

  constructor(private readonly opts: RelayOptions) {
    this.loop = new PollingLoop({
      name: `outbox relay of ${opts.schema}: publishing`,
      intervalMs: opts.pollMs,
      logger: opts.logger,
      // Backs off while the bus is down, up to 5 s.
      retryMs: (failures) => Math.min(opts.pollMs * 2 ** failures, 5_000),
      tick: async (signal) => {
        while (!signal.aborted && (await this.flushOnce()) > 0) {
          /* keep going while there is a backlog */
        }
      },
    });
  }

  start(): void {
    this.loop.start();
  }

  /** Asks for a flush soon (after a commit that enqueued events). */
  notify(): void {
    this.loop.notify();
  }

  /** Publishes one batch; returns how many rows it published. */
  async flushOnce(): Promise<number> {
    const { db, schema, bus } = this.opts;
    let failure: unknown;
    const count = await db.transaction().execute(async (trx) => {
      const rows = await trx
        .withSchema(schema)
        .selectFrom("outbox")
        .select(["seq", "event_id", "subject", "data", "headers"])
        .where("published_at", "is", null)
        .orderBy("seq")
        .limit(this.opts.batchSize ?? 100)
        .forUpdate()
        .skipLocked()
        .execute();
      const sent: number[] = [];
      for (const row of rows) {
        const headers = typeof row.headers === "string" ? JSON.parse(row.headers) : row.headers;
        try {
          await bus.publish({ id: row.event_id, subject: row.subject, data: new Uint8Array(row.data), headers });
        } catch (err) {
          // Keep what was published (it is marked sent below, in this commit); stop at the first
          // failure so events go out in order.
          failure = err;
          break;
        }
        sent.push(Number(row.seq));
      }
      if (sent.length > 0) {
        await trx.withSchema(schema).updateTable("outbox").set({ published_at: sql`now()` }).where("seq", "in", sent).execute();
      }
      return sent.length;
    });
    if (failure !== undefined) throw failure;
    return count;
  }

  /** Stops polling, after one last attempt to publish what is pending. */
  async stop(): Promise<void> {
    if (!this.loop.running) return;
    await this.loop.stop();
    try {
      while ((await this.flushOnce()) > 0) {
        /* drain */
      }
    } catch (err) {
      this.opts.logger.warn({ err, schema: this.opts.schema }, "outbox not fully published at shutdown; it will be on next start");
    }
  }
}
