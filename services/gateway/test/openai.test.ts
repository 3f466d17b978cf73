import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient, uploadFolder } from "@lathe/kit";
import { exportGguf, exportGgufLora, loadTokenizer, writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { AdapterVersion, Model, RegistryServiceClient, type CreateAdapterVersionRequest, type UploadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { testKeys, type TestPlatform } from "@lathe/testing";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startGatewayPlatform } from "./gateway-platform.js";

/* The OpenAI-compatible API through the official `openai` client, on a platform with the registry and the gateway. */

let t: TestPlatform;
let url: string;
let dir: string;
let acme: OpenAI;
let globex: OpenAI;

const QUESTION = "My router keeps restarting. What should I do?";

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-gateway-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  // A strong adapter on every projection and the head, so that its greedy answer is not the base's.
  await writeTinyAdapter(join(dir, "support"), join(dir, "tiny"), { r: 8, alpha: 64, seed: 3, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
  ({ t, url } = await startGatewayPlatform(dir, { LATHE_GATEWAY_MAX_CONTEXTS: 2, LATHE_GATEWAY_SEQUENCES: 1, LATHE_GATEWAY_QUEUE: 2, LATHE_GATEWAY_RETRY_AFTER_S: 2 }));
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
    const header: CreateAdapterVersionRequest = { parent: "models/tiny/adapters/support", adapterVersion: AdapterVersion.fromPartial({ description: "test" }), allowMissing: true, requestId: "" };
    await uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>((cb) => registry.uploadAdapterVersion(cb), header, join(dir, "support"));
    await call(registry, "setAlias", { name: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/1", reason: "", expectedAdapterVersion: "" });
  } finally {
    registry.close();
  }
  acme = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.acme, maxRetries: 0 });
  globex = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.globex, maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

const greedy = { temperature: 0, seed: 7, max_tokens: 12 } as const;

describe("the gateway's OpenAI-compatible API", () => {
  test("chat completion: the answer, its finish reason and usage counted with the model's tokenizer", async () => {
    const r = await acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: QUESTION }], ...greedy });
    expect(r.object).toBe("chat.completion");
    expect(r.model).toBe("tiny");
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.message.role).toBe("assistant");
    expect(["stop", "length"]).toContain(r.choices[0]!.finish_reason);
    const tok = await loadTokenizer(join(dir, "tiny"));
    expect(r.usage!.prompt_tokens).toBe(tok.encode(`<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`).length);
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    expect(r.usage!.completion_tokens).toBeLessThanOrEqual(12);
    expect(r.usage!.total_tokens).toBe(r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  test("streaming: the chunks add up to the unstreamed answer, then a usage chunk, ended by [DONE]", async () => {
    const whole = await acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: QUESTION }], ...greedy });
    const s = await acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: QUESTION }], ...greedy, stream: true, stream_options: { include_usage: true } });
    let text = "";
    const chunks = [];
    for await (const c of s) {
      chunks.push(c);
      text += c.choices[0]?.delta.content ?? "";
    }
    expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant");
    expect(text).toBe(whole.choices[0]!.message.content);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(whole.usage);
    expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe(whole.choices[0]!.finish_reason);
  });

  test("completions: a raw prompt, max_tokens and stop", async () => {
    const r = await acme.completions.create({ model: "tiny", prompt: "Unplug the router", ...greedy });
    expect(r.object).toBe("text_completion");
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
    const full = r.choices[0]!.text;
    // A stop sequence taken from the answer cuts it just before.
    const stop = full.slice(2, 4);
    if (stop.length === 2 && !full.slice(0, 3).includes(stop)) {
      const cut = await acme.completions.create({ model: "tiny", prompt: "Unplug the router", ...greedy, stop: [stop] });
      expect(cut.choices[0]!.text).toBe(full.slice(0, full.indexOf(stop)));
      expect(cut.choices[0]!.finish_reason).toBe("stop");
    }
    const s = await acme.completions.create({ model: "tiny", prompt: "Unplug the router", ...greedy, stream: true });
    let text = "";
    for await (const c of s) text += c.choices[0]?.text ?? "";
    expect(text).toBe(full);
  });

  test("models list: the tenant's base, its adapter (latest) and alias, with the parent", async () => {
    const ids = [];
    for await (const m of acme.models.list()) ids.push({ id: m.id, owned_by: m.owned_by, parent: (m as { parent?: string }).parent });
    expect(ids).toEqual([
      { id: "tiny", owned_by: "acme", parent: undefined },
      { id: "tiny:support", owned_by: "acme", parent: "tiny" },
      { id: "tiny:support@prod", owned_by: "acme", parent: "tiny" },
    ]);
  });

  test("an adapter answers differently from the base, and as node-llama-cpp does with that adapter (greedy)", async () => {
    const ask = (model: string) => acme.chat.completions.create({ model, messages: [{ role: "user", content: QUESTION }], ...greedy });
    const [base, latest, v1, prod] = await Promise.all([ask("tiny"), ask("tiny:support"), ask("tiny:support@1"), ask("tiny:support@prod")]);
    expect(latest.choices[0]!.message.content).not.toBe(base.choices[0]!.message.content);
    expect(v1.choices[0]!.message.content).toBe(latest.choices[0]!.message.content);
    expect(prod.choices[0]!.message.content).toBe(latest.choices[0]!.message.content);

    // Directly: the same GGUF exports, the prompt as ChatML spells it, llama.cpp's greedy completion.
    const tok = await loadTokenizer(join(dir, "tiny"));
    await exportGguf(join(dir, "tiny"), join(dir, "direct.gguf"), { dtype: "F16" });
    await exportGgufLora(join(dir, "support"), join(dir, "tiny"), join(dir, "direct-lora.gguf"), { dtype: "F16" });
    const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: join(dir, "direct.gguf") });
    try {
      for (const [lora, answer] of [[join(dir, "direct-lora.gguf"), latest], [null, base]] as const) {
        const context = await model.createContext({ contextSize: 256, threads: 1, ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}) });
        const tokens: Token[] = [];
        for await (const tk of context.getSequence().evaluate(tok.encode(`<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`) as Token[], { temperature: 0 })) {
          if (model.isEogToken(tk)) break;
          tokens.push(tk);
          if (tokens.length === 12) break;
        }
        await context.dispose();
        expect(answer.choices[0]!.message.content).toBe(tok.decode(tokens));
        expect(answer.usage!.completion_tokens).toBe(tokens.length);
      }
    } finally {
      await model.dispose();
      await llama.dispose();
    }
  }, 60_000);

  test("errors in OpenAI's shape: unknown model 404, bad request 400, no key or a wrong key 401", async () => {
    const err = (p: Promise<unknown>) => p.then(() => expect.unreachable("the call succeeded"), (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    const unknown = await err(acme.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "hi" }] }));
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect(unknown.status).toBe(404);
    expect(unknown.code).toBe("model_not_found");
    expect(unknown.type).toBe("invalid_request_error");
    expect(unknown.param).toBe("model");
    expect((await err(acme.chat.completions.create({ model: "tiny:other", messages: [{ role: "user", content: "hi" }] }))).status).toBe(404);
    expect((await err(acme.chat.completions.create({ model: "tiny:support@9", messages: [{ role: "user", content: "hi" }] }))).status).toBe(404);

    const bad = await err(acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], temperature: 5 }));
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect(bad.type).toBe("invalid_request_error");
    expect(bad.param).toBe("temperature");
    expect((await err(acme.chat.completions.create({ model: "tiny", messages: [] }))).param).toBe("messages");
    expect((await err(acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], n: 2 }))).status).toBe(400);
    expect((await err(acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 100_000 }))).code).toBe("context_length_exceeded");

    const wrongKey = await err(new OpenAI({ baseURL: `${url}/v1`, apiKey: "not-a-key", maxRetries: 0 }).models.list());
    expect(wrongKey).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(wrongKey.code).toBe("invalid_api_key");
    const noKey = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tiny", messages: [] }) });
    expect(noKey.status).toBe(401);
    expect(((await noKey.json()) as { error: { type: string; code: string; param: null; message: string } }).error).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key", param: null });
    const notJson = await fetch(`${url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${testKeys.acme}` }, body: "{" });
    expect(notJson.status).toBe(400);
    expect(((await notJson.json()) as { error: { type: string } }).error.type).toBe("invalid_request_error");
  });

  test("tenant isolation: another tenant's key lists none of them and gets 404 for each", async () => {
    const listed = [];
    for await (const m of globex.models.list()) listed.push(m.id);
    expect(listed).toEqual([]);
    for (const model of ["tiny", "tiny:support", "tiny:support@prod"]) {
      await expect(globex.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] })).rejects.toMatchObject({ status: 404, code: "model_not_found" });
    }
  });

  test("response_format json_schema: the answer parses and validates, streamed or not; what the grammar cannot enforce is refused naming its path", async () => {
    const schema = {
      type: "object",
      properties: { answer: { type: "string", maxLength: 24 }, priority: { enum: ["low", "high"] }, steps: { type: "array", items: { type: "integer" }, maxItems: 3 } },
      required: ["answer", "priority", "steps"],
      additionalProperties: false,
    };
    const response_format = { type: "json_schema", json_schema: { name: "ticket", schema, strict: true } } as const;
    const r = await acme.chat.completions.create({ model: "tiny:support", messages: [{ role: "user", content: QUESTION }], temperature: 0.8, seed: 3, max_tokens: 200, response_format });
    expect(r.choices[0]!.finish_reason).toBe("stop");
    const value = JSON.parse(r.choices[0]!.message.content!) as { answer: string; priority: string; steps: number[] };
    expect(Object.keys(value).sort()).toEqual(["answer", "priority", "steps"]);
    expect(value.answer.length).toBeLessThanOrEqual(24);
    expect(["low", "high"]).toContain(value.priority);
    expect(value.steps.length).toBeLessThanOrEqual(3);
    for (const n of value.steps) expect(Number.isInteger(n)).toBe(true);

    const s = await acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: QUESTION }], temperature: 0.8, seed: 5, max_tokens: 200, response_format, stream: true });
    let text = "";
    for await (const c of s) text += c.choices[0]?.delta.content ?? "";
    expect(Object.keys(JSON.parse(text) as object).sort()).toEqual(["answer", "priority", "steps"]);

    const obj = await acme.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: QUESTION }], temperature: 0.8, seed: 1, max_tokens: 200, response_format: { type: "json_object" } });
    if (obj.choices[0]!.finish_reason === "stop") expect(JSON.parse(obj.choices[0]!.message.content!)).toBeTypeOf("object");

    const refused = await acme.chat.completions
      .create({ model: "tiny", messages: [{ role: "user", content: "hi" }], response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { zip: { type: "string", pattern: "^[0-9]{5}$" } }, required: ["zip"] } } } })
      .then(() => expect.unreachable("the call succeeded"), (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    expect(refused.status).toBe(400);
    expect(refused.param).toBe("response_format.json_schema.schema.properties.zip.pattern");
    expect(refused.message).toMatch(/pattern/);
  }, 120_000);

  test("metrics: requests, tokens, latency and time to first token per model and adapter, and the contexts loaded", async () => {
    const s = await acme.chat.completions.create({ model: "tiny:support@prod", messages: [{ role: "user", content: QUESTION }], ...greedy, stream: true });
    for await (const _ of s) void _;
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).toMatch(/lathe_gateway_requests_total\{route="\/v1\/chat\/completions",model="tiny",adapter="support@prod",status="200"\} [1-9]/);
    expect(text).toMatch(/lathe_gateway_tokens_total\{model="tiny",adapter="support@prod",direction="completion"\} [1-9]/);
    expect(text).toMatch(/lathe_gateway_time_to_first_token_seconds_count\{model="tiny",adapter="support@prod"\} [1-9]/);
    expect(text).toMatch(/lathe_gateway_request_duration_seconds_bucket\{le="\+Inf",route="\/v1\/chat\/completions",model="tiny",adapter=""\} [1-9]/);
    expect(text).toMatch(/lathe_gateway_contexts_loaded\{base="sha256:[0-9a-f]+@\d+"\} [1-9]/);
    expect(text).toMatch(/lathe_gateway_queue_depth/);
    expect(text).toMatch(/lathe_gateway_contexts_max\{base="sha256:[0-9a-f]+@\d+"\} 2\n/);
    // A name that resolved to nothing adds no series of its own.
    await acme.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] }).catch(() => undefined);
    expect(await (await fetch(`${url}/metrics`)).text()).not.toMatch(/no-such-model/);
  });

  test("health and readiness", async () => {
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
  });

  test("a full queue answers 429 with Retry-After", async () => {
    // One sequence per context and a queue of two: a long answer holds the base's sequence, two
    // more requests wait, a fourth finds the queue full.
    const long = await acme.completions.create({ model: "tiny", prompt: "Unplug", temperature: 0, max_tokens: 1500, stream: true });
    const it = long[Symbol.asyncIterator]();
    await it.next();
    const waiting = [1, 2].map(() => acme.completions.create({ model: "tiny", prompt: "Unplug", ...greedy }));
    await new Promise((r) => setTimeout(r, 50));
    const full = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${testKeys.acme}` },
      body: JSON.stringify({ model: "tiny", prompt: "Unplug", max_tokens: 2 }),
    });
    expect(full.status).toBe(429);
    expect(full.headers.get("retry-after")).toBe("2");
    expect(((await full.json()) as { error: { type: string; code: string } }).error).toMatchObject({ type: "rate_limit_error", code: "queue_full" });
    for (let r = await it.next(); !r.done; r = await it.next());
    for (const w of await Promise.all(waiting)) expect(w.choices[0]!.text).toBeTypeOf("string");
  }, 60_000);
});
