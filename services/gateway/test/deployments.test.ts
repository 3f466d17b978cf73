import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient, JetStreamBus, uploadFolder, type AppError, type Delivery } from "@lathe/kit";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { DeploymentDeleted, DeploymentUpdated } from "@lathe/proto/lathe/events/v1/gateway_events";
import { Deployment, Deployment_State, DeploymentBackend, GatewayServiceClient } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { AdapterVersion, Model, RegistryServiceClient, type CreateAdapterVersionRequest, type UploadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { startOpenAiUpstream, testKeys, waitFor, type OpenAiUpstream, type TestPlatform } from "@lathe/testing";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startGatewayPlatform } from "./gateway-platform.js";

/* Deployments through GatewayService: checked, rolled out, following aliases, on embedded llama.cpp and on a vLLM-like upstream. */

let t: TestPlatform;
let url: string;
let dir: string;
let acme: OpenAI;
let gateway: GatewayServiceClient;
let globexGateway: GatewayServiceClient;
let registry: RegistryServiceClient;
let bus: JetStreamBus;
const seen: Delivery[] = [];

const QUESTION = "My router keeps restarting. What should I do?";
const greedy = { temperature: 0, seed: 7, max_tokens: 10 } as const;
const OTHER_TEMPLATE = `sha256:${"0".repeat(64)}`;

const fails = (p: Promise<unknown>) => p.then(() => expect.unreachable("the call succeeded"), (e: unknown) => e as AppError);
const spec = (d: Partial<Deployment>) => Deployment.fromPartial({ baseModel: "models/tiny", ...d });
const answer = async (model: string, client = acme) => (await client.chat.completions.create({ model, messages: [{ role: "user", content: QUESTION }], ...greedy })).choices[0]!.message.content;

