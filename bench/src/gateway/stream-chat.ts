import { Agent, request } from "node:http";

/** Times of one generation, in milliseconds from its start (the request sent, or `evaluate` called). */
export interface GenerationTiming {
  /** The first token: through the gateway, the first SSE chunk with content (not the role-only one). */
  firstMs: number;
  /** The last token (through the gateway, the last chunk with content). */
  lastMs: number;
  /** The whole generation: through the gateway up to `[DONE]`, directly up to the sequence's disposal. */
  totalMs: number;
  /** Tokens generated. */
  tokens: number;
  text: string;
}

/** What the gateway said beyond the timing: its usage counts. */
export interface StreamedChat extends GenerationTiming {
  /**
   * The response's head, which the gateway sends once the request holds a sequence, just before
   * generation starts: the time its request path takes (HTTP, the registry lookup, the prompt).
   */
  headMs: number;
  promptTokens: number;
  finishReason: string;
}

interface Chunk {
  choices?: { delta?: { content?: string }; finish_reason?: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number } | null;
  error?: { message: string };
}

/** How the client reads the stream: node:http (light), or fetch (web streams, more work per chunk). */
export type ClientKind = "http" | "fetch";

const keepAlive = new Agent({ keepAlive: true });

/**
 * A streaming chat completion, its server-sent events read as they arrive; times are taken when
 * the bytes of an event are read, from just before the request is sent. The client shares this
 * process with the gateway, so `client` picks the lighter reader by default.
 */
export async function streamChat(url: string, apiKey: string, body: Record<string, unknown>, client: ClientKind = "http"): Promise<StreamedChat> {
  const payload = JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } });
  const headers = { "content-type": "application/json", authorization: `Bearer ${apiKey}` };
  const start = performance.now();
  const out: StreamedChat = { headMs: NaN, firstMs: NaN, lastMs: NaN, totalMs: NaN, tokens: 0, text: "", promptTokens: 0, finishReason: "" };
  const events = new EventReader(out, start);
  if (client === "fetch") {
    const res = await fetch(`${url}/v1/chat/completions`, { method: "POST", headers, body: payload });
    out.headMs = performance.now() - start;
    if (!res.ok || res.body === null) throw new Error(`the gateway answered ${res.status}: ${await res.text()}`);
    const decoder = new TextDecoder();
    for await (const bytes of res.body) events.push(decoder.decode(bytes, { stream: true }));
  } else {
    await new Promise<void>((resolve, reject) => {
      const req = request(`${url}/v1/chat/completions`, { method: "POST", headers, agent: keepAlive }, (res) => {
        out.headMs = performance.now() - start;
        res.setEncoding("utf8");
        if (res.statusCode !== 200) {
          let text = "";
          res.on("data", (d: string) => (text += d));
          res.on("end", () => reject(new Error(`the gateway answered ${res.statusCode}: ${text}`)));
          return;
        }
        res.on("data", (d: string) => {
          try {
            events.push(d);
          } catch (err) {
            res.destroy();
            reject(err);
          }
        });
        res.on("end", resolve);
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end(payload);
    });
  }
  out.totalMs = performance.now() - start;
  if (!events.done) throw new Error("the gateway's stream ended without [DONE]");
  if (Number.isNaN(out.firstMs)) throw new Error("the gateway's stream carried no content");
  return out;
}

/** Splits server-sent events out of the stream's text and records what they carry, and when. */
class EventReader {
  done = false;
  private buffered = "";

  constructor(
    private readonly out: StreamedChat,
    private readonly start: number,
  ) {}

  push(text: string): void {
    const now = performance.now() - this.start;
    this.buffered += text;
    let end;
    while ((end = this.buffered.indexOf("\n\n")) >= 0) {
      const event = this.buffered.slice(0, end);
      this.buffered = this.buffered.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") {
          this.done = true;
          continue;
        }
        const chunk = JSON.parse(data) as Chunk;
        if (chunk.error) throw new Error(`the gateway's stream failed: ${chunk.error.message}`);
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) {
          if (Number.isNaN(this.out.firstMs)) this.out.firstMs = now;
          this.out.lastMs = now;
          this.out.text += choice.delta.content;
        }
        if (choice?.finish_reason) this.out.finishReason = choice.finish_reason;
        if (chunk.usage) {
          this.out.tokens = chunk.usage.completion_tokens;
          this.out.promptTokens = chunk.usage.prompt_tokens;
        }
      }
    }
  }
}

/** A POST of JSON, its answer read whole (for requests the gateway refuses). */
export async function postJson(url: string, apiKey: string, body: Record<string, unknown>, client: ClientKind = "http"): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body);
  const headers = { "content-type": "application/json", authorization: `Bearer ${apiKey}` };
  if (client === "fetch") {
    const res = await fetch(url, { method: "POST", headers, body: payload });
    return { status: res.status, text: await res.text() };
  }
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers, agent: keepAlive }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(payload);
  });
}
