import { setTimeout as sleep } from "node:timers/promises";
import { AppError, traceHeaders } from "@lathe/kit";
import type { ChatTurn, RunSpec } from "../db/migrations.js";

/** One generated answer, as the gateway reported it. */
export interface Answer {
  text: string;
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
  latencyMs: number;
}

/** An example the gateway refused (a prompt longer than the context, say): recorded on the example, the run goes on. */
export class ExampleRefused extends Error {
  override readonly name = "ExampleRefused";
}

const RETRIES = 6;

/**
 * Chat completions through the gateway's OpenAI-compatible API, with the key of the run's
 * tenant. A refusal of this one example (400) is an ExampleRefused; a model the key cannot see
 * (404) or a refused key (401/403) fails the run; a busy or unreachable gateway (429, 5xx, no
 * answer) is retried with backoff (honouring Retry-After) and then fails the attempt as
 * UNAVAILABLE, so the run is taken up again later.
 */
export class GatewayClient {
  constructor(
    private readonly baseUrl: () => string,
    private readonly keyOf: (tenant: string) => string,
    /** Who answers, in errors: the gateway, or a judge's server. */
    private readonly who = "the gateway",
  ) {}

  async chat(tenant: string, model: string, turns: readonly ChatTurn[], g: RunSpec["generation"], signal: AbortSignal): Promise<Answer> {
    const body = JSON.stringify({ model, messages: turns, temperature: g.temperature, top_p: g.topP, max_tokens: g.maxTokens, seed: g.seed, ...(g.stop.length > 0 ? { stop: g.stop } : {}) });
    let last = "";
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      const started = performance.now();
      let res: Response;
      try {
        res = await fetch(`${this.baseUrl()}/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${this.keyOf(tenant)}`, ...traceHeaders() }, body, signal });
      } catch (err) {
        if (signal.aborted) throw err;
        last = `${this.who} does not answer: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`;
        await sleep(Math.min(8000, 250 * 2 ** attempt), undefined, { signal });
        continue;
      }
      const text = await res.text();
      if (res.ok) {
        const a = JSON.parse(text) as { choices: { message: { content: string | null }; finish_reason: string }[]; usage?: { prompt_tokens?: number; completion_tokens?: number } };
        return {
          text: a.choices[0]?.message.content ?? "",
          finishReason: a.choices[0]?.finish_reason ?? "stop",
          promptTokens: a.usage?.prompt_tokens ?? 0,
          completionTokens: a.usage?.completion_tokens ?? 0,
          latencyMs: performance.now() - started,
        };
      }
      const message = messageOf(text);
      if (res.status === 400) throw new ExampleRefused(message);
      if (res.status === 404) throw new AppError("FAILED_PRECONDITION", "MODEL_NOT_SERVED", `${this.who} does not serve ${model}: ${message}`);
      if (res.status === 401 || res.status === 403) throw new AppError("FAILED_PRECONDITION", "GATEWAY_REFUSED_KEY", `${this.who} refused the key: ${message}`);
      last = `${this.who} answered ${res.status}: ${message}`;
      const retryAfter = Number(res.headers.get("retry-after") ?? "");
      await sleep(Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : Math.min(8000, 250 * 2 ** attempt), undefined, { signal });
    }
    throw new AppError("UNAVAILABLE", "GATEWAY_UNAVAILABLE", last);
  }
}

function messageOf(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: { message?: string } };
    if (typeof j.error?.message === "string") return j.error.message;
  } catch {
    // not JSON
  }
  return text.slice(0, 300);
}
