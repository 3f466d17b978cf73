import { describe, expect, test } from "vitest";
import { ContextPool, QueueFullError } from "./pool.js";

function pool(maxContexts: number, sequencesPerContext: number, maxQueue: number) {
  const made: string[] = [];
  const disposed: string[] = [];
  const p = new ContextPool<string>({
    maxContexts,
    sequencesPerContext,
    maxQueue,
    create: async (key) => (made.push(key), key),
    dispose: async (c) => void disposed.push(c),
  });
  return { p, made, disposed };
}

describe("ContextPool", () => {
  test("one context per key, reused; the least recently used idle one makes room", async () => {
    const { p, made, disposed } = pool(2, 1, 0);
    (await p.acquire("a")).release();
    (await p.acquire("b")).release();
    (await p.acquire("a")).release(); // a is now the most recent
    (await p.acquire("c")).release();
    expect(made).toEqual(["a", "b", "c"]);
    await new Promise((r) => setImmediate(r));
    expect(disposed).toEqual(["b"]);
    expect(p.stats).toEqual({ contexts: 2, busy: 0, queued: 0 });
  });

  test("busy contexts are never evicted: requests wait, in order, and a full queue refuses", async () => {
    const { p } = pool(1, 1, 2);
    const a = await p.acquire("a");
    const order: string[] = [];
    const b = p.acquire("b").then((l) => (order.push("b"), l));
    const a2 = p.acquire("a").then((l) => (order.push("a2"), l));
    await expect(p.acquire("a")).rejects.toBeInstanceOf(QueueFullError);
    expect(p.stats).toEqual({ contexts: 1, busy: 1, queued: 2 });
    a.release();
    (await b).release();
    (await a2).release();
    expect(order).toEqual(["b", "a2"]);
  });

  test("several sequences per context; an aborted wait leaves the queue", async () => {
    const { p, made } = pool(1, 2, 1);
    const [x, y] = await Promise.all([p.acquire("a"), p.acquire("a")]);
    expect(made).toEqual(["a"]);
    const ac = new AbortController();
    const waiting = p.acquire("a", ac.signal);
    ac.abort(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
    expect(p.stats.queued).toBe(0);
    x.release();
    y.release();
    await p.close();
  });
});
