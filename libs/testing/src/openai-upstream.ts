// A stand-in for vLLM's OpenAI-compatible server (`vllm serve --enable-lora`, with
// VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), so the gateway's "upstream" backend can be tested where
// vLLM cannot run. It imitates, for these routes, vLLM's paths, status codes, bodies and messages:
// GET /v1/models, POST /v1/chat/completions and /v1/completions (plain and server-sent events),
// POST /v1/load_lora_adapter and /v1/unload_lora_adapter, GET /health, and --api-key. Errors have
// vLLM's (>= 0.10) shape {"error":{"message","type","param","code"}}, with code the HTTP status;
// a missing or wrong API key gets vLLM's own {"error":"Unauthorized"}, which is not that shape.
// It leaves out: tokenization (a token is a whitespace-separated word), sampling (the answer is a
// function of the model and the prompt), n > 1, logprobs, tools, images, the content-type check,
// a check that adapter weights exist, and --max-loras (in vLLM it bounds the adapters in one
// batch, not how many may be loaded, so it never refuses a load).
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { STATUS_CODES, createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";

export interface OpenAiUpstreamOptions {
  /** Base model names served (vLLM's --served-model-name), e.g. ["tiny"]; at least one. The first is the parent of loaded adapters. */
  models: string[];
  /** When set, requests to /v1/... must send `Authorization: Bearer <apiKey>` (--api-key). Default: none, no auth. */
  apiKey?: string;
  /** vLLM's --enable-lora; without it every load is refused with 400. Default true. */
  enableLora?: boolean;
  /** VLLM_ALLOW_RUNTIME_LORA_UPDATING; without it the load and unload routes do not exist (404). Default true. */
  runtimeLoraUpdating?: boolean;
  /** --max-lora-rank: an adapter whose adapter_config.json has a larger `r` is refused with 400. Default 16. */
  maxLoraRank?: number;
  /** --max-loras: accepted for parity and ignored (see the file comment). Default 1. */
  maxLoras?: number;
  /**
   * Scripts the answers, as a hosted teacher's would be: the text of the `n`-th chat completion
   * (0-based, counted over answered requests), given its body; it replaces the echo, and a
   * `response_format` does not change it (so a test can answer malformed JSON). Default: the echo.
   */
  answer?: (n: number, body: Record<string, unknown>) => string;
}

/** One request as the server received it. */
export interface RecordedRequest {
  method: string;
  /** The request target, query included, e.g. "/v1/chat/completions". */
  path: string;
  headers: IncomingHttpHeaders;
  /** The body parsed as JSON; the raw text when it is not JSON; null when empty. */
  body: unknown;
}

export interface LoadedAdapter {
  name: string;
  path: string;
  /** `r` from the adapter's adapter_config.json. */
  rank: number;
}

export interface OpenAiUpstream {
  /** Base URL including /v1, e.g. "http://127.0.0.1:41234/v1". */
  url: string;
  /** Every request received, in order, whatever its answer. */
  requests: RecordedRequest[];
  loadedAdapters(): LoadedAdapter[];
  /** Makes the next `times` (default 1) chat and completion requests fail with `status`, sending `Retry-After` when `retryAfterS` is given. */
  failNext(status: number, times?: number, retryAfterS?: number): void;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = "BadRequestError",
  ) {
    super(message);
  }
}

/**
 * Starts the server on 127.0.0.1 at a port the kernel picks, and resolves once it listens.
 * Close it with `close()`; it keeps no state outside the returned handle.
 */
