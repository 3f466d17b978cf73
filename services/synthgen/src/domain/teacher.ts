import { setTimeout as sleep } from "node:timers/promises";
import { AppError, resolveSecret } from "@lathe/kit";
import type { JobSpec, Turn } from "../db/migrations.js";

/** One answer of the teacher: its text and the tokens it reported. */
export interface TeacherAnswer {
  content: string;
  promptTokens: number;
  completionTokens: number;
  /** Why the endpoint returned no usable answer although the model answered. */
  refusal?: string;
}

/**
 * The JSON shape of one example, sent as `response_format` json_schema: the turns of the few-shot
 * examples' shape (a system message first when they have one, then a user and an assistant
 * message), each as long as the job's length checks ask, so that even a constrained small model
 * answers with something the checks can pass.
 */
export function exampleSchema(withSystem: boolean, minPrompt: number, minAnswer: number, maxTokens: number): Record<string, unknown> {
  // No turn longer than the answer's token budget could hold (a token is at least one character), so a constrained answer always closes.
  const maxLength = Math.max(minAnswer, Math.floor((maxTokens - 64) / (withSystem ? 3 : 2)));
  const turn = (role: string, minLength: number) => ({ type: "object", properties: { role: { const: role }, content: { type: "string", minLength, maxLength } }, required: ["role", "content"], additionalProperties: false });
  const turns = [...(withSystem ? [turn("system", 1)] : []), turn("user", minPrompt), turn("assistant", minAnswer)];
  return { type: "object", properties: { messages: { type: "array", prefixItems: turns, minItems: turns.length, maxItems: turns.length } }, required: ["messages"], additionalProperties: false };
}

/** Spaces requests `60 000 / rpm` ms apart (none when rpm is 0). */
class Pacer {
  private next = 0;
  constructor(private readonly rpm: number) {}
  async wait(signal: AbortSignal): Promise<void> {
    if (this.rpm <= 0) return;
    const now = Date.now();
    const at = Math.max(now, this.next);
    this.next = at + 60_000 / this.rpm;
    if (at > now) await sleep(at - now, undefined, { signal });
  }
}

/**
 * A teacher model behind an OpenAI-compatible chat completions endpoint. Each request asks for
 * one example as JSON; `response_format` json_schema first, json_object once an endpoint refuses
 * the schema. 429 and 5xx (and no answer) are retried with exponential backoff and full jitter,
 * honouring Retry-After; a 4xx is the job's end (a wrong model, a refused key). The key is read
 * from its secret reference for each request and appears in no error, log or event.
 */
export class Teacher {
  private schemaRefused = false;
  private readonly pacer: Pacer;

  constructor(
    private readonly t: JobSpec["teacher"],
    private readonly retry: { attempts: number; backoffMs: number },
    private readonly schema: Record<string, unknown>,
  ) {
    this.pacer = new Pacer(t.requestsPerMinute);
  }

  async ask(messages: Turn[], g: JobSpec["generation"], signal: AbortSignal): Promise<TeacherAnswer> {
    const key = await resolveSecret(this.t.apiKeySecret, "the teacher's API key");
    let last = "";
    for (let attempt = 0; attempt < this.retry.attempts; attempt++) {
      await this.pacer.wait(signal);
      const body = {
        model: this.t.model,
        messages,
        temperature: g.temperature,
        top_p: g.topP,
        max_tokens: g.maxTokens,
        ...(g.seed === null ? {} : { seed: g.seed }),
        response_format: this.schemaRefused ? { type: "json_object" } : { type: "json_schema", json_schema: { name: "chat_example", schema: this.schema, strict: true } },
      };
      let res: Response;
      try {
        res = await fetch(`${this.t.baseUrl}/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...(key === "" ? {} : { authorization: `Bearer ${key}` }) }, body: JSON.stringify(body), signal });
      } catch (err) {
        if (signal.aborted) throw err;
        last = `the teacher ${this.t.baseUrl} does not answer: ${causeOf(err)}`;
        await this.backoff(attempt, undefined, signal);
        continue;
      }
      const text = await res.text();
      if (res.ok) {
        const a = JSON.parse(text) as { choices?: { message?: { content?: string | null } }[]; usage?: { prompt_tokens?: number; completion_tokens?: number } };
        return { content: a.choices?.[0]?.message?.content ?? "", promptTokens: a.usage?.prompt_tokens ?? 0, completionTokens: a.usage?.completion_tokens ?? 0 };
      }
      // An endpoint may quote the key it refused: it never leaves here.
      const message = key === "" ? messageOf(text) : messageOf(text).replaceAll(key, "[the key]");
      if (res.status === 400 && !this.schemaRefused && /response_format|json_schema|schema/i.test(message)) {
        // An endpoint without structured outputs: JSON mode, with the shape asked for in the prompt.
        this.schemaRefused = true;
        attempt--;
        continue;
      }
      // Lathe's gateway answers 500 invalid_model_output when the model's answer broke the schema:
      // an answer, if an unusable one, counted as malformed rather than asked again.
      if (res.status >= 500 && codeOf(text) === "invalid_model_output") return { content: "", promptTokens: 0, completionTokens: 0, refusal: message };
      if (res.status === 429 || res.status >= 500) {
        last = `the teacher answered ${res.status}: ${message}`;
        await this.backoff(attempt, res.headers.get("retry-after"), signal);
        continue;
      }
      if (res.status === 401 || res.status === 403) throw new AppError("FAILED_PRECONDITION", "TEACHER_REFUSED_KEY", `the teacher ${this.t.baseUrl} refused the API key (${res.status}); check teacher.api_key_secret`);
      throw new AppError("FAILED_PRECONDITION", "TEACHER_REFUSED_REQUEST", `the teacher ${this.t.baseUrl} refused the request (${res.status}): ${message}`);
    }
    throw new AppError("UNAVAILABLE", "TEACHER_UNREACHABLE", `${last} (after ${this.retry.attempts} attempts)`);
  }

  private async backoff(attempt: number, retryAfter: string | null | undefined, signal: AbortSignal): Promise<void> {
    const s = Number(retryAfter ?? "");
    const ms = Number.isFinite(s) && s > 0 ? s * 1000 : Math.random() * this.retry.backoffMs * 2 ** attempt;
    await sleep(Math.min(ms, 60_000), undefined, { signal });
  }
}

const causeOf = (err: unknown) => (err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err));

function codeOf(text: string): string | undefined {
  try {
    const c = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
    return typeof c === "string" ? c : undefined;
  } catch {
    return undefined;
  }
}

function messageOf(text: string): string {
  try {
    const j = JSON.parse(text) as { error?: { message?: string } | string; message?: string };
    if (typeof j.error === "object" && typeof j.error.message === "string") return j.error.message;
    if (typeof j.error === "string") return j.error;
    if (typeof j.message === "string") return j.message;
  } catch {
    // not JSON
  }
  return text.slice(0, 300);
}
