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
import { startGatewayPlatform, type BackendView } from "./gateway-platform.js";

/* Several adapters of one base served at once through the context pool, and the chat-template check. */

let t: TestPlatform;
let url: string;
let dir: string;
let acme: OpenAI;
let backend: BackendView;

const QUESTION = "My router keeps restarting. What should I do?";
const PROMPT = `<|im_start|>user\n${QUESTION}<|im_end|>\n<|im_start|>assistant\n`;
const MAX_TOKENS = 8;
/** Three strong adapters of one base, each its own weights and scale, so that their greedy answers differ. */
const ADAPTERS = [
  { id: "alpha", seed: 3, alpha: 64 },
  { id: "beta", seed: 11, alpha: 48 },
  { id: "gamma", seed: 29, alpha: 96 },
] as const;
const OTHER_TEMPLATE = `sha256:${"0".repeat(64)}`;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-gateway-adapters-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  for (const a of ADAPTERS) await writeTinyAdapter(join(dir, a.id), join(dir, "tiny"), { r: 8, alpha: a.alpha, seed: a.seed, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
  // Two contexts for three adapters: serving all of them evicts and remakes contexts.
  ({ t, url, backend } = await startGatewayPlatform(dir, { LATHE_GATEWAY_MAX_CONTEXTS: 2, LATHE_GATEWAY_SEQUENCES: 2, LATHE_GATEWAY_QUEUE: 64, LATHE_GATEWAY_CONTEXT_SIZE: 256 }));
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
    const upload = (adapter: string, folder: string, v: Partial<AdapterVersion>) =>
      uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>(
        (cb) => registry.uploadAdapterVersion(cb),
        { parent: `models/tiny/adapters/${adapter}`, adapterVersion: AdapterVersion.fromPartial({ description: "test", ...v }), allowMissing: true, requestId: "" },
        folder,
      );
    for (const a of ADAPTERS) await upload(a.id, join(dir, a.id), {});
    // The same weights, recorded as trained with another chat template than the base's.
    await upload("foreign", join(dir, "alpha"), { chatTemplateFingerprint: OTHER_TEMPLATE });
  } finally {
    registry.close();
  }
  acme = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.acme, maxRetries: 0 });
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

/** llama.cpp's greedy answer with each adapter, called directly on the same GGUF exports. */
async function directAnswers(): Promise<Map<string, string>> {
  const tok = await loadTokenizer(join(dir, "tiny"));
  await exportGguf(join(dir, "tiny"), join(dir, "direct.gguf"), { dtype: "F16" });
  const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: join(dir, "direct.gguf") });
  const out = new Map<string, string>();
  try {
    for (const a of ADAPTERS) {
      const lora = join(dir, `direct-${a.id}.gguf`);
      await exportGgufLora(join(dir, a.id), join(dir, "tiny"), lora, { dtype: "F16" });
      const context = await model.createContext({ contextSize: 256, threads: 1, lora: { adapters: [{ filePath: lora, scale: 1 }] } });
      const tokens: Token[] = [];
      for await (const tk of context.getSequence().evaluate(tok.encode(PROMPT) as Token[], { temperature: 0 })) {
        if (model.isEogToken(tk)) break;
        tokens.push(tk);
        if (tokens.length === MAX_TOKENS) break;
      }
      await context.dispose();
      out.set(a.id, tok.decode(tokens));
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }
  return out;
}

describe("adapters of one base through the context pool", () => {
  test("32 concurrent chats over 3 adapters: each answered with its adapter, as llama.cpp directly, over one loaded base", async () => {
    const made = backend.contextsMade;
    const requests = Array.from({ length: 32 }, (_, i) => ADAPTERS[i % ADAPTERS.length]!.id);
    const answers = await Promise.all(
      requests.map((a) => acme.chat.completions.create({ model: `tiny:${a}`, messages: [{ role: "user", content: QUESTION }], temperature: 0, seed: 7, max_tokens: MAX_TOKENS })),
    );
    const direct = await directAnswers();
    // The three adapters answer differently from one another.
    expect(new Set(direct.values()).size).toBe(ADAPTERS.length);
    for (const [i, r] of answers.entries()) {
      expect(r.model).toBe(`tiny:${requests[i]}`);
      expect({ adapter: requests[i], answer: r.choices[0]!.message.content }).toEqual({ adapter: requests[i], answer: direct.get(requests[i]!) });
    }
    expect(backend.loadedBaseModels).toBe(1);
    // Two contexts for three adapters: one was evicted to make the third.
    expect(backend.contextsMade - made).toBeGreaterThanOrEqual(ADAPTERS.length);
    // Asked in turn, each adapter evicts the least recently used of the two; a remade context answers the same.
    const before = backend.contextsMade;
    for (const a of [...ADAPTERS, ...ADAPTERS]) {
      const r = await acme.chat.completions.create({ model: `tiny:${a.id}`, messages: [{ role: "user", content: QUESTION }], temperature: 0, max_tokens: MAX_TOKENS });
      expect(r.choices[0]!.message.content).toBe(direct.get(a.id));
    }
    expect(backend.contextsMade - before).toBeGreaterThanOrEqual(4);
    expect(backend.loadedBaseModels).toBe(1);
    const [stats] = await backend.stats();
    expect(stats).toMatchObject({ busy: 0, queued: 0 });
    expect(stats!.contexts).toBeLessThanOrEqual(2);
  }, 120_000);

  test("an adapter trained with another chat template is refused: 400 chat_template_mismatch, in OpenAI's shape", async () => {
    const err = await acme.chat.completions.create({ model: "tiny:foreign", messages: [{ role: "user", content: QUESTION }], max_tokens: 2 }).then(
      () => expect.unreachable("the call succeeded"),
      (e: unknown) => e as InstanceType<typeof OpenAI.APIError>,
    );
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect(err.code).toBe("chat_template_mismatch");
    expect(err.type).toBe("invalid_request_error");
    expect(err.param).toBe("model");
    expect(err.message).toContain("models/tiny/adapters/foreign/versions/1 was trained with another chat template");
    expect(err.message).toContain(OTHER_TEMPLATE);
    expect(err.message).toContain("garbled");
    // Its twin, recorded with the base's template, is served.
    const ok = await acme.chat.completions.create({ model: "tiny:alpha", messages: [{ role: "user", content: QUESTION }], max_tokens: 2, temperature: 0 });
    expect(ok.choices[0]!.message.content).toBeTypeOf("string");
  });
});
