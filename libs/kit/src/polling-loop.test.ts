import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createLogger } from "./logger.js";
import { PollingLoop, type PollingLoopOptions } from "./polling-loop.js";

/** A promise and the functions that settle it. */
function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

const logger = createLogger({ service: "polling-loop-test", level: "silent" });

function loop(tick: PollingLoopOptions["tick"], over: Partial<PollingLoopOptions> = {}) {
  return new PollingLoop({ name: "test loop", intervalMs: 1000, tick, logger, ...over });
}

/** Lets pending promise callbacks run (fake timers do not advance them). */
const settle = () => vi.advanceTimersByTimeAsync(0);

describe("PollingLoop", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("ticks at start, then every intervalMs after the previous tick ended", async () => {
    const tick = vi.fn(async () => {});
    const l = loop(tick);
    l.start();
    await settle();
    expect(tick).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(tick).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(tick).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(3000);
    expect(tick).toHaveBeenCalledTimes(5);
    await l.stop();
  });

  it("counts the interval from the end of a slow tick", async () => {
    const tick = vi.fn(() => new Promise<void>((r) => setTimeout(r, 500)));
    const l = loop(tick);
    l.start();
    await vi.advanceTimersByTimeAsync(1499);
    expect(tick).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(tick).toHaveBeenCalledTimes(2);
    const stopping = l.stop();
    await vi.advanceTimersByTimeAsync(500);
    await stopping;
  });

  it("notify() ticks at once when idle, without waiting for the interval", async () => {
    const tick = vi.fn(async () => {});
    const l = loop(tick);
    l.start();
    await settle();
    l.notify();
    await settle();
    expect(tick).toHaveBeenCalledTimes(2);
    // The interval restarts from the notified tick.
    await vi.advanceTimersByTimeAsync(999);
    expect(tick).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(tick).toHaveBeenCalledTimes(3);
    await l.stop();
  });

  it("never runs two ticks at once: notify() during a tick runs one more right after it", async () => {
    let active = 0;
    let most = 0;
    const gates = [deferred(), deferred()];
    let n = 0;
    const tick = vi.fn(async () => {
      active++;
      most = Math.max(most, active);
      await gates[n++]?.promise;
      active--;
    });
    const l = loop(tick);
    l.start();
    await settle();
    l.notify();
    l.notify();
    l.notify();
    await settle();
    expect(tick).toHaveBeenCalledTimes(1);
    gates[0]!.resolve();
    await settle();
    expect(tick).toHaveBeenCalledTimes(2);
    gates[1]!.resolve();
    await settle();
    // The three notifications made one extra tick, not three.
    expect(tick).toHaveBeenCalledTimes(2);
    expect(most).toBe(1);
    await l.stop();
  });

  it("logs a tick's error and keeps going; retryMs sets the delay after failures", async () => {
    const warn = vi.fn();
    const failing = { ...logger, warn } as unknown as typeof logger;
    let calls = 0;
    const tick = vi.fn(async () => {
      calls++;
      if (calls <= 2) throw new Error(`boom ${calls}`);
    });
    const l = loop(tick, { logger: failing, retryMs: (failures) => 100 * failures });
    l.start();
    await settle();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatchObject({ failures: 1, err: expect.objectContaining({ message: "boom 1" }) });
    expect(warn.mock.calls[0]![1]).toBe("test loop failed; will retry");
    await vi.advanceTimersByTimeAsync(100);
    expect(tick).toHaveBeenCalledTimes(2);
    expect(warn.mock.calls[1]![0]).toMatchObject({ failures: 2 });
    await vi.advanceTimersByTimeAsync(199);
    expect(tick).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(tick).toHaveBeenCalledTimes(3);
    // It succeeded: back to intervalMs.
    await vi.advanceTimersByTimeAsync(1000);
    expect(tick).toHaveBeenCalledTimes(4);
    expect(warn).toHaveBeenCalledTimes(2);
    await l.stop();
  });

  it("stop() aborts the running tick's signal, waits for it, and no tick starts after", async () => {
    const gate = deferred();
    let seen: AbortSignal | undefined;
    const tick = vi.fn(async (signal: AbortSignal) => {
      seen = signal;
      await gate.promise;
    });
    const l = loop(tick);
    l.start();
    await settle();
    expect(l.running).toBe(true);
    let stopped = false;
    const stopping = l.stop().then(() => (stopped = true));
    await settle();
    expect(seen?.aborted).toBe(true);
    expect(l.running).toBe(false);
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    expect(stopped).toBe(true);
    l.notify();
    await vi.advanceTimersByTimeAsync(5000);
    expect(tick).toHaveBeenCalledTimes(1);
  });

  it("stop() before start, or twice, resolves; start() after stop() runs again", async () => {
    const tick = vi.fn(async () => {});
    const l = loop(tick);
    await l.stop();
    l.start();
    await settle();
    await l.stop();
    await l.stop();
    expect(tick).toHaveBeenCalledTimes(1);
    l.start();
    await settle();
    expect(tick).toHaveBeenCalledTimes(2);
    await l.stop();
  });

  it("a restart while the old tick still runs ticks again once it returned", async () => {
    const gate = deferred();
    const tick = vi.fn(async () => {
      if (tick.mock.calls.length === 1) await gate.promise;
    });
    const l = loop(tick);
    l.start();
    await settle();
    const stopping = l.stop();
    l.start();
    await settle();
    expect(tick).toHaveBeenCalledTimes(1);
    gate.resolve();
    await stopping;
    await settle();
    expect(tick).toHaveBeenCalledTimes(2);
    await l.stop();
  });
});
