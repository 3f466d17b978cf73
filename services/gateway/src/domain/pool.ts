/** Thrown when every sequence is busy and the queue holds its most. */
export class QueueFullError extends Error {
  override readonly name = "QueueFullError";
  constructor(readonly queued: number) {
    super(`all sequences are busy and ${queued} requests are already waiting`);
  }
}

export interface ContextPoolOptions<C> {
  /** Contexts kept at once; an idle one (least recently used first) is disposed to make room. */
  maxContexts: number;
  /** Requests one context serves at once. */
  sequencesPerContext: number;
  /** Requests waiting for a sequence; one more fails with QueueFullError. */
  maxQueue: number;
  /** Makes the context of a key (an adapter, or the bare base). */
  create(key: string): Promise<C>;
  dispose(context: C): Promise<void>;
}

/** A sequence of a context, held until released. */
export interface Lease<C> {
  readonly context: C;
  release(): void;
}

interface Entry<C> {
  key: string;
  ready: Promise<C>;
  busy: number;
}

interface Waiter<C> {
  key: string;
  resolve(entry: Entry<C>): void;
  reject(err: unknown): void;
}

/**
 * Contexts keyed by what they were made with (node-llama-cpp fixes LoRA adapters per context),
 * each serving up to `sequencesPerContext` requests; at most `maxContexts` of them, the least
 * recently used idle one disposed when another key needs room; requests that find no sequence
 * wait in one FIFO queue of at most `maxQueue`.
 */
export class ContextPool<C> {
  /** In order of last use, least recent first. */
  private readonly entries = new Map<string, Entry<C>>();
  private readonly waiters: Waiter<C>[] = [];
  private readonly disposing = new Set<Promise<void>>();
  private closed = false;

  constructor(private readonly opts: ContextPoolOptions<C>) {}

  get stats(): { contexts: number; busy: number; queued: number } {
    let busy = 0;
    for (const e of this.entries.values()) busy += e.busy;
    return { contexts: this.entries.size, busy, queued: this.waiters.length };
  }

  /** A sequence of `key`'s context, now or once one is free. Aborting `signal` leaves the queue. */
  async acquire(key: string, signal?: AbortSignal): Promise<Lease<C>> {
    if (this.closed) throw new Error("the context pool is closed");
    signal?.throwIfAborted();
    let entry = this.take(key);
    if (entry === undefined) {
      if (this.waiters.length >= this.opts.maxQueue) throw new QueueFullError(this.waiters.length);
      entry = await new Promise<Entry<C>>((resolve, reject) => {
        const waiter: Waiter<C> = { key, resolve, reject };
        this.waiters.push(waiter);
        signal?.addEventListener(
          "abort",
          () => {
            const i = this.waiters.indexOf(waiter);
            if (i >= 0) {
              this.waiters.splice(i, 1);
              reject(signal.reason);
            }
          },
          { once: true },
        );
      });
    }
    const held = entry;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      held.busy--;
      this.pump();
    };
    try {
      return { context: await held.ready, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Disposes every context; waiting requests fail. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new Error("the context pool is closed"));
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.allSettled([...all.map((e) => this.disposeEntry(e)), ...this.disposing]);
  }

  /** A sequence of `key`'s context if one can be had now: a free one, a new context, or an idle context's room. */
  private take(key: string): Entry<C> | undefined {
    const existing = this.entries.get(key);
    if (existing !== undefined) {
      if (existing.busy >= this.opts.sequencesPerContext) return undefined;
      this.touch(existing);
      existing.busy++;
      return existing;
    }
    if (this.entries.size >= this.opts.maxContexts) {
      const idle = [...this.entries.values()].find((e) => e.busy === 0);
      if (idle === undefined) return undefined;
      this.entries.delete(idle.key);
      const d = this.disposeEntry(idle).finally(() => this.disposing.delete(d));
      this.disposing.add(d);
    }
    const entry: Entry<C> = { key, ready: this.opts.create(key), busy: 1 };
    // A context that could not be made is forgotten, so that the next request tries again.
    entry.ready.catch(() => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    });
    this.entries.set(key, entry);
    return entry;
  }

  private touch(entry: Entry<C>): void {
    this.entries.delete(entry.key);
    this.entries.set(entry.key, entry);
  }

  private async disposeEntry(entry: Entry<C>): Promise<void> {
    const context = await entry.ready.catch(() => undefined);
    if (context !== undefined) await this.opts.dispose(context);
  }

  /** Gives freed sequences to waiting requests, oldest first (a request whose key cannot be served yet lets later ones by). */
  private pump(): void {
    for (let i = 0; i < this.waiters.length; ) {
      const waiter = this.waiters[i]!;
      const entry = this.take(waiter.key);
      if (entry === undefined) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      waiter.resolve(entry);
    }
  }
}
