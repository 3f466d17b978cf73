import { createHash, randomBytes } from "node:crypto";
import type { ServerResponse } from "node:http";
import { Metadata } from "@grpc/grpc-js";
import { ApiKeyAuth, serverSpan, type Logger } from "@lathe/kit";
import rateLimit from "@fastify/rate-limit";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import type { GenerationResult } from "./domain/embedded.js";
import { OpenAiError, toOpenAiError } from "./domain/errors.js";
import type { GatewayMetrics } from "./domain/metrics.js";
import type { ResolvedModel } from "./domain/registry.js";
import { responseFormatOf } from "./domain/json-schema.js";
import { parseChatRequest, parseCompletionRequest } from "./domain/requests.js";
import type { Models } from "./domain/fine-tuned-models.js";
import type { OpenAiFineTuning } from "./domain/openai-fine-tuning.js";
import { checkAnswerFormat, type Backends, type ServingRequest } from "./domain/serving.js";
import { registerFineTuningRoutes } from "./openai-fine-tuning-http.js";
import { registerConsoleApi, type ConsoleApiDeps } from "./console-api.js";
import { registerConsoleStatic } from "./console-static.js";

export interface HttpDeps {
  apiKeys: Readonly<Record<string, string>>;
  models: Models;
  /** OpenAI's files and fine-tuning jobs API, and the largest upload it takes (bytes); none: not served. */
  fineTuning?: { api: OpenAiFineTuning; filesMaxBytes: number };
  backends: Backends;
  metrics: GatewayMetrics;
  logger: Logger;
  /** Requests per minute one API key may send to `/v1/*`; 0: no limit. */
  rateLimitPerMinute: number;
  /** Whether the gateway takes requests (false once it drains). */
  ready(): boolean;
  /** The web console: its JSON facade over the services and its built files (none: not served). */
  console?: { api: ConsoleApiDeps; distDir: string | undefined };
}

/** The caller's tenant and the metadata that carries its key to the registry; 401 without a known key. */
function caller(auth: ApiKeyAuth, req: FastifyRequest): { tenant: string; md: Metadata } {
  const md = new Metadata();
  const header = req.headers.authorization;
  if (typeof header === "string") md.set("authorization", header);
  try {
    return { tenant: auth.tenantOf(md), md };
  } catch {
    throw new OpenAiError(
      401,
      "invalid_request_error",
      header === undefined ? "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'." : "Incorrect API key provided.",
      "invalid_api_key",
    );
  }
}

const usage = (r: GenerationResult) => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });

function sendError(reply: FastifyReply, err: OpenAiError): FastifyReply {
  if (err.retryAfterS !== undefined) void reply.header("retry-after", String(err.retryAfterS));
  return reply.code(err.status).send(err.body());
}

/** An AbortSignal that fires when the client goes away before the answer is complete. */
function clientGone(res: ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.on("close", () => {
    if (!res.writableFinished) ac.abort(new Error("the client closed the connection"));
  });
  return ac.signal;
}

/** What a finished request reports to the metrics (set as the request goes). */
interface Observed {
  model?: string;
  ttft?: number;
  result?: GenerationResult;
}

declare module "fastify" {
  interface FastifyRequest {
    observed?: Observed;
  }
}

/**
 * The OpenAI-compatible HTTP API: `/v1/chat/completions`, `/v1/completions` (both with SSE
 * streaming), `/v1/models`, `/healthz`, `/readyz`, `/metrics`, and OpenAI's `/v1/files` and
 * `/v1/fine_tuning/jobs` (openai-fine-tuning-http.ts). Errors in OpenAI's shape and
 * statuses; per-key rate limits on `/v1/*`. With `console`, also the web console under
 * `/console/` and its JSON facade over the services under `/console/api/` (console-*.ts).
 */
