import { AppError, resolveSecret } from "@lathe/kit";
import type { GenerationResult } from "./embedded.js";
import { OpenAiError } from "./errors.js";

/**
 * An OpenAI-compatible server the gateway forwards to: vLLM (with runtime LoRA loading, so a
 * deployment's adapters are loaded and unloaded over its API) or a hosted API. Requests keep
 * their OpenAI body with the model name mapped; answers come back as the gateway's own
 * (usage from the upstream), streamed or not.
 */

const unreachable = (baseUrl: string, err: unknown) =>
  new AppError("UNAVAILABLE", "UPSTREAM_UNREACHABLE", `the upstream ${baseUrl} does not answer: ${err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err)}`);

/** The error message of an upstream's error body (OpenAI's `{error:{message}}` or vLLM's `{message}`), else the text. */
function messageOf(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown };
    if (typeof j.error === "object" && typeof j.error?.message === "string") return j.error.message;
    if (typeof j.message === "string") return j.message;
    if (typeof j.error === "string") return j.error;
  } catch {
    // not JSON: the text itself
  }
  return text.slice(0, 500);
}

export class UpstreamClient {
  constructor(
    readonly baseUrl: string,
    private readonly apiKeySecret: string,
  ) {}

  private async fetch(path: string, init: { method: string; body?: unknown; signal?: AbortSignal }): Promise<Response> {
    const key = await resolveSecret(this.apiKeySecret, "the upstream API key");
    try {
      return await fetch(`${this.baseUrl}${path}`, {
        method: init.method,
        headers: { ...(key === "" ? {} : { authorization: `Bearer ${key}` }), ...(init.body === undefined ? {} : { "content-type": "application/json" }) },
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
        signal: init.signal ?? AbortSignal.timeout(60_000),
      });
    } catch (err) {
      if (init.signal?.aborted) throw err;
      throw unreachable(this.baseUrl, err);
    }
  }

  /** The model ids the upstream serves now (bases and loaded adapters). */
  async models(): Promise<string[]> {
    const res = await this.fetch("/models", { method: "GET" });
    const text = await res.text();
    if (res.status === 401 || res.status === 403) throw new AppError("FAILED_PRECONDITION", "UPSTREAM_UNAUTHORIZED", `the upstream ${this.baseUrl} refused the gateway's key (${res.status}): check upstream_api_key_secret`);
    if (!res.ok) throw new AppError("UNAVAILABLE", "UPSTREAM_ERROR", `GET ${this.baseUrl}/models answered ${res.status}: ${messageOf(text)}`);
    const body = JSON.parse(text) as { data?: { id?: unknown }[] };
    return (body.data ?? []).map((m) => m.id).filter((id): id is string => typeof id === "string");
  }

  /**
   * Loads a LoRA adapter from a PEFT folder the upstream can read at `path` (vLLM's
   * `/v1/load_lora_adapter`). What vLLM needs for it and lacks is named in the error.
   */
  async loadLora(name: string, path: string, rank: number): Promise<void> {
    const res = await this.fetch("/load_lora_adapter", { method: "POST", body: { lora_name: name, lora_path: path } });
    if (res.ok) return;
    const message = messageOf(await res.text());
    if (res.status === 404 || res.status === 405) {
      throw new AppError(
        "FAILED_PRECONDITION",
        "UPSTREAM_LORA_LOADING_DISABLED",
        `the upstream ${this.baseUrl} does not load LoRA adapters at run time (POST /load_lora_adapter answered ${res.status}): start vLLM with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`,
      );
    }
    if (/already (been )?loaded/i.test(message)) return;
    if (/rank/i.test(message)) {
      throw new AppError("FAILED_PRECONDITION", "UPSTREAM_LORA_RANK_TOO_HIGH", `the upstream ${this.baseUrl} cannot load an adapter of rank ${rank}: ${message}. Start vLLM with --max-lora-rank ${rank} or more`);
    }
    if (/not enabled|enable[-_ ]lora/i.test(message)) {
      throw new AppError("FAILED_PRECONDITION", "UPSTREAM_LORA_DISABLED", `the upstream ${this.baseUrl} has LoRA disabled: ${message}. Start vLLM with --enable-lora`);
    }
    throw new AppError("FAILED_PRECONDITION", "UPSTREAM_LORA_LOAD_FAILED", `the upstream ${this.baseUrl} could not load the adapter from ${path} (${res.status}): ${message}`);
  }

