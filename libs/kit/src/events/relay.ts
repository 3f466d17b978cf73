import { sql, type Kysely } from "kysely";
import type { Logger } from "pino";
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
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private failures = 0;

  constructor(private readonly opts: RelayOptions) {}

  start(): void {
    this.stopped = false;
    this.notify();
  }

  /** Asks for a flush soon (after a commit that enqueued events). */
  notify(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      if (this.again) {
        this.again = false;
        this.notify();
        return;
      }
      const delay = this.failures > 0 ? Math.min(this.opts.pollMs * 2 ** this.failures, 5_000) : this.opts.pollMs;
      this.timer = setTimeout(() => this.notify(), delay);
    });
  }

  private async loop(): Promise<void> {
    try {
      while (!this.stopped && (await this.flushOnce()) > 0) {
        /* keep going while there is a backlog */
      }
      this.failures = 0;
    } catch (err) {
      this.failures++;
      this.opts.logger.warn({ err, schema: this.opts.schema, failures: this.failures }, "outbox relay could not publish; will retry");
    }
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
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
    try {
      while ((await this.flushOnce()) > 0) {
        /* drain */
      }
    } catch (err) {
      this.opts.logger.warn({ err, schema: this.opts.schema }, "outbox not fully published at shutdown; it will be on next start");
    }
    if (this.timer) clearTimeout(this.timer);
  }
}