export async function startOpenAiUpstream(options: OpenAiUpstreamOptions): Promise<OpenAiUpstream> {
  if (options.models[0] === undefined) throw new Error("startOpenAiUpstream: options.models must name at least one base model");
  const base: string = options.models[0]; // vLLM makes the first base model the parent of adapters loaded at runtime
  let answered = 0;
  const enableLora = options.enableLora ?? true;
  const maxLoraRank = options.maxLoraRank ?? 16;
  const requests: RecordedRequest[] = [];
  const adapters = new Map<string, LoadedAdapter>();
  let failure = { status: 0, left: 0, retryAfterS: null as number | null };

  async function loadAdapter(b: Json): Promise<string> {
    const name = b.lora_name, path = b.lora_path;
    if (typeof name !== "string" || !name || typeof path !== "string" || !path) {
      throw new HttpError(400, "Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput");
    }
    const alreadyLoaded = () => new HttpError(400, `The lora adapter '${name}' has already been loaded.`, "InvalidUserInput");
    if (adapters.has(name)) throw alreadyLoaded();
    if (!enableLora) throw new HttpError(400, "LoRA is not enabled. Use --enable-lora to enable LoRA.");
    let config: unknown;
    try {
      config = JSON.parse(await readFile(join(path, "adapter_config.json"), "utf8"));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        throw new HttpError(404, `Loading lora ${name} failed: No adapter found for ${path}`, "NotFoundError");
      }
      throw new HttpError(400, `Loading lora ${name} failed: ${(err as Error).message}`);
    }
    const rank = asObject(config)?.r;
    if (typeof rank !== "number") throw new HttpError(400, `Loading lora ${name} failed: adapter_config.json has no numeric "r"`);
    if (rank > maxLoraRank) throw new HttpError(400, `LoRA rank ${rank} is greater than max_lora_rank ${maxLoraRank}.`);
    if (adapters.has(name)) throw alreadyLoaded(); // a concurrent load of the same name won the race
    adapters.set(name, { name, path, rank });
    return `Success: LoRA adapter '${name}' added successfully.`;
  }

  function unloadAdapter(b: Json): string {
    const name = b.lora_name;
    if (typeof name !== "string" || !name) {
      throw new HttpError(400, "either 'lora_name' and 'lora_int_id' needs to be provided.", "InvalidUserInput");
    }
    if (!adapters.delete(name)) throw new HttpError(404, `The lora adapter '${name}' cannot be found.`, "NotFoundError");
    return `Success: LoRA adapter '${name}' removed successfully.`;
  }

  function listModels(): Json {
    const created = Math.floor(Date.now() / 1000);
    const card = (id: string, root: string, parent: string | null) => ({ id, object: "model", created, owned_by: "vllm", root, parent });
    return {
      object: "list",
      data: [...options.models.map((m) => card(m, m, null)), ...[...adapters.values()].map((a) => card(a.name, a.path, base))],
    };
  }

  function generate(kind: "chat" | "completion", b: Json, res: ServerResponse): void {
    if (failure.left > 0) {
      failure.left -= 1;
      if (failure.retryAfterS !== null) res.setHeader("Retry-After", String(failure.retryAfterS));
      throw new HttpError(failure.status, `injected failure: ${failure.status}`, STATUS_CODES[failure.status] ?? "Error");
    }
    const model = b.model;
    if (typeof model !== "string") throw new HttpError(400, "'model' must be a string");
    if (!options.models.includes(model) && !adapters.has(model)) {
      throw new HttpError(404, `The model \`${model}\` does not exist.`, "NotFoundError");
    }
    let promptText: string, echoed: string;
    if (kind === "chat") {
      if (!Array.isArray(b.messages)) throw new HttpError(400, "'messages' must be a list");
      const messages = b.messages.map((m) => ({ role: asObject(m)?.role, text: contentText(asObject(m)?.content) }));
      promptText = messages.map((m) => m.text).join("\n");
      echoed = messages.filter((m) => m.role === "user").at(-1)?.text ?? "";
    } else {
      if (typeof b.prompt !== "string" && !Array.isArray(b.prompt)) throw new HttpError(400, "'prompt' must be a string");
      promptText = echoed = Array.isArray(b.prompt) ? b.prompt.join("\n") : b.prompt; // several prompts are answered as one
    }
    // vLLM's completions default max_tokens to 16, as OpenAI's legacy API does; chat has no default.
    const maxTokens = b.max_completion_tokens ?? b.max_tokens ?? (kind === "completion" ? 16 : null);
    const stop = typeof b.stop === "string" ? [b.stop] : Array.isArray(b.stop) ? b.stop.filter((s) => typeof s === "string") : [];
    const reply = `[${model}] ${words(echoed).reverse().join(" ")}`.trim();
    const full = kind === "chat" && options.answer ? options.answer(answered++, b) : (structured(asObject(b.response_format), reply) ?? reply);
    const { pieces, finish } = limit(full, stop, typeof maxTokens === "number" ? maxTokens : null);
    const text = pieces.join("");
    const promptTokens = words(promptText).length;
    const usage = { prompt_tokens: promptTokens, completion_tokens: pieces.length, total_tokens: promptTokens + pieces.length };
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);

    if (b.stream !== true) {
      const choice = kind === "chat" ? { index: 0, message: { role: "assistant", content: text } } : { index: 0, text };
      const object = kind === "chat" ? "chat.completion" : "text_completion";
      sendJson(res, 200, { id, object, created, model, choices: [{ ...choice, logprobs: null, finish_reason: finish }], usage });
      return;
    }
    const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
    const event = (choices: unknown[], extra: Json = {}) =>
      res.write(`data: ${JSON.stringify({ id, object, created, model, choices, ...extra })}\n\n`);
    const choice = (content: string | null, finishReason: string | null) => ({
      index: 0,
      ...(kind === "chat" ? { delta: content === null ? {} : { content } } : { text: content ?? "" }),
      logprobs: null,
      finish_reason: finishReason,
    });
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    if (kind === "chat") event([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]);
    for (const piece of pieces) event([choice(piece, null)]);
    event([choice(null, finish)]);
    if (asObject(b.stream_options)?.include_usage === true) event([], { usage });
    res.end("data: [DONE]\n\n");
  }

  type Route = (b: Json, res: ServerResponse) => Promise<void> | void;
  const text = (produce: (b: Json) => Promise<string> | string): Route => async (b, res) => {
    const body = await produce(b);
    res.writeHead(200).end(body); // vLLM answers with the bare string and no content type
  };
  const routes = new Map<string, Route>([
    ["GET /health", (_b, res) => void res.writeHead(200).end()],
    ["GET /v1/models", (_b, res) => sendJson(res, 200, listModels())],
    ["POST /v1/chat/completions", (b, res) => generate("chat", b, res)],
    ["POST /v1/completions", (b, res) => generate("completion", b, res)],
  ]);
  // vLLM registers these routes only when runtime updating is allowed, so otherwise they 404.
  if (options.runtimeLoraUpdating ?? true) {
    routes.set("POST /v1/load_lora_adapter", text(loadAdapter));
    routes.set("POST /v1/unload_lora_adapter", text(unloadAdapter));
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const raw = await readBody(req);
      let body: unknown = raw === "" ? null : raw;
      try {
        body = raw === "" ? null : JSON.parse(raw);
      } catch {
        // kept as text: the recording shows what was sent, and a route that needs JSON refuses it
      }
      const target = req.url ?? "/";
      requests.push({ method: req.method ?? "", path: target, headers: req.headers, body });
      const path = new URL(target, "http://upstream").pathname;
      if (options.apiKey !== undefined && path.startsWith("/v1") && req.headers.authorization !== `Bearer ${options.apiKey}`) {
        sendJson(res, 401, { error: "Unauthorized" });
        return;
      }
      const route = routes.get(`${req.method} ${path}`);
      if (route === undefined) {
        const other = [...routes.keys()].some((k) => k.endsWith(` ${path}`));
        throw other ? new HttpError(405, "Method Not Allowed", "Method Not Allowed") : new HttpError(404, "Not Found", "Not Found");
      }
      if (req.method === "POST" && asObject(body) === null) throw new HttpError(400, "The request body must be a JSON object");
      await route(asObject(body) ?? {}, res);
    } catch (err) {
      const e = err instanceof HttpError ? err : new HttpError(500, (err as Error).message, "InternalServerError");
      if (res.headersSent) res.destroy();
      else sendJson(res, e.status, { error: { message: e.message, type: e.type, param: null, code: e.status } });
    }
  }

  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    loadedAdapters: () => [...adapters.values()].map((a) => ({ ...a })),
    failNext(status, times = 1, retryAfterS) {
      failure = { status, left: times, retryAfterS: retryAfterS ?? null };
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections(); // keep-alive sockets would otherwise hold close() open
      }),
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

