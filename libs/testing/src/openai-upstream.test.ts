import { afterEach, describe, expect, it } from "vitest";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { startOpenAiUpstream, type OpenAiUpstream, type OpenAiUpstreamOptions } from "./openai-upstream.js";
import { tempDir, type TempDir } from "./temp-dir.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((c) => c()));
});

async function upstream(options: Partial<OpenAiUpstreamOptions> = {}): Promise<OpenAiUpstream> {
  const u = await startOpenAiUpstream({ models: ["tiny"], ...options });
  cleanups.push(() => u.close());
  return u;
}

/** A PEFT adapter folder holding only adapter_config.json with rank `r`. */
async function adapterDir(r: number): Promise<TempDir> {
  const dir = await tempDir("lathe-lora-");
  cleanups.push(() => dir.dispose());
  const config = { r, lora_alpha: 16, target_modules: ["q_proj", "v_proj"], peft_type: "LORA", base_model_name_or_path: "tiny" };
  await writeFile(join(dir.path, "adapter_config.json"), JSON.stringify(config));
  return dir;
}

async function post(u: OpenAiUpstream, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${u.url}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
}

async function chat(u: OpenAiUpstream, body: Record<string, unknown>): Promise<Response> {
  return post(u, "/chat/completions", { messages: [{ role: "user", content: "tell me a short story" }], ...body });
}

async function modelIds(u: OpenAiUpstream): Promise<string[]> {
  const list = (await (await fetch(`${u.url}/models`)).json()) as { data: { id: string }[] };
  return list.data.map((m) => m.id);
}

