import { randomUUID } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { JetStreamBus, MemoryBus, type BusMessage, type Delivery, type EventBus } from "../src/index.js";
import { cleanupNatsPrefix, testNats, waitFor } from "../../testing/src/index.js";

// The contract of EventBus, run against both implementations: services must not be able to tell them apart.

const SUBJECT = "lathe.test.v1.thing_happened";
const OTHER = "lathe.test.v1.other_thing_happened";

const msg = (text: string, opts: { id?: string; subject?: string } = {}): BusMessage => ({
  id: opts.id ?? randomUUID(),
  subject: opts.subject ?? SUBJECT,
  data: Buffer.from(text),
  headers: { "lathe-event": opts.subject ?? SUBJECT },
});
const text = (d: Delivery) => Buffer.from(d.data).toString();

const kinds: [string, () => Promise<{ bus: EventBus; dispose(): Promise<void> }>][] = [
  ["MemoryBus", async () => {
    const bus = new MemoryBus();
    return { bus, dispose: () => bus.close() };
  }],
  ["JetStreamBus", async () => {
    const nats = await testNats();
    const bus = await JetStreamBus.connect({ url: nats.url, prefix: nats.prefix });
    return {
      bus,
      async dispose() {
        await bus.close();
        await cleanupNatsPrefix(nats.url, nats.prefix);
      },
    };
  }],
];

describe.each(kinds)("%s", (_name, open) => {
  let current: { bus: EventBus; dispose(): Promise<void> } | undefined;
  const fresh = async () => (current = await open());
  afterEach(async () => {
    await current?.dispose();
    current = undefined;
  });

  /** Subscribes and records every delivery (text, redelivered) in order. */
  async function record(bus: EventBus, durable: string, fail: (d: Delivery) => boolean = () => false, subjects = [SUBJECT]) {
    const seen: { text: string; redelivered: boolean; subject: string }[] = [];
    const sub = await bus.subscribe({
      durable,
      subjects,
      handler: async (d) => {
        seen.push({ text: text(d), redelivered: d.redelivered, subject: d.subject });
        if (fail(d)) throw new Error(`handler failed on ${text(d)}`);
      },
    });
    return { seen, sub, texts: () => seen.map((s) => s.text) };
  }

  it("delivers published messages in order, with subject and data intact", async () => {
    const { bus } = await fresh();
    for (const t of ["a", "b", "c", "d", "e"]) await bus.publish(msg(t));
    const r = await record(bus, "ordered");
    await waitFor(() => r.seen.length >= 5, { what: "five deliveries" });
    await r.sub.stop();
    expect(r.texts()).toEqual(["a", "b", "c", "d", "e"]);
    expect(r.seen.every((s) => s.subject === SUBJECT && !s.redelivered)).toBe(true);
  });

  it("delivers only the subjects subscribed to", async () => {
    const { bus } = await fresh();
    await bus.publish(msg("other-1", { subject: OTHER }));
    await bus.publish(msg("wanted-1"));
    await bus.publish(msg("other-2", { subject: OTHER }));
    await bus.publish(msg("wanted-2"));
    const r = await record(bus, "picky");
    const all = await record(bus, "everything", () => false, ["lathe.test.v1.*"]);
    await waitFor(() => r.seen.length >= 2 && all.seen.length >= 4, { what: "the deliveries" });
    await r.sub.stop();
    await all.sub.stop();
    expect(r.texts()).toEqual(["wanted-1", "wanted-2"]);
    expect(all.texts()).toEqual(["other-1", "wanted-1", "other-2", "wanted-2"]);
  });

  it("retries a failing delivery, marked redelivered, and later messages wait for it", async () => {
    const { bus } = await fresh();
    let failures = 0;
    const r = await record(bus, "retrying", (d) => text(d) === "first" && failures++ < 2);
    for (const t of ["first", "second", "third"]) await bus.publish(msg(t));
    await waitFor(() => r.texts().includes("third"), { what: "the third message" });
    await r.sub.stop();
    expect(r.seen).toEqual([
      { text: "first", redelivered: false, subject: SUBJECT },
      { text: "first", redelivered: true, subject: SUBJECT },
      { text: "first", redelivered: true, subject: SUBJECT },
      { text: "second", redelivered: false, subject: SUBJECT },
      { text: "third", redelivered: false, subject: SUBJECT },
    ]);
  });

  it("drops a second publish with the same id", async () => {
    const { bus } = await fresh();
    const id = randomUUID();
    await bus.publish(msg("original", { id }));
    await bus.publish(msg("repeat", { id }));
    await bus.publish(msg("after"));
    const r = await record(bus, "dedup");
    await waitFor(() => r.texts().includes("after"), { what: "the last message" });
    await r.sub.stop();
    expect(r.texts()).toEqual(["original", "after"]);
  });

  it("resumes a durable after stop where it stopped, and other durables get everything", async () => {
    const { bus } = await fresh();
    const first = await record(bus, "resumable");
    await bus.publish(msg("one"));
    await waitFor(() => first.seen.length >= 1, { what: "the first message" });
    await first.sub.stop();

    await bus.publish(msg("two"));
    await bus.publish(msg("three"));
    const second = await record(bus, "resumable");
    const other = await record(bus, "another");
    await waitFor(() => second.texts().includes("three") && other.texts().includes("three"), { what: "the later messages" });
    await second.sub.stop();
    await other.sub.stop();
    expect(first.texts()).toEqual(["one"]);
    expect(second.texts()).toEqual(["two", "three"]);
    expect(other.texts()).toEqual(["one", "two", "three"]);
  });

  it("hands the messages not yet handled at stop to the next subscriber of the durable, in order", async () => {
    const { bus } = await fresh();
    for (const t of ["one", "two", "three"]) await bus.publish(msg(t));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const seen: string[] = [];
    const sub = await bus.subscribe({
      durable: "restarted",
      subjects: [SUBJECT],
      handler: async (d) => {
        seen.push(text(d));
        if (text(d) === "one") await gate;
      },
    });
    await waitFor(() => seen.length >= 1, { what: "the first delivery" });
    const stopped = sub.stop();
    release();
    await stopped;
    expect(seen).toEqual(["one"]);

    const next = await record(bus, "restarted");
    await waitFor(() => next.texts().includes("three"), { timeoutMs: 5_000, what: "the messages left at stop" });
    await next.sub.stop();
    expect(next.texts()).toEqual(["two", "three"]);
  });
});
