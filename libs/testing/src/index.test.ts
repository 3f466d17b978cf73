import { afterAll, describe, expect, it } from "vitest";
import { access, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Client } from "pg";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { cleanupNatsPrefix, freePort, startNatsServer, tempDir, testNats, testPostgres, waitFor } from "./index.js";
// Internal: the env/Docker resolution, tested with a fake "no Docker engine" probe.
import { resolvePgAdminUrl } from "./pg-admin-url.js";
import { resolveNatsUrl } from "./nats-url.js";
import type { DockerProbe } from "./testcontainers-runtime.js";

const noDocker: DockerProbe = () => Promise.resolve({ available: false, reason: "fake: no engine" });

async function query<T extends Record<string, unknown>>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new Client({ connectionString: url });
  c.on("error", () => {});
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

describe("resolvePgAdminUrl / resolveNatsUrl", () => {
  it("uses the env var when set, without asking for Docker", async () => {
    const never: DockerProbe = () => Promise.reject(new Error("must not probe"));
    await expect(resolvePgAdminUrl({ LATHE_TEST_PG_URL: "postgres://x@h:1/postgres" }, never)).resolves.toBe(
      "postgres://x@h:1/postgres",
    );
    await expect(resolveNatsUrl({ LATHE_TEST_NATS_URL: "nats://h:1" }, never)).resolves.toBe("nats://h:1");
  });

  it("without env and Docker, says which env var to set, with an example", async () => {
    const pg = resolvePgAdminUrl({}, noDocker);
    await expect(pg).rejects.toThrow(/LATHE_TEST_PG_URL/);
    await expect(pg).rejects.toThrow(/no Docker engine was found for testcontainers/);
    await expect(pg).rejects.toThrow("LATHE_TEST_PG_URL=postgres://postgres@127.0.0.1:5432/postgres");
    const nats = resolveNatsUrl({ LATHE_TEST_NATS_URL: "  " }, noDocker);
    await expect(nats).rejects.toThrow(/LATHE_TEST_NATS_URL=nats:\/\/127\.0\.0\.1:4222/);
    await expect(nats).rejects.toThrow(/no Docker engine was found for testcontainers/);
  });
});

describe("testPostgres", () => {
  it("gives isolated databases, and drop() removes one even with a connection open", async () => {
    const [a, b] = await Promise.all([testPostgres(), testPostgres()]);
    try {
      expect(a.database).toMatch(/^lathe_t_[0-9a-f]+$/);
      expect(a.database).not.toBe(b.database);
      expect(new URL(a.url).pathname).toBe(`/${a.database}`);

      await query(a.url, "CREATE TABLE only_in_a (id int)");
      const inA = await query(a.url, "SELECT to_regclass('only_in_a')::text AS t");
      const inB = await query(b.url, "SELECT to_regclass('only_in_a')::text AS t");
      expect(inA[0]?.t).toBe("only_in_a");
      expect(inB[0]?.t).toBeNull();

      const held = new Client({ connectionString: a.url });
      held.on("error", () => {}); // drop() terminates it
      await held.connect();
      await a.drop();
      await held.end().catch(() => {});
      const admin = process.env.LATHE_TEST_PG_URL ?? "";
      const left = await query(admin, "SELECT 1 FROM pg_database WHERE datname = $1", [a.database]);
      expect(left).toHaveLength(0);
      await a.drop(); // already gone: no error
    } finally {
      await Promise.all([a.drop(), b.drop()]);
    }
  });
});

describe("testNats", () => {
  it("gives distinct prefixes and a usable JetStream connection; cleanupNatsPrefix deletes its streams", async () => {
    const [a, b] = await Promise.all([testNats(), testNats()]);
    expect(a.prefix).toMatch(/^t[0-9a-f]{10}$/);
    expect(a.prefix).not.toBe(b.prefix);

    const nc = await connect({ servers: a.url });
    try {
      const jsm = await jetstreamManager(nc);
      const mine = `EVENTS_${a.prefix.toUpperCase()}`;
      const theirs = `EVENTS_${b.prefix}`;
      await jsm.streams.add({ name: mine, subjects: [`${a.prefix}.>`] });
      await jsm.streams.add({ name: theirs, subjects: [`${b.prefix}.>`] });
      await jetstream(nc).publish(`${a.prefix}.hello`, "hi");
      expect((await jsm.streams.info(mine)).state.messages).toBe(1);

      await cleanupNatsPrefix(a.url, a.prefix);
      await expect(jsm.streams.info(mine)).rejects.toThrow();
      expect((await jsm.streams.info(theirs)).config.name).toBe(theirs); // another test's stream stays
      await cleanupNatsPrefix(b.url, b.prefix);
      await expect(jsm.streams.info(theirs)).rejects.toThrow();
    } finally {
      await nc.close();
    }
  });
});

describe("startNatsServer", () => {
  it("keeps JetStream streams and messages across stop() and start() on the same port", async () => {
    const server = await startNatsServer();
    try {
      const name = "ORDERS";
      let nc = await connect({ servers: server.url });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name, subjects: ["orders.>"] });
      await jetstream(nc).publish("orders.created", "order-1");
      await nc.close();

      await server.stop();
      await expect(connect({ servers: server.url, timeout: 1_000, reconnect: false })).rejects.toThrow();

      await server.start();
      expect(new URL(server.url).port).toBe(String(server.port));
      nc = await connect({ servers: server.url });
      try {
        const after = await jetstreamManager(nc);
        expect((await after.streams.info(name)).state.messages).toBe(1);
        const msg = await after.streams.getMessage(name, { seq: 1 });
        expect(msg?.string()).toBe("order-1");
      } finally {
        await nc.close();
      }

      await server.restart();
      nc = await connect({ servers: server.url });
      await nc.close();
    } finally {
      await server.dispose();
    }
    await expect(connect({ servers: server.url, timeout: 1_000, reconnect: false })).rejects.toThrow();
  });
});

describe("helpers", () => {
  const dirs: { dispose(): Promise<void> }[] = [];
  afterAll(async () => {
    await Promise.all(dirs.map((d) => d.dispose()));
  });

  it("freePort gives a bindable port", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    expect(port).toBeLessThan(65536);
  });

  it("tempDir creates a directory and dispose() removes it", async () => {
    const dir = await tempDir("lathe-test-");
    dirs.push(dir);
    await writeFile(join(dir.path, "f"), "x");
    await dir.dispose();
    await expect(access(dir.path)).rejects.toThrow();
  });

  it("waitFor returns the first ready value and times out with a clear message", async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : undefined), { intervalMs: 5 })).resolves.toBe(3);
    await expect(waitFor(() => false, { timeoutMs: 50, intervalMs: 10, what: "the moon" })).rejects.toThrow(
      /^timed out after 50ms waiting for the moon$/,
    );
    await expect(
      waitFor(
        () => {
          throw new Error("not yet");
        },
        { timeoutMs: 30, intervalMs: 10, what: "x" },
      ),
    ).rejects.toThrow("timed out after 30ms waiting for x; last error: not yet");
  });
});