function asObject(v: unknown): Json | null {
  return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : null;
}

function words(s: string): string[] {
  return s.split(/\s+/).filter(Boolean);
}

/** A message's text: a string, or the text parts of a list of content parts. */
function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.map((p) => asObject(p)?.text).filter((t): t is string => typeof t === "string").join(" ");
}

/** Cuts the answer at the first stop string, then to maxTokens words; the pieces are words with their leading space. */
function limit(full: string, stop: string[], maxTokens: number | null): { pieces: string[]; finish: "stop" | "length" } {
  const cut = Math.min(full.length, ...stop.filter(Boolean).map((s) => full.indexOf(s)).filter((i) => i >= 0));
  const pieces = full.slice(0, cut).match(/\s*\S+/g) ?? [];
  if (maxTokens !== null && pieces.length > maxTokens) return { pieces: pieces.slice(0, maxTokens), finish: "length" };
  return { pieces, finish: "stop" };
}

/** For response_format json_object or json_schema, a JSON answer; strings in it carry the plain reply. */
function structured(format: Json | null, reply: string): string | null {
  if (format?.type === "json_object") return JSON.stringify({ answer: reply });
  if (format?.type === "json_schema") return JSON.stringify(valueFor(asObject(asObject(format.json_schema)?.schema), reply));
  return null;
}

/** A value valid for a simple JSON schema: required properties (all, when none are listed) get a value of their type. */
function valueFor(schema: Json | null, reply: string): unknown {
  if (schema === null) return { answer: reply };
  if (Array.isArray(schema.enum)) return schema.enum[0];
  const type = (Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type) ?? (schema.properties ? "object" : null);
  switch (type) {
    case "object": {
      const props = asObject(schema.properties) ?? {};
      const keys = Array.isArray(schema.required) ? (schema.required as string[]) : Object.keys(props);
      return Object.fromEntries(keys.map((k) => [k, valueFor(asObject(props[k]), reply)]));
    }
    case "array": return [];
    case "integer":
    case "number": return 0;
    case "boolean": return true;
    case "null": return null;
    default: return reply;
  }
}
