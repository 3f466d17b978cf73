import { Command, Option } from "commander";
import { resolveConnection, withConnection, type ConnectionOptions } from "../connection.js";
import { number, positiveInt } from "../flags.js";
import { printJson } from "../output.js";

export type ChatOptions = ConnectionOptions & { http?: string; system?: string; maxTokens?: number; temperature?: number };

/**
 * The gateway's HTTP base URL (without `/v1`): `--http`, else LATHE_HTTP_URL, else the port after
 * the gRPC server's (`--server`, LATHE_SERVER, the local `lathe up`), where `lathe up` serves it by default.
 */
export function httpBaseOf(o: ChatOptions, env: NodeJS.ProcessEnv = process.env): string {
  const given = o.http ?? env["LATHE_HTTP_URL"];
  if (given !== undefined && given !== "") return given.replace(/\/+$/, "").replace(/\/v1$/, "");
  const server = resolveConnection(o, env).server.replace(/^[a-z]+:\/\//, "");
  const m = /^(.*):(\d+)$/.exec(server);
  if (m === null) throw new Error(`--server ${server}: expected host:port (or give the HTTP API's address with --http URL)`);
  return `http://${m[1]}:${Number(m[2]) + 1}`;
}

interface OpenAiErrorBody {
  error?: { message?: string; code?: string | null };
}

/** The server's OpenAI error as an Error carrying its message (and code). */
function serverError(body: OpenAiErrorBody | undefined, fallback: string): Error {
  const e = body?.error;
  return new Error(e?.message ? `${e.message}${e.code ? ` (${e.code})` : ""}` : fallback);
}

/** The `data:` payloads of a server-sent event stream, as they arrive. */
async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const events = function* (final: boolean): Generator<string> {
    const parts = buffered.split(/\r?\n\r?\n/);
    buffered = final ? "" : parts.pop()!;
    for (const event of parts) {
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length > 0) yield data.join("\n");
    }
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    yield* events(false);
  }
  buffered += decoder.decode();
  yield* events(true);
}

/**
 * `lathe chat MODEL MESSAGE`: asks the gateway's OpenAI-compatible API and streams the answer to
 * stdout (with `--json`, prints the whole completion object instead). A server error prints its
 * OpenAI error message and exits 1.
 */
export async function chat(model: string, message: string, o: ChatOptions, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const base = httpBaseOf(o);
  const { apiKey } = resolveConnection(o);
  const stream = o.json !== true;
  const body = {
    model,
    messages: [...(o.system !== undefined ? [{ role: "system", content: o.system }] : []), { role: "user", content: message }],
    ...(o.maxTokens !== undefined ? { max_tokens: o.maxTokens } : {}),
    ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
    stream,
  };
  let res: Response;
  try {
    res = await fetch(`${base}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: stream ? "text/event-stream" : "application/json", ...(apiKey !== undefined ? { authorization: `Bearer ${apiKey}` } : {}) },
      body: JSON.stringify(body),
    });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new Error(`cannot reach the gateway's HTTP API at ${base}: ${cause} (is \`lathe up\` running? give its address with --http URL or LATHE_HTTP_URL)`);
  }
  if (!res.ok) {
    const text = await res.text();
    let parsed: OpenAiErrorBody | undefined;
    try {
      parsed = JSON.parse(text) as OpenAiErrorBody;
    } catch {
      parsed = undefined;
    }
    throw serverError(parsed, `the gateway answered HTTP ${res.status}: ${text.slice(0, 500)}`);
  }
  if (!stream) {
    printJson(await res.json(), out);
    return;
  }
  if (res.body === null) throw new Error("the gateway sent no answer");
  let wrote = "";
  for await (const data of sseData(res.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data) as OpenAiErrorBody & { choices?: { delta?: { content?: string | null } }[] };
    if (chunk.error !== undefined) {
      if (wrote !== "" && !wrote.endsWith("\n")) out.write("\n");
      throw serverError(chunk, "the answer broke off");
    }
    const text = chunk.choices?.[0]?.delta?.content;
    if (text) {
      out.write(text);
      wrote += text.slice(-1);
    }
  }
  if (!wrote.endsWith("\n")) out.write("\n");
}

export function chatCommand(): Command {
  return withConnection(
    new Command("chat")
      .description("chat with a model or adapter through the gateway's OpenAI-compatible API, streaming the answer")
      .argument("<model>", "model name: BASE, BASE:ADAPTER, BASE:ADAPTER@VERSION or BASE:ADAPTER@ALIAS")
      .argument("<message>", "the user's message")
      .option("--http <url>", "the gateway's HTTP API (default: LATHE_HTTP_URL, else the port after --server's, as `lathe up` serves it)")
      .option("--system <text>", "a system message before the user's")
      .option("--max-tokens <n>", "most tokens to generate", positiveInt("max-tokens"))
      .addOption(new Option("--temperature <t>", "sampling temperature, 0 to 2 (0: greedy)").argParser(number("temperature", (n) => n >= 0 && n <= 2, "a number from 0 to 2"))),
  ).action(async (model: string, message: string, o: ChatOptions) => chat(model, message, o));
}
