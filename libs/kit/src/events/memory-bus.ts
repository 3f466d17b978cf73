import type { Logger } from "pino";
import { subjectMatches, type BusMessage, type EventBus, type SubscribeOptions, type Subscription } from "./bus.js";

interface Durable {
  cursor: number;
  active: boolean;
}

/**
 * The in-process bus of the embedded default (`lathe up` without NATS): an append-only log in
 * memory with durable cursors, so it behaves like the JetStream bus — at-least-once, in order,
 * retried with backoff on failure, duplicates by id dropped. It lives as long as the process;
 * events still in the outbox survive a restart, delivered ones are already applied.
 */
export class MemoryBus implements EventBus {
  readonly kind = "memory" as const;
  private readonly log: BusMessage[] = [];
  private readonly seen = new Set<string>();
  private readonly durables = new Map<string, Durable>();
  private readonly wakers = new Set<() => void>();
  private closed = false;

  constructor(private readonly logger?: Logger) {}

  async publish(message: BusMessage): Promise<void> {
    if (this.closed) throw new Error("event bus is closed");
    if (this.seen.has(message.id)) return;
    this.seen.add(message.id);
    this.log.push(message);
    for (const wake of this.wakers) wake();
  }

  async subscribe(opts: SubscribeOptions): Promise<Subscription> {
    let durable = this.durables.get(opts.durable);
    if (!durable) {
      durable = { cursor: 0, active: false };
      this.durables.set(opts.durable, durable);
    }
    if (durable.active) throw new Error(`durable ${opts.durable} already has a subscriber`);
    durable.active = true;
    const d = durable;
    let stopped = false;
    let wake: (() => void) | undefined;
    const waker = () => wake?.();
    this.wakers.add(waker);

    const loop = (async () => {
      let attempt = 0;
      while (!stopped && !this.closed) {
        const message = this.log[d.cursor];
        if (!message) {
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        if (!opts.subjects.some((p) => subjectMatches(p, message.subject))) {
          d.cursor++;
          continue;
        }
        try {
          await opts.handler({ ...message, redelivered: attempt > 0 });
          d.cursor++;
          attempt = 0;
        } catch (err) {
          attempt++;
          this.logger?.warn({ err, subject: message.subject, event_id: message.id, attempt }, "event handler failed; will retry");
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, Math.min(100 * 2 ** attempt, 5000));
            wake = () => {
              if (stopped || this.closed) {
                clearTimeout(t);
                resolve();
              }
            };
          });
          wake = undefined;
        }
      }
    })();

    return {
      stop: async () => {
        stopped = true;
        wake?.();
        await loop;
        this.wakers.delete(waker);
        d.active = false;
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const wake of this.wakers) wake();
  }
}
