import { sql, type Kysely } from "kysely";
import { isRetryable } from "../errors.js";

/** Thrown by a worker's run when the row is no longer its own (cancelled, taken over) or it is stopping. */
export class LeaseLost extends Error {
  override readonly name = "LeaseLost";
}

/* eslint-disable @typescript-eslint/no-explicit-any */

/**
 * Claims on the rows of a table of long work (evaluation runs, generation jobs) that workers of
 * several processes share: a worker claims the oldest row that is QUEUED, or RUNNING with a lease
 * that ran out (its worker was lost), with `FOR UPDATE SKIP LOCKED` so two never claim one; keeps
 * it with heartbeats; and gives it back when it stops. The table has `tenant`, its id column,
 * `seq`, `state`, `lease_owner`, `lease_until`, `start_time` and `update_time`.
 */
export class TableLease<Row extends { tenant: string }> {
  constructor(
    private readonly o: {
      db: Kysely<any>;
      schema: string;
      table: string;
      /** The id column beside `tenant`: `run_id`, `job_id`. */
      id: string;
      owner: string;
      leaseMs: number;
    },
  ) {}

  private get t() {
    return this.o.db.withSchema(this.o.schema);
  }

  private readonly until = () => sql`now() + ${`${this.o.leaseMs} milliseconds`}::interval`;

  private ofRow(r: Row) {
    return { tenant: r.tenant, id: (r as Record<string, unknown>)[this.o.id] as string };
  }

  /** The oldest row that needs a worker, now RUNNING under this owner (start_time set the first time), or none. */
  async claim(): Promise<Row | undefined> {
    return this.o.db.transaction().execute(async (trx) => {
      const r = await trx
        .withSchema(this.o.schema)
        .selectFrom(this.o.table)
        .selectAll()
        .where((eb: any) => eb.or([eb("state", "=", "QUEUED"), eb.and([eb("state", "=", "RUNNING"), eb("lease_until", "<", sql<Date>`now()`)])]))
        .orderBy("seq")
        .limit(1)
        .forUpdate()
        .skipLocked()
        .executeTakeFirst();
      if (!r) return undefined;
      return (await trx
        .withSchema(this.o.schema)
        .updateTable(this.o.table)
        .set({ state: "RUNNING", lease_owner: this.o.owner, lease_until: this.until(), start_time: sql`coalesce(start_time, now())`, update_time: sql`now()` })
        .where("tenant", "=", r.tenant)
        .where(this.o.id, "=", r[this.o.id])
        .returningAll()
        .executeTakeFirstOrThrow()) as Row;
    });
  }

  /** Renews the lease; false when the row is no longer this owner's (cancelled, finished, or taken over). */
  async heartbeat(r: Row): Promise<boolean> {
    const { tenant, id } = this.ofRow(r);
    const res = await this.t.updateTable(this.o.table).set({ lease_until: this.until() }).where("tenant", "=", tenant).where(this.o.id, "=", id).where("lease_owner", "=", this.o.owner).where("state", "=", "RUNNING").executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  /** Gives a running row back at once (its lease ends now), for another worker to take up. */
  async release(r: Row): Promise<void> {
    const { tenant, id } = this.ofRow(r);
    await this.t.updateTable(this.o.table).set({ lease_until: sql`now()` }).where("tenant", "=", tenant).where(this.o.id, "=", id).where("lease_owner", "=", this.o.owner).where("state", "=", "RUNNING").execute();
  }

  /**
   * One round of a worker: claims rows one after another until none waits or `signal` aborts, and
   * runs each. A run that ends in LeaseLost is left (given back at once when stopping); one that
   * throws a retryable error (unless `retry` says otherwise) is given back and the error rethrown,
   * so the worker's loop backs off; any other error is the row's end, recorded by `fail`.
   */
  async work(
    signal: AbortSignal,
    o: { run(r: Row): Promise<void>; fail(r: Row, err: unknown): Promise<void>; claimed?(r: Row): void; retry?(err: unknown): boolean },
  ): Promise<void> {
    while (!signal.aborted) {
      const r = await this.claim();
      if (!r) return;
      o.claimed?.(r);
      try {
        await o.run(r);
      } catch (err) {
        if (err instanceof LeaseLost) {
          if (signal.aborted) await this.release(r);
          continue;
        }
        if (o.retry ? o.retry(err) : isRetryable(err)) {
          await this.release(r);
          throw err;
        }
        await o.fail(r, err);
      }
    }
  }
}