async function settled(name: string): Promise<Deployment> {
  let d: Deployment | undefined;
  await waitFor(async () => {
    d = (await call(gateway, "getDeployment", { name })).deployment!;
    return d.state === Deployment_State.STATE_READY || d.state === Deployment_State.STATE_FAILED;
  }, { timeoutMs: 60_000, intervalMs: 100 });
  return d!;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-gateway-deployments-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  await writeTinyAdapter(join(dir, "v1"), join(dir, "tiny"), { r: 8, alpha: 64, seed: 3, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
  await writeTinyAdapter(join(dir, "v2"), join(dir, "tiny"), { r: 8, alpha: 64, seed: 17, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
  ({ t, url } = await startGatewayPlatform(dir, { LATHE_GATEWAY_CONTEXT_SIZE: 256, LATHE_GATEWAY_ROLLOUT_POLL_MS: 100 }));
  registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  gateway = createClient(GatewayServiceClient, t.address, { apiKey: testKeys.acme });
  globexGateway = createClient(GatewayServiceClient, t.address, { apiKey: testKeys.globex });
  bus = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
  await bus.subscribe({ durable: "observer", subjects: ["lathe.gateway.v1.>"], handler: async (d) => void seen.push(d) });
  await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
  const upload = (adapter: string, folder: string, v: Partial<AdapterVersion> = {}) =>
    uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>(
      (cb) => registry.uploadAdapterVersion(cb),
      { parent: `models/tiny/adapters/${adapter}`, adapterVersion: AdapterVersion.fromPartial({ description: "test", ...v }), allowMissing: true, requestId: "" },
      folder,
    );
  await upload("support", join(dir, "v1"));
  await upload("support", join(dir, "v2"));
  await upload("foreign", join(dir, "v1"), { chatTemplateFingerprint: OTHER_TEMPLATE });
  await call(registry, "setAlias", { name: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/1", reason: "", expectedAdapterVersion: "" });
  acme = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.acme, maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  registry?.close();
  gateway?.close();
  globexGateway?.close();
  await bus?.close();
  await t?.stop();
});

describe("deployments on the embedded backend", () => {
  test("a deployment serves its base and its adapters under its served names, and follows its alias when it moves", async () => {
    const { deployment: created } = await call(gateway, "createDeployment", {
      deploymentId: "assistant",
      deployment: spec({ servedModelName: "assistant", adapters: [{ source: "models/tiny/adapters/support/aliases/prod", servedName: "support", adapterVersion: "" }], labels: { team: "help" } }),
      requestId: "create-assistant",
    });
    expect(created).toMatchObject({ name: "deployments/assistant", state: Deployment_State.STATE_CREATING, backend: DeploymentBackend.DEPLOYMENT_BACKEND_EMBEDDED_LLAMA_CPP, replicas: 1 });
    // The default context: 4096 tokens, or the model's own when shorter.
    const { model } = await call(registry, "getModel", { name: "models/tiny" });
    expect(created!.contextLength).toBe(Math.min(4096, model!.contextLength));
    const ready = await settled("deployments/assistant");
    expect(ready.state).toBe(Deployment_State.STATE_READY);
    expect(ready.adapters[0]!.adapterVersion).toBe("models/tiny/adapters/support/versions/1");

    // The same request_id returns the same deployment; with another request it is refused.
    const again = await call(gateway, "createDeployment", { deploymentId: "assistant", deployment: spec({ servedModelName: "assistant", adapters: created!.adapters, labels: { team: "help" } }), requestId: "create-assistant" });
    expect(again.deployment!.name).toBe("deployments/assistant");
    expect((await fails(call(gateway, "createDeployment", { deploymentId: "assistant2", deployment: spec({ servedModelName: "other" }), requestId: "create-assistant" }))).reason).toBe("REQUEST_ID_REUSED");

    // Served names answer as the registry's names do: the adapter as v1, the base as the base.
    const [v1, v2, base] = await Promise.all([answer("tiny:support@1"), answer("tiny:support@2"), answer("tiny")]);
    expect(v1).not.toBe(v2);
    expect(await answer("assistant:support")).toBe(v1);
    expect(await answer("assistant")).toBe(base);
    // Any other version of the base's adapters is still served through the deployment's name.
    expect(await answer("assistant:support@2")).toBe(v2);
    const listed = [];
    for await (const m of acme.models.list()) listed.push({ id: m.id, parent: (m as { parent?: string }).parent });
    expect(listed.slice(0, 2)).toEqual([{ id: "assistant", parent: undefined }, { id: "assistant:support", parent: "assistant" }]);

    // The alias moves: the deployment rolls out v2 and answers with it.
    await call(registry, "setAlias", { name: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/2", reason: "better", expectedAdapterVersion: "" });
    await waitFor(async () => (await call(gateway, "getDeployment", { name: "deployments/assistant" })).deployment!.adapters[0]!.adapterVersion.endsWith("/versions/2"), { timeoutMs: 30_000, intervalMs: 100 });
    expect((await settled("deployments/assistant")).state).toBe(Deployment_State.STATE_READY);
    expect(await answer("assistant:support")).toBe(v2);

    // Each change was announced: created (not ready), ready with v1, updating, ready with v2.
    await waitFor(() => seen.filter((d) => d.subject.endsWith("deployment_updated")).length >= 4, { timeoutMs: 10_000 });
    const events = seen.filter((d) => d.subject.endsWith("deployment_updated")).map((d) => DeploymentUpdated.decode(d.data));
    expect(events.map((e) => [e.ready, e.adapters[0]?.adapterVersion.split("/").at(-1)])).toEqual([
      [false, "1"],
      [true, "1"],
      [false, "1"],
      [true, "2"],
    ]);
    expect(events[0]).toMatchObject({ deployment: "deployments/assistant", baseModel: "models/tiny", servedModelName: "assistant" });
    expect(events[0]!.adapters[0]!.modelId).toBe("assistant:support");
  }, 120_000);

  test("what cannot be served is refused when it is asked for, naming the field", async () => {
    const create = (id: string, d: Partial<Deployment>) => fails(call(gateway, "createDeployment", { deploymentId: id, deployment: spec(d), requestId: "" }));
    expect(await create("Bad_Id", {})).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment_id" });
    const taken = await create("again", { servedModelName: "assistant" });
    expect(taken).toMatchObject({ code: "ALREADY_EXISTS", reason: "SERVED_MODEL_NAME_TAKEN" });
    const foreign = await create("foreign", { servedModelName: "foreign", adapters: [{ source: "models/tiny/adapters/foreign/versions/1", servedName: "", adapterVersion: "" }] });
    expect(foreign).toMatchObject({ code: "FAILED_PRECONDITION", reason: "CHAT_TEMPLATE_MISMATCH", field: "deployment.adapters[0].source" });
    expect(foreign.message).toMatch(/another chat template/);
    expect(await create("x1", { servedModelName: "x1", adapters: [{ source: "models/tiny/adapters/support/aliases/nope", servedName: "", adapterVersion: "" }] })).toMatchObject({ code: "NOT_FOUND", field: "deployment.adapters[0].source" });
    expect(await create("x2", { servedModelName: "x2", adapters: [{ source: "models/other/adapters/support/versions/1", servedName: "", adapterVersion: "" }] })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.adapters[0].source" });
    const twice = { source: "models/tiny/adapters/support/versions/1", servedName: "", adapterVersion: "" };
    expect(await create("x3", { servedModelName: "x3", adapters: [twice, twice] })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.adapters[1].served_name" });
    expect(await create("x4", { servedModelName: "x4", backend: DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.upstream_base_url" });
    expect(await create("x5", { servedModelName: "x5", replicas: 2 })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.replicas" });
    expect(await create("x6", { servedModelName: "x6", contextLength: 1 << 20 })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.context_length" });
    expect(await create("x7", { servedModelName: "x7", upstreamApiKeySecret: "sk-the-key-itself" })).toMatchObject({ code: "INVALID_ARGUMENT", field: "deployment.upstream_api_key_secret" });
    expect(await create("x8", { baseModel: "models/nope", servedModelName: "x8" })).toMatchObject({ code: "NOT_FOUND", field: "deployment.base_model" });
    // Nothing was stored by any of them.
    const { deployments } = await call(gateway, "listDeployments", { pageSize: 0, pageToken: "", filter: "" });
    expect(deployments.map((d) => d.name)).toEqual(["deployments/assistant"]);
  });

  test("list filters and pages; update needs the current etag; another tenant sees none of it; delete stops serving", async () => {
    await call(gateway, "createDeployment", { deploymentId: "plain", deployment: spec({ servedModelName: "plain", contextLength: 128 }), requestId: "" });
    const page1 = await call(gateway, "listDeployments", { pageSize: 1, pageToken: "", filter: "" });
    const page2 = await call(gateway, "listDeployments", { pageSize: 1, pageToken: page1.nextPageToken, filter: "" });
    expect([...page1.deployments, ...page2.deployments].map((d) => d.name)).toEqual(["deployments/assistant", "deployments/plain"]);
    expect(page2.nextPageToken).toBe("");
    expect((await call(gateway, "listDeployments", { pageSize: 0, pageToken: "", filter: 'labels.team = "help"' })).deployments.map((d) => d.name)).toEqual(["deployments/assistant"]);
    expect((await call(gateway, "listDeployments", { pageSize: 0, pageToken: "", filter: "backend = DEPLOYMENT_BACKEND_UPSTREAM_OPENAI" })).deployments).toEqual([]);
    expect(await fails(call(gateway, "listDeployments", { pageSize: 0, pageToken: "", filter: "colour = red" }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "filter" });

    const plain = await settled("deployments/plain");
    expect(await fails(call(gateway, "updateDeployment", { deployment: { ...plain, displayName: "x", etag: "stale" }, updateMask: ["display_name"] }))).toMatchObject({ code: "ABORTED" });
    expect(await fails(call(gateway, "updateDeployment", { deployment: { ...plain, baseModel: "models/other" }, updateMask: ["base_model"] }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "update_mask" });
    const { deployment: updated } = await call(gateway, "updateDeployment", {
      deployment: { ...plain, adapters: [{ source: "models/tiny/adapters/support/versions/2", servedName: "v2", adapterVersion: "" }] },
      updateMask: ["adapters"],
    });
    expect(updated).toMatchObject({ state: Deployment_State.STATE_UPDATING, contextLength: 128 });
    expect(updated!.etag).not.toBe(plain.etag);
    expect((await settled("deployments/plain")).adapters[0]!.adapterVersion).toBe("models/tiny/adapters/support/versions/2");
    expect(await answer("plain:v2")).toBe(await answer("tiny:support@2"));

    expect(await fails(call(globexGateway, "getDeployment", { name: "deployments/plain" }))).toMatchObject({ code: "NOT_FOUND" });
    expect((await call(globexGateway, "listDeployments", { pageSize: 0, pageToken: "", filter: "" })).deployments).toEqual([]);
    const globex = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.globex, maxRetries: 0 });
    await expect(answer("plain:v2", globex)).rejects.toMatchObject({ status: 404 });

    await call(gateway, "deleteDeployment", { name: "deployments/plain", etag: "" });
    expect(await fails(call(gateway, "getDeployment", { name: "deployments/plain" }))).toMatchObject({ code: "NOT_FOUND" });
    await expect(answer("plain:v2")).rejects.toMatchObject({ status: 404, code: "model_not_found" });
    await waitFor(() => seen.some((d) => d.subject.endsWith("deployment_deleted") && DeploymentDeleted.decode(d.data).deployment === "deployments/plain"), { timeoutMs: 10_000 });
  }, 120_000);
});

describe("deployments on an upstream OpenAI-compatible server (vLLM's API)", () => {
  let vllm: OpenAiUpstream;
  beforeAll(async () => {
    process.env["LATHE_TEST_VLLM_KEY"] = "vllm-secret-key";
    vllm = await startOpenAiUpstream({ models: ["tiny"], apiKey: "vllm-secret-key", maxLoraRank: 16 });
  });
  afterAll(async () => {
    await vllm?.close();
  });

  const upstream = (d: Partial<Deployment>) => spec({ backend: DeploymentBackend.DEPLOYMENT_BACKEND_UPSTREAM_OPENAI, upstreamBaseUrl: vllm.url, upstreamApiKeySecret: "env:LATHE_TEST_VLLM_KEY", ...d });

  test("the adapters are loaded into the upstream, requests go there under their names, and a moved alias swaps them", async () => {
    await call(registry, "setAlias", { name: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/1", reason: "", expectedAdapterVersion: "" });
    await call(gateway, "createDeployment", { deploymentId: "vllm", deployment: upstream({ servedModelName: "tiny-vllm", adapters: [{ source: "models/tiny/adapters/support/aliases/prod", servedName: "support", adapterVersion: "" }] }), requestId: "" });
    const d = await settled("deployments/vllm");
    expect(d.error).toBeUndefined();
    expect(d.state).toBe(Deployment_State.STATE_READY);
    expect(vllm.loadedAdapters().map((a) => [a.name, a.rank])).toEqual([["acme/vllm/support@1", 8]]);
    expect(vllm.loadedAdapters()[0]!.path).toMatch(/cache\/gateway\/folders\//);
    expect(vllm.requests.every((r) => r.headers.authorization === "Bearer vllm-secret-key")).toBe(true);

    const r = await acme.chat.completions.create({ model: "tiny-vllm:support", messages: [{ role: "user", content: "tell me a short story" }], max_tokens: 3 });
    expect(r.model).toBe("tiny-vllm:support");
    expect(r.choices[0]!.message.content).toBe("[acme/vllm/support@1] story short");
    expect(r.choices[0]!.finish_reason).toBe("length");
    expect(r.usage).toMatchObject({ completion_tokens: 3 });
    const sent = vllm.requests.filter((q) => q.path === "/v1/chat/completions").at(-1)!.body as Record<string, unknown>;
    expect(sent).toMatchObject({ model: "acme/vllm/support@1", max_tokens: 3 });
    const s = await acme.chat.completions.create({ model: "tiny-vllm", messages: [{ role: "user", content: "tell me a short story" }], stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage;
    for await (const c of s) {
      text += c.choices[0]?.delta.content ?? "";
      usage = c.usage ?? usage;
    }
    expect(text).toBe("[tiny] story short a me tell");
    expect(usage).toMatchObject({ prompt_tokens: 5, completion_tokens: text.split(" ").length });
    // Only what the deployment loaded is served upstream.
    await expect(answer("tiny-vllm:support@2")).rejects.toMatchObject({ status: 404 });

    await call(registry, "setAlias", { name: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/2", reason: "", expectedAdapterVersion: "" });
    await waitFor(async () => (await call(gateway, "getDeployment", { name: "deployments/vllm" })).deployment!.adapters[0]!.adapterVersion.endsWith("/versions/2"), { timeoutMs: 30_000, intervalMs: 100 });
    expect(vllm.loadedAdapters().map((a) => a.name)).toEqual(["acme/vllm/support@2"]);
    expect((await acme.chat.completions.create({ model: "tiny-vllm:support", messages: [{ role: "user", content: "hi" }] })).choices[0]!.message.content).toBe("[acme/vllm/support@2] hi");

    // An upstream error keeps its status and OpenAI's shape.
    vllm.failNext(429, 1, 7);
    await expect(answer("tiny-vllm")).rejects.toMatchObject({ status: 429, type: "rate_limit_error" });

    await call(gateway, "deleteDeployment", { name: "deployments/vllm", etag: "" });
    expect(vllm.loadedAdapters()).toEqual([]);
  }, 120_000);

  test("an upstream that cannot load the adapter fails the deployment saying what to change", async () => {
    const small = await startOpenAiUpstream({ models: ["tiny"], maxLoraRank: 4 });
    const frozen = await startOpenAiUpstream({ models: ["tiny"], runtimeLoraUpdating: false });
    try {
      const adapters = [{ source: "models/tiny/adapters/support/versions/1", servedName: "support", adapterVersion: "" }];
      await call(gateway, "createDeployment", { deploymentId: "small", deployment: upstream({ servedModelName: "small", upstreamBaseUrl: small.url, upstreamApiKeySecret: "", adapters }), requestId: "" });
      await call(gateway, "createDeployment", { deploymentId: "frozen", deployment: upstream({ servedModelName: "frozen", upstreamBaseUrl: frozen.url, upstreamApiKeySecret: "", adapters }), requestId: "" });
      await call(gateway, "createDeployment", { deploymentId: "renamed", deployment: upstream({ servedModelName: "renamed", upstreamBaseUrl: small.url, upstreamApiKeySecret: "", upstreamModel: "llama-3" }), requestId: "" });
      const [s, f, r] = [await settled("deployments/small"), await settled("deployments/frozen"), await settled("deployments/renamed")];
      expect(s.state).toBe(Deployment_State.STATE_FAILED);
      expect(s.error).toMatchObject({ code: "FAILED_PRECONDITION", reason: "UPSTREAM_LORA_RANK_TOO_HIGH" });
      expect(s.error!.message).toMatch(/--max-lora-rank 8/);
      expect(f.error).toMatchObject({ reason: "UPSTREAM_LORA_LOADING_DISABLED" });
      expect(f.error!.message).toMatch(/VLLM_ALLOW_RUNTIME_LORA_UPDATING/);
      expect(r.error).toMatchObject({ reason: "UPSTREAM_MODEL_NOT_SERVED" });
      // A deployment that never became ready answers 503 saying why.
      await expect(answer("small")).rejects.toMatchObject({ status: 503, code: "deployment_not_ready" });
    } finally {
      await small.close();
      await frozen.close();
    }
  }, 60_000);
});
