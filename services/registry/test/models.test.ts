import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyModel } from "@lathe/models";
import { AppError, call, createClient, JetStreamBus, withMetadata, type Delivery } from "@lathe/kit";
import { ModelCreated } from "@lathe/proto/lathe/events/v1/registry_events";
import { Model, RegistryServiceClient, type CreateModelRequest } from "@lathe/proto/lathe/registry/v1/registry_service";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";

// Two tiny model folders, made once: registering a model imports its folder.
const tinyDir = join(mkdtempSync(join(tmpdir(), "lathe-models-")), "tiny");
const otherDir = join(mkdtempSync(join(tmpdir(), "lathe-models-")), "other");

function modelReq(id: string, extra: Partial<CreateModelRequest> = {}): CreateModelRequest {
  return { modelId: id, model: Model.fromPartial({ description: "a test model", sourceUri: tinyDir, labels: { team: "ml" } }), requestId: "", ...extra };
}

async function rejection(p: Promise<unknown>): Promise<AppError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("RegistryService models over gRPC, Postgres and NATS", () => {
  let t: TestPlatform;
  let acme: RegistryServiceClient;
  let globex: RegistryServiceClient;
  let observer: JetStreamBus;
  const seen: Delivery[] = [];

  beforeAll(async () => {
    await writeTinyModel(tinyDir, { seed: 1 });
    await writeTinyModel(otherDir, { seed: 2 });
    t = await startTestPlatform({ factories: [createRegistryService], env: { LATHE_IMPORT_ROOTS: `${dirname(tinyDir)}:${dirname(otherDir)}` } });
    acme = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.globex });
    observer = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
    await observer.subscribe({ durable: "observer", subjects: ["lathe.registry.v1.>"], handler: async (d) => void seen.push(d) });
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await observer?.close();
    await t?.stop();
  });

  it("creates, gets, lists and deletes a model", async () => {
    const { model } = await call(acme, "createModel", modelReq("llama-tiny"));
    expect(model).toMatchObject({ name: "models/llama-tiny", displayName: "llama-tiny", sourceUri: tinyDir, labels: { team: "ml" }, architecture: "LlamaForCausalLM" });
    expect(model!.createTime).toBeInstanceOf(Date);

    const got = await call(acme, "getModel", { name: "models/llama-tiny" });
    expect(got.model).toEqual(model);

    const list = await call(acme, "listModels", { pageSize: 0, pageToken: "" });
    expect(list.models.map((m) => m.name)).toContain("models/llama-tiny");

    await call(acme, "deleteModel", { name: "models/llama-tiny" });
    const err = await rejection(call(acme, "getModel", { name: "models/llama-tiny" }));
    expect(err.code).toBe("NOT_FOUND");
  });

  it("pages through a list with page tokens", async () => {
    for (const i of [1, 2, 3, 4, 5]) await call(acme, "createModel", modelReq(`paged-${i}`));
    const names: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await call(acme, "listModels", { pageSize: 2, pageToken: token });
      expect(page.models.length).toBeLessThanOrEqual(2);
      names.push(...page.models.map((m) => m.name));
      token = page.nextPageToken;
      pages++;
    } while (token !== "");
    expect(names.filter((n) => n.startsWith("models/paged-"))).toEqual([1, 2, 3, 4, 5].map((i) => `models/paged-${i}`));
    expect(pages).toBeGreaterThanOrEqual(3);
  });

  it("returns the same model for a repeated request_id and publishes one event", async () => {
    const req = modelReq("idem", { requestId: "4b1d6c1e-retry-me" });
    const first = await call(acme, "createModel", req);
    const second = await call(acme, "createModel", req);
    expect(second.model).toEqual(first.model);

    const dup = await rejection(call(acme, "createModel", modelReq("idem")));
    expect(dup.code).toBe("ALREADY_EXISTS");

    const reused = await rejection(call(acme, "createModel", modelReq("other", { requestId: "4b1d6c1e-retry-me" })));
    expect(reused.code).toBe("INVALID_ARGUMENT");
    expect(reused.field).toBe("request_id");

    await waitFor(() => seen.some((d) => ModelCreated.decode(d.data).model === "models/idem"), { what: "model_created of models/idem" });
    await new Promise((r) => setTimeout(r, 300));
    const events = seen.map((d) => ModelCreated.decode(d.data)).filter((e) => e.model === "models/idem" && seen.length > 0);
    expect(events).toHaveLength(1);
    expect(events[0]!.meta).toMatchObject({ tenant: "acme", subject: "models/idem", source: "registry" });
  });

  it("carries the caller's trace context from gRPC metadata into the event", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const md = withMetadata({ traceparent: `00-${traceId}-00f067aa0ba902b7-01` });
    await call(acme, "createModel", modelReq("traced"), md);
    const d = await waitFor(() => seen.find((x) => ModelCreated.decode(x.data).model === "models/traced"), { what: "model_created of models/traced" });
    expect(ModelCreated.decode(d.data).meta!.traceparent).toContain(traceId);
    expect(d.headers["traceparent"]).toContain(traceId);
  });

  it("keeps tenants apart", async () => {
    await call(acme, "createModel", modelReq("secret-model"));
    expect((await rejection(call(globex, "getModel", { name: "models/secret-model" }))).code).toBe("NOT_FOUND");
    expect((await rejection(call(globex, "deleteModel", { name: "models/secret-model" }))).code).toBe("NOT_FOUND");
    const theirs = await call(globex, "listModels", { pageSize: 1000, pageToken: "" });
    expect(theirs.models.map((m) => m.name)).not.toContain("models/secret-model");
    // The same id is free in another tenant.
    const own = await call(globex, "createModel", modelReq("secret-model", { model: { ...modelReq("x").model!, sourceUri: otherDir } }));
    expect(own.model!.sourceUri).toBe(otherDir);
    const still = await call(acme, "getModel", { name: "models/secret-model" });
    expect(still.model!.sourceUri).toBe(tinyDir);
  });

  it("rejects bad input with INVALID_ARGUMENT naming the field", async () => {
    const cases: [CreateModelRequest, string][] = [
      [modelReq("Bad ID!"), "model_id"],
      [modelReq(""), "model_id"],
      [{ ...modelReq("no-model"), model: undefined }, "model"],
      [modelReq("no-source", { model: { ...modelReq("x").model!, sourceUri: " " } }), "model.source_uri"],
      [modelReq("long-name", { model: { ...modelReq("x").model!, displayName: "x".repeat(201) } }), "model.display_name"],
      [modelReq("bad-label", { model: { ...modelReq("x").model!, labels: { "Bad Key": "v" } } }), "model.labels.Bad Key"],
      [modelReq("utf8-label", { model: { ...modelReq("x").model!, labels: { "ключ": "v" } } }), "model.labels.ключ"],
    ];
    for (const [req, field] of cases) {
      const err = await rejection(call(acme, "createModel", req));
      expect(err.code, field).toBe("INVALID_ARGUMENT");
      expect(err.field).toBe(field);
      expect(err.message).toContain(field);
    }
    expect((await rejection(call(acme, "getModel", { name: "llama" }))).field).toBe("name");
    expect((await rejection(call(acme, "listModels", { pageSize: 10, pageToken: "garbage!" }))).field).toBe("page_token");
    expect((await rejection(call(acme, "listModels", { pageSize: -1, pageToken: "" }))).field).toBe("page_size");
  });

  it("refuses calls without a valid API key", async () => {
    const anonymous = createClient(RegistryServiceClient, t.address, {});
    const wrong = createClient(RegistryServiceClient, t.address, { apiKey: "not-a-key" });
    try {
      const a = await rejection(call(anonymous, "listModels", { pageSize: 1, pageToken: "" }));
      expect(a.code).toBe("UNAUTHENTICATED");
      expect(a.reason).toBe("API_KEY_MISSING");
      const w = await rejection(call(wrong, "listModels", { pageSize: 1, pageToken: "" }));
      expect(w.code).toBe("UNAUTHENTICATED");
      expect(w.reason).toBe("API_KEY_INVALID");
    } finally {
      anonymous.close();
      wrong.close();
    }
  });
});