describe("startOpenAiUpstream", () => {
  it("loads a PEFT adapter at runtime, lists it under its base model, and answers as that adapter", async () => {
    const u = await upstream();
    const dir = await adapterDir(8);
    const load = await post(u, "/load_lora_adapter", { lora_name: "support-v1", lora_path: dir.path });
    expect(load.status).toBe(200);
    expect(await load.text()).toBe("Success: LoRA adapter 'support-v1' added successfully.");
    expect(u.loadedAdapters()).toEqual([{ name: "support-v1", path: dir.path, rank: 8 }]);

    const models = (await (await fetch(`${u.url}/models`)).json()) as { data: unknown[] };
    expect(models.data).toEqual([
      expect.objectContaining({ id: "tiny", object: "model", owned_by: "vllm", parent: null }),
      expect.objectContaining({ id: "support-v1", object: "model", owned_by: "vllm", parent: "tiny", root: dir.path }),
    ]);

    const res = await chat(u, { model: "support-v1", seed: 7, temperature: 0 });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { model: string; choices: { message: { content: string }; finish_reason: string }[]; usage: unknown };
    expect(body.model).toBe("support-v1");
    expect(body.choices[0]?.message.content).toBe("[support-v1] story short a me tell");
    expect(body.choices[0]?.finish_reason).toBe("stop");
    expect(body.usage).toEqual({ prompt_tokens: 5, completion_tokens: 6, total_tokens: 11 });
    const base = (await (await chat(u, { model: "tiny" })).json()) as { choices: { message: { content: string } }[] };
    expect(base.choices[0]?.message.content).toBe("[tiny] story short a me tell");
  });

  it("refuses an adapter whose rank is above max_lora_rank, with vLLM's message", async () => {
    const u = await upstream({ maxLoraRank: 16 });
    const res = await post(u, "/load_lora_adapter", { lora_name: "wide", lora_path: (await adapterDir(32)).path });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { message: "LoRA rank 32 is greater than max_lora_rank 16.", type: "BadRequestError", param: null, code: 400 },
    });
    expect(u.loadedAdapters()).toEqual([]);
  });

  it("refuses loading a name twice (400) and a folder without adapter_config.json (404)", async () => {
    const u = await upstream();
    const dir = await adapterDir(8);
    expect((await post(u, "/load_lora_adapter", { lora_name: "a", lora_path: dir.path })).status).toBe(200);
    const again = await post(u, "/load_lora_adapter", { lora_name: "a", lora_path: dir.path });
    expect(again.status).toBe(400);
    expect(await again.json()).toMatchObject({ error: { message: "The lora adapter 'a' has already been loaded.", code: 400 } });
    const missing = await post(u, "/load_lora_adapter", { lora_name: "b", lora_path: join(dir.path, "nope") });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { type: "NotFoundError", message: expect.stringContaining("No adapter found for") } });
  });

  it("unloads an adapter: it leaves /v1/models, chat with it is 404, and a second unload is 404", async () => {
    const u = await upstream();
    await post(u, "/load_lora_adapter", { lora_name: "a", lora_path: (await adapterDir(4)).path });
    const res = await post(u, "/unload_lora_adapter", { lora_name: "a" });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("Success: LoRA adapter 'a' removed successfully.");
    expect(await modelIds(u)).toEqual(["tiny"]);
    const gone = await chat(u, { model: "a" });
    expect(gone.status).toBe(404);
    expect(await gone.json()).toEqual({ error: { message: "The model `a` does not exist.", type: "NotFoundError", param: null, code: 404 } });
    const again = await post(u, "/unload_lora_adapter", { lora_name: "a" });
    expect(again.status).toBe(404);
    expect(await again.json()).toMatchObject({ error: { message: "The lora adapter 'a' cannot be found." } });
  });

  it("without runtime LoRA updating the routes do not exist, and without --enable-lora a load is refused", async () => {
    const fixed = await upstream({ runtimeLoraUpdating: false });
    const res = await post(fixed, "/load_lora_adapter", { lora_name: "a", lora_path: "/x" });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { message: "Not Found", type: "Not Found", param: null, code: 404 } });
    const noLora = await upstream({ enableLora: false });
    const refused = await post(noLora, "/load_lora_adapter", { lora_name: "a", lora_path: (await adapterDir(8)).path });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({ error: { message: expect.stringContaining("LoRA is not enabled") } });
  });

  it("streams role, one chunk per word, finish and usage chunks, then [DONE], adding up to the plain answer", async () => {
    const u = await upstream();
    const plain = (await (await chat(u, { model: "tiny" })).json()) as { choices: { message: { content: string } }[]; usage: unknown };
    const res = await chat(u, { model: "tiny", stream: true, stream_options: { include_usage: true } });
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = (await res.text()).split("\n\n").filter(Boolean).map((e) => e.replace(/^data: /, ""));
    expect(events.at(-1)).toBe("[DONE]");
    type Chunk = { object: string; choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: unknown };
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as Chunk);
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe("stop");
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: plain.usage });
    const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? "")).join("");
    expect(text).toBe(plain.choices[0]?.message.content);
    expect(chunks.length).toBe(1 + 6 + 1 + 1); // role, six words, finish, usage
  });

  it("/v1/completions honours max_tokens and stop, and streams text chunks", async () => {
    const u = await upstream();
    const long = (await (await post(u, "/completions", { model: "tiny", prompt: "one two three four", max_tokens: 3 })).json()) as {
      object: string;
      choices: { text: string; finish_reason: string }[];
    };
    expect(long.object).toBe("text_completion");
    expect(long.choices[0]).toMatchObject({ text: "[tiny] four three", finish_reason: "length" });
    const stopped = (await (await post(u, "/completions", { model: "tiny", prompt: "one two three", stop: [" two"] })).json()) as {
      choices: { text: string; finish_reason: string }[];
    };
    expect(stopped.choices[0]).toMatchObject({ text: "[tiny] three", finish_reason: "stop" });
    const stream = await post(u, "/completions", { model: "tiny", prompt: "a b", stream: true });
    const events = (await stream.text()).split("\n\n").filter(Boolean);
    expect(events.at(-1)).toBe("data: [DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.replace(/^data: /, "")) as { choices: { text: string }[] });
    expect(chunks.map((c) => c.choices[0]?.text).join("")).toBe("[tiny] b a");
  });

  it("answers response_format json_schema with an object that has each required property of its type", async () => {
    const u = await upstream();
    const schema = {
      type: "object",
      properties: { title: { type: "string" }, score: { type: "integer" }, tags: { type: "array" }, mood: { enum: ["calm", "wild"] } },
      required: ["title", "score", "tags", "mood"],
    };
    const res = await chat(u, { model: "tiny", response_format: { type: "json_schema", json_schema: { name: "r", schema } } });
    const content = ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]?.message.content ?? "";
    expect(JSON.parse(content)).toEqual({ title: "[tiny] story short a me tell", score: 0, tags: [], mood: "calm" });
  });

  it("requires the API key on /v1 when one is set, answering 401 as vLLM does", async () => {
    const u = await upstream({ apiKey: "sekret" });
    const res = await chat(u, { model: "tiny" });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ error: "Unauthorized" });
    const wrong = await post(u, "/chat/completions", { model: "tiny", messages: [] }, { authorization: "Bearer other" });
    expect(wrong.status).toBe(401);
    const right = await post(u, "/chat/completions", { model: "tiny", messages: [] }, { authorization: "Bearer sekret" });
    expect(right.status).toBe(200);
    expect((await fetch(u.url.replace(/\/v1$/, "/health"))).status).toBe(200); // vLLM guards only /v1 paths
    expect(u.requests.map((r) => r.headers.authorization ?? null)).toEqual([null, "Bearer other", "Bearer sekret", null]);
  });

  it("failNext makes the next chat requests fail with that status and Retry-After, then recovers", async () => {
    const u = await upstream();
    u.failNext(429, 2, 3);
    for (let i = 0; i < 2; i++) {
      const res = await chat(u, { model: "tiny" });
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toBe("3");
      expect(await res.json()).toMatchObject({ error: { type: "Too Many Requests", code: 429 } });
    }
    expect((await chat(u, { model: "tiny" })).status).toBe(200);
    expect(u.requests.map((r) => r.path)).toEqual(Array(3).fill("/v1/chat/completions"));
    expect(u.requests[0]?.body).toMatchObject({ model: "tiny" });
  });
});
