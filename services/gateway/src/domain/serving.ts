import type { EmbeddedBackend, GenerationResult } from "./embedded.js";
import { OpenAiError } from "./errors.js";
import type { ResponseFormat } from "./json-schema.js";
import type { ResolvedModel } from "./registry.js";
import type { ChatRequest, CompletionRequest } from "./requests.js";
import { UpstreamClient } from "./upstream.js";

/** A request as the HTTP API parsed it: a chat (with the answer's format) or a completion, in OpenAI's fields. */
export type ServingRequest = { kind: "chat"; body: ChatRequest; format: ResponseFormat } | { kind: "completion"; body: CompletionRequest };

/**
 * Checks a JSON answer against the format the request asked for (the caller's own schema, with
 * ajv), whichever backend wrote it; an answer cut short by max_tokens (finish_reason `length`) is
 * returned as it is, as OpenAI does.
 * @throws OpenAiError 500 `invalid_model_output` naming the first place it fails
 */
export function checkAnswerFormat(format: ResponseFormat, r: GenerationResult): void {
  if (format.kind === "text" || r.finishReason !== "stop") return;
  let value: unknown;
  try {
    value = JSON.parse(r.text);
  } catch {
    throw new OpenAiError(500, "server_error", "The model's answer is not valid JSON although a JSON response_format was requested.", "invalid_model_output");
  }
  const violations = format.validate(value);
  if (violations.length > 0) {
    const v = violations[0]!;
    throw new OpenAiError(500, "server_error", `The model's answer does not match the requested schema: ${v.instancePath || "the answer"} ${v.message}.`, "invalid_model_output");
  }
}

/**
 * Where answers are computed. `onText` gets the answer as it grows (streaming), `onStart` is
 * called once the request is past any queue (so a full queue is still an HTTP error); aborting
 * `signal` ends the generation.
 */
export interface ServingBackend {
  serve(m: ResolvedModel, req: ServingRequest, signal: AbortSignal, onText?: (delta: string) => void, onStart?: () => void): Promise<GenerationResult>;
}

/** The backend that answers for a model: its deployment's upstream, else embedded llama.cpp. */
export class Backends {
  readonly upstream = new UpstreamBackend();
  constructor(readonly embedded: EmbeddedBackend) {}

  of(m: ResolvedModel): ServingBackend {
    return m.route?.backend === "upstream" ? this.upstream : this.embedded;
  }
}

/** The OpenAI fields forwarded upstream (what the gateway parsed and checked, nothing else). */
const FORWARDED = ["messages", "prompt", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "n", "response_format"] as const;

/** Requests forwarded to an OpenAI-compatible server with the model name its deployment maps to. */
export class UpstreamBackend implements ServingBackend {
  async serve(m: ResolvedModel, req: ServingRequest, signal: AbortSignal, onText?: (delta: string) => void, onStart?: () => void): Promise<GenerationResult> {
    const route = m.route;
    if (route?.backend !== "upstream") throw new OpenAiError(500, "server_error", "The server had an error while processing your request.", "internal_error");
    const body: Record<string, unknown> = { model: route.upstreamModel };
    for (const k of FORWARDED) {
      const v = (req.body as Record<string, unknown>)[k];
      if (v !== undefined && v !== null) body[k] = v;
    }
    const client = new UpstreamClient(route.baseUrl, route.apiKeySecret);
    return client.generate(req.kind === "chat" ? "/chat/completions" : "/completions", body, signal, onText, onStart);
  }
}
