import type { EventEmitter } from "node:events";

/**
 * A resource now, then each time it changes, until `done` says it ended or `signal` aborts: the
 * server side of a `Watch…` RPC. Changes made in this process wake it at once (`changes` emits
 * `"changed"` with the resource's key); those of other processes are seen by reading it again
 * every `pollMs`. A read that shows the same `stamp` as the last one sent is not sent again.
 */
export async function* watchResource<T>(o: {
  get: () => Promise<T>;
  key: string;
  changes: EventEmitter;
  stamp: (value: T) => string;
  done: (value: T) => boolean;
  signal: AbortSignal;
  pollMs: number;
}): AsyncGenerator<T> {
  let value = await o.get();
  yield value;
  const aborted = new Promise<void>((r) => o.signal.addEventListener("abort", () => r(), { once: true }));
  const nextChange = async () => {
    let onChange: ((k: string) => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        new Promise<void>((r) => {
          onChange = (k: string) => k === o.key && r();
          o.changes.on("changed", onChange);
        }),
        new Promise<void>((r) => (timer = setTimeout(r, o.pollMs))),
        aborted,
      ]);
    } finally {
      if (onChange) o.changes.off("changed", onChange);
      clearTimeout(timer);
    }
  };
  while (!o.signal.aborted && !o.done(value)) {
    await nextChange();
    if (o.signal.aborted) return;
    const next = await o.get();
    if (o.stamp(next) !== o.stamp(value)) yield next;
    value = next;
  }
}
