import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testKeys, type TestPlatform } from "@lathe/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { startGatewayPlatform } from "./gateway-platform.js";

/* Per-key rate limits on the OpenAI-compatible API. */

let t: TestPlatform;
let url: string;

beforeAll(async () => {
  ({ t, url } = await startGatewayPlatform(mkdtempSync(join(tmpdir(), "lathe-gateway-rate-")), { LATHE_GATEWAY_RATE_LIMIT: 3 }));
}, 60_000);

afterAll(async () => {
  await t?.stop();
});

test("a key over its requests per minute gets 429 in OpenAI's shape with Retry-After; other keys and health checks are not limited", async () => {
  const models = (key: string) => fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
  for (let i = 0; i < 3; i++) expect((await models(testKeys.acme)).status).toBe(200);
  const limited = await models(testKeys.acme);
  expect(limited.status).toBe(429);
  expect(Number(limited.headers.get("retry-after"))).toBeGreaterThan(0);
  const body = (await limited.json()) as { error: { type: string; code: string; message: string } };
  expect(body.error).toMatchObject({ type: "rate_limit_error", code: "rate_limit_exceeded" });
  expect(body.error.message).toMatch(/3 requests per minute/);
  expect((await models(testKeys.globex)).status).toBe(200);
  for (let i = 0; i < 5; i++) expect((await fetch(`${url}/healthz`)).status).toBe(200);
});
