import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { testKeys, type TestPlatform } from "@lathe/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startGatewayPlatform } from "./gateway-platform.js";

/* The gateway's bounds: per-key rate limits on the OpenAI-compatible API, and the memory its contexts may take. */

let t: TestPlatform;
let url: string;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "lathe-gateway-limits-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  // Room for four contexts by count, but 1 MiB holds fewer than one: one is kept.
  ({ t, url } = await startGatewayPlatform(dir, { LATHE_GATEWAY_RATE_LIMIT: 3, LATHE_GATEWAY_MAX_CONTEXTS: 4, LATHE_GATEWAY_CONTEXT_MEMORY_MB: 1, LATHE_GATEWAY_CONTEXT_SIZE: 256 }));
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
  } finally {
    registry.close();
  }
}, 60_000);

afterAll(async () => {
  await t?.stop();
});

test("the contexts of a base are bounded by the memory budget as well as by their count", async () => {
  const r = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${testKeys.acme}` },
    body: JSON.stringify({ model: "tiny", prompt: "Unplug", max_tokens: 2 }),
  });
  expect(r.status).toBe(200);
  expect(await (await fetch(`${url}/metrics`)).text()).toMatch(/lathe_gateway_contexts_max\{base="sha256:[0-9a-f]+@256"\} 1\n/);
});

test("a key over its requests per minute gets 429 in OpenAI's shape with Retry-After; other keys and health checks are not limited", async () => {
  const models = (key: string) => fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  for (let i = 0; i < 3; i++) expect((await models(testKeys.globex)).status).toBe(200);
  const limited = await models(testKeys.globex);
  expect(limited.status).toBe(429);
  expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
  const body = (await limited.json()) as { error: { type: string; code: string; message: string } };
  expect(body.error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
  expect(body.error.message).toMatch(/3 requests per minute/);
  expect((await models(testKeys.acme)).status).toBe(200);
  for (let i = 0; i < 5; i++) expect((await fetch(`${url}/healthz`)).status).toBe(200);
});
