import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";
import { writeTinyModel } from "@lathe/models";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, JetStreamBus, type Delivery } from "@lathe/kit";
import { ModelCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import { Model, RegistryServiceClient, type CreateModelRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import { startNatsServer, startTestPlatform, testKeys, waitFor, type NatsServerProcess, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";

const tinyDir = join(mkdtempSync(join(tmpdir(), "lathe-models-")), "tiny");
const req = (id: string): CreateModelRequest => ({
  modelId: id,
  model: Model.fromPartial({ sourceUri: tinyDir }),
  requestId: "",
});

describe("model_created through a NATS restart", () => {
  let nats: NatsServerProcess;
  let t: TestPlatform;
  let client: RegistryServiceClient;
  let observer: JetStreamBus;
  let db: pg.Client;
  const seen: Delivery[] = [];
  const countFor = (model: string) => seen.filter((d) => ModelCreated.decode(d.data).model === model).length;
  const unpublished = async () => Number((await db.query("select count(*) as n from registry.outbox where published_at is null")).rows[0].n);
  const streamMessages = async () => {
    const nc = await connect({ servers: nats.url });
    try {
      return (await (await jetstreamManager(nc)).streams.info("LATHE")).state.messages;
    } finally {
      await nc.close();
    }
  };

  beforeAll(async () => {
    await writeTinyModel(tinyDir);
    nats = await startNatsServer();
    t = await startTestPlatform({ factories: [createRegistryService], natsUrl: nats.url, env: { LATHE_IMPORT_ROOTS: dirname(tinyDir) } });
    client = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    observer = await JetStreamBus.connect({ url: nats.url });
    await observer.subscribe({ durable: "observer", subjects: ["lathe.registry.v1.model_created"], handler: async (d) => void seen.push(d) });
    db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
  });
  afterAll(async () => {
    client?.close();
    await db?.end();
    await observer?.close().catch(() => undefined);
    await t?.stop();
    await nats?.dispose();
  });

  it("publishes an event committed while NATS was down exactly once when it is back", async () => {
    await call(client, "createModel", req("before"));
    await waitFor(() => countFor("models/before") === 1, { what: "the first event" });

    await nats.stop();
    // The state change commits with NATS down; its event waits in the outbox.
    const { model } = await call(client, "createModel", req("during-outage"));
    expect(model!.name).toBe("models/during-outage");
    await new Promise((r) => setTimeout(r, 500));
    expect(await unpublished()).toBe(1);
    expect(countFor("models/during-outage")).toBe(0);

    await nats.start();
    await waitFor(async () => (await unpublished()) === 0, { timeoutMs: 30_000, what: "the relay to publish after the restart" });
    await waitFor(() => countFor("models/during-outage") === 1, { timeoutMs: 30_000, what: "the event to arrive" });
    await new Promise((r) => setTimeout(r, 1000));
    expect(countFor("models/during-outage")).toBe(1);
    expect(countFor("models/before")).toBe(1);
    expect(await streamMessages()).toBe(2);
  });

  it("does not publish twice when the relay dies after publishing and before marking it sent", async () => {
    await call(client, "createModel", req("crashy"));
    await waitFor(async () => countFor("models/crashy") === 1 && (await unpublished()) === 0, { what: "the event" });
    const before = await streamMessages();
    // What a crash between publish and the commit of published_at leaves behind.
    await db.query("update registry.outbox set published_at = null where seq = (select max(seq) from registry.outbox)");
    await waitFor(async () => (await unpublished()) === 0, { what: "the relay to publish again" });
    await new Promise((r) => setTimeout(r, 500));
    expect(await streamMessages()).toBe(before);
    expect(countFor("models/crashy")).toBe(1);
  });
});
