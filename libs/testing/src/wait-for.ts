/** Options of {@link waitFor}. */
export interface WaitForOptions {
  /** Give up after this many milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Pause between two tries (default 50 ms). */
  intervalMs?: number;
  /** Words for the timeout message: `timed out after Nms waiting for <what>`. */
  what?: string;
}

/**
 * Polls `fn` until it yields a value, then resolves with that value.
 *
 * `undefined`, `null` and `false` mean "not yet" (so `waitFor(() => rows.length > 0)` waits
 * instead of resolving with `false`). An exception thrown by `fn` also means "not yet": the
 * thing polled is often not up yet (a refused connection). When time runs out it throws
 * `timed out after Nms waiting for <what>`, with the last exception appended and set as `cause`.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  opts: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const what = opts.what ?? "condition";
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== null && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const detail = lastError === undefined ? "" : `; last error: ${errorText(lastError)}`;
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${detail}`, { cause: lastError });
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The message of an error-like value, for inclusion in another message. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