export async function buildHttp(deps: HttpDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, bodyLimit: 8 << 20 });
  const auth = new ApiKeyAuth(deps.apiKeys);

  app.setErrorHandler((err: unknown, _req, reply) => {
    const e = err as { statusCode?: number; message?: string };
    if (!(err instanceof OpenAiError) && typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
      // fastify's own: a body that is not JSON, too large, a wrong content type.
      return sendError(reply, new OpenAiError(e.statusCode, "invalid_request_error", e.message ?? "invalid request"));
    }
    const oe = toOpenAiError(err);
    if (oe.status >= 500) deps.logger.error({ err }, "request failed");
    return sendError(reply, oe);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new OpenAiError(404, "invalid_request_error", `Unknown request URL: ${req.method} ${req.url}.`, "unknown_url")));

  if (deps.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      max: deps.rateLimitPerMinute,
      timeWindow: 60_000,
      // Per API key (hashed: the key itself is never held as a map key); no key shares one bucket per address.
      keyGenerator: (req) => {
        const h = req.headers.authorization;
        return typeof h === "string" ? `key:${createHash("sha256").update(h).digest("hex")}` : `ip:${req.ip}`;
      },
      allowList: (req) => !req.url.startsWith("/v1/"),
      errorResponseBuilder: (_req, ctx) =>
        new OpenAiError(429, "rate_limit_error", `Rate limit reached: ${ctx.max} requests per minute for this API key. Retry in ${Math.ceil(ctx.ttl / 1000)} s.`, "rate_limit_exceeded", null, Math.max(1, Math.ceil(ctx.ttl / 1000))),
    });
  }

  // Every /v1 request is counted once it is answered, with the model it resolved to.
  app.addHook("onRequest", async (req) => {
    if (req.url.startsWith("/v1/")) req.observed = {};
  });
  // Each /v1 request is a span that continues the caller's trace (W3C traceparent), and the
  // handler runs in its context, so the registry calls it makes and its logs carry the trace.
  const spans = new WeakMap<FastifyRequest, ReturnType<typeof serverSpan>>();
  app.addHook("onRequest", (req, _reply, done) => {
    if (!req.url.startsWith("/v1/")) return done();
    const s = serverSpan(`${req.method} ${req.url.split("?")[0]}`, { "lathe.service": "gateway", "http.request.method": req.method }, req.headers);
    spans.set(req, s);
    s.run(done);
  });
  app.addHook("onResponse", async (req, reply) => {
    spans.get(req)?.end(reply.statusCode >= 500, { "http.response.status_code": reply.statusCode, ...(req.observed?.model ? { "lathe.model": req.observed.model } : {}) });
  });
  app.addHook("onResponse", async (req, reply) => {
    const o = req.observed;
    if (!o) return;
    deps.metrics.observe({
      route: req.routeOptions.url ?? "unknown",
      model: o.model,
      status: reply.statusCode,
      seconds: reply.elapsedTime / 1000,
      ttftSeconds: o.ttft,
      promptTokens: o.result?.promptTokens,
      completionTokens: o.result?.completionTokens,
    });
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_req, reply) => (deps.ready() ? { status: "ready" } : reply.code(503).send({ status: "draining" })));
  app.get("/metrics", async (_req, reply) => reply.header("content-type", deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics()));

  app.get("/v1/models", async (req) => {
    const { tenant, md } = caller(auth, req);
    const models = await deps.models.list(md, tenant);
    return { object: "list", data: models.map((m) => ({ object: "model", ...m })) };
  });

  if (deps.fineTuning) await registerFineTuningRoutes(app, deps.fineTuning.api, (req) => caller(auth, req), deps.fineTuning.filesMaxBytes);

  if (deps.console) {
    registerConsoleStatic(app, deps.console.distDir);
    await registerConsoleApi(app, deps.console.api, (req) => caller(auth, req));
  }

  /** The model a request names, resolved with the caller's key (and recorded for the metrics). */
  const resolve = async (req: FastifyRequest, name: string): Promise<ResolvedModel> => {
    const who = caller(auth, req);
    const model = await deps.models.resolve(name, who.md, who.tenant);
    req.observed!.model = name;
    return model;
  };
  // Time to first token: from the request's arrival to its first generated text.
  const began = (req: FastifyRequest, reply: FastifyReply) => () => {
    if (req.observed && req.observed.ttft === undefined) req.observed.ttft = reply.elapsedTime / 1000;
  };

  app.post("/v1/chat/completions", async (req, reply) => {
    caller(auth, req);
    const body = parseChatRequest(req.body);
    const format = responseFormatOf(body.response_format);
    const model = await resolve(req, body.model);
    const serving: ServingRequest = { kind: "chat", body, format };
    const id = `chatcmpl-${randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, created, model: body.model, system_fingerprint: null };
    if (body.stream) {
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ ...head, object: "chat.completion.chunk", choices, ...(includeUsage ? { usage: null } : {}), ...extra });
      return stream(req, reply, deps, model, serving, began(req, reply), {
        check: (r) => checkAnswerFormat(format, r),
        first: () => chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }]),
        delta: (text) => chunk([{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }]),
        last: (r) => [chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: r.finishReason }]), ...(includeUsage ? [chunk([], { usage: usage(r) })] : [])],
      });
    }
    const r = await deps.backends.of(model).serve(model, serving, clientGone(reply.raw));
    req.observed!.result = r;
    checkAnswerFormat(format, r);
    return {
      ...head,
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: r.text, refusal: null }, logprobs: null, finish_reason: r.finishReason }],
      usage: usage(r),
    };
  });

  app.post("/v1/completions", async (req, reply) => {
    caller(auth, req);
    const body = parseCompletionRequest(req.body);
    const model = await resolve(req, body.model);
    const serving: ServingRequest = { kind: "completion", body };
    const id = `cmpl-${randomBytes(12).toString("hex")}`;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, object: "text_completion", created, model: body.model, system_fingerprint: null };
    const choice = (text: string, finish: string | null) => ({ index: 0, text, logprobs: null, finish_reason: finish });
    if (body.stream) {
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) => ({ ...head, choices, ...(includeUsage ? { usage: null } : {}), ...extra });
      return stream(req, reply, deps, model, serving, began(req, reply), {
        first: () => undefined,
        delta: (text) => chunk([choice(text, null)]),
        last: (r) => [chunk([choice("", r.finishReason)]), ...(includeUsage ? [chunk([], { usage: usage(r) })] : [])],
      });
    }
    const r = await deps.backends.of(model).serve(model, serving, clientGone(reply.raw));
    req.observed!.result = r;
    return { ...head, choices: [choice(r.text, r.finishReason)], usage: usage(r) };
  });

  return app;
}

/**
 * Answers with server-sent events: nothing is sent until the request holds a sequence (so a
 * full queue or a bad request is still an HTTP error), then the first event, one per piece of
 * text, the last ones, and `data: [DONE]`. An error after the first event is sent as an error event.
 */
async function stream(
  req: FastifyRequest,
  reply: FastifyReply,
  deps: HttpDeps,
  model: ResolvedModel,
  serving: ServingRequest,
  firstText: () => void,
  events: { check?(r: GenerationResult): void; first(): unknown; delta(text: string): unknown; last(r: GenerationResult): unknown[] },
): Promise<FastifyReply> {
  const res = reply.raw;
  const signal = clientGone(res);
  let started = false;
  const send = (data: unknown) => {
    if (data !== undefined && !res.destroyed) res.write(`data: ${JSON.stringify(data)}\n\n`);
  };
  const start = () => {
    if (started) return;
    started = true;
    reply.hijack();
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
    send(events.first());
  };
  try {
    const r = await deps.backends.of(model).serve(model, serving, signal, (text) => {
      start();
      firstText();
      send(events.delta(text));
    }, start);
    req.observed!.result = r;
    start();
    events.check?.(r);
    for (const e of events.last(r)) send(e);
  } catch (err) {
    if (!started) throw err;
    const oe = toOpenAiError(err);
    if (oe.status >= 500) deps.logger.error({ err }, "streamed request failed");
    send(oe.body());
  }
  if (!res.destroyed) res.end("data: [DONE]\n\n");
  return reply;
}