  /** Unloads an adapter; one the upstream does not hold (any more) is fine. */
  async unloadLora(name: string): Promise<void> {
    const res = await this.fetch("/unload_lora_adapter", { method: "POST", body: { lora_name: name } });
    if (res.ok || res.status === 404 || res.status === 400) {
      await res.body?.cancel();
      return;
    }
    throw new AppError("UNAVAILABLE", "UPSTREAM_ERROR", `the upstream ${this.baseUrl} could not unload ${name} (${res.status}): ${messageOf(await res.text())}`);
  }

  /**
   * One chat completion (`path` `/chat/completions`) or completion (`/completions`) with the
   * request's OpenAI body and the upstream's model name; streamed from the upstream when
   * `onText` is given. The upstream's HTTP errors come back as OpenAI errors with its status.
   */
  async generate(path: "/chat/completions" | "/completions", body: Record<string, unknown>, signal: AbortSignal, onText?: (delta: string) => void, onStart?: () => void): Promise<GenerationResult> {
    const streaming = onText !== undefined;
    const res = await this.fetch(path, { method: "POST", signal, body: { ...body, stream: streaming, ...(streaming ? { stream_options: { include_usage: true } } : { stream_options: undefined }) } });
    if (!res.ok) {
      const message = messageOf(await res.text());
      const retry = Number(res.headers.get("retry-after") ?? "");
      if (res.status === 429) throw new OpenAiError(429, "rate_limit_error", `the upstream is busy: ${message}`, "rate_limit_exceeded", null, Number.isFinite(retry) && retry > 0 ? retry : 1);
      if (res.status >= 400 && res.status < 500 && res.status !== 401 && res.status !== 403) throw new OpenAiError(res.status, "invalid_request_error", message, "upstream_error");
      throw new OpenAiError(502, "server_error", `the upstream answered ${res.status}: ${message}`, "upstream_error");
    }
    const choiceText = (c: { message?: { content?: unknown }; text?: unknown; delta?: { content?: unknown } } | undefined) => {
      const t = c?.delta?.content ?? c?.message?.content ?? c?.text;
      return typeof t === "string" ? t : "";
    };
    type Usage = { prompt_tokens?: number; completion_tokens?: number } | null | undefined;
    type Answer = { choices?: { finish_reason?: string | null; message?: { content?: unknown }; text?: unknown; delta?: { content?: unknown } }[]; usage?: Usage };
    const finish = (reason: string | null | undefined): GenerationResult["finishReason"] => (reason === "length" ? "length" : "stop");
    if (!streaming) {
      const a = (await res.json()) as Answer;
      const c = a.choices?.[0];
      return { text: choiceText(c), finishReason: finish(c?.finish_reason), promptTokens: a.usage?.prompt_tokens ?? 0, completionTokens: a.usage?.completion_tokens ?? 0 };
    }
    onStart?.();
    let text = "";
    let reason: string | null | undefined;
    let usage: Usage;
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const bytes of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(bytes, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data) as Answer & { error?: { message?: string } };
          if (chunk.error) throw new OpenAiError(502, "server_error", `the upstream failed mid-answer: ${chunk.error.message ?? "unknown error"}`, "upstream_error");
          const c = chunk.choices?.[0];
          const piece = choiceText(c);
          if (piece !== "") {
            text += piece;
            onText(piece);
          }
          if (c?.finish_reason) reason = c.finish_reason;
          if (chunk.usage) usage = chunk.usage;
        }
      }
    }
    return { text, finishReason: finish(reason), promptTokens: usage?.prompt_tokens ?? 0, completionTokens: usage?.completion_tokens ?? 0 };
  }
}
