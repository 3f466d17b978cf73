// The console's calls: the facade over the services' gRPC (`/console/api/{service}/{Method}`,
// proto3 JSON) and the OpenAI-compatible `/v1/chat/completions`, always with the key in the
// Authorization header. The key lives in sessionStorage (gone when the tab closes), never in a URL.

const KEY = "lathe.console.apiKey";

export function storedKey(): string | null {
  return sessionStorage.getItem(KEY);
}
export function storeKey(key: string): void {
  sessionStorage.setItem(KEY, key);
}
export function forgetKey(): void {
  sessionStorage.removeItem(KEY);
}

/** An error answered by the gateway, with the service's canonical code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Called when a call is answered 401: the stored key no longer works. */
let onUnauthenticated: () => void = () => undefined;
export function setUnauthenticatedHandler(f: () => void): void {
  onUnauthenticated = f;
}

function headers(key: string | null = storedKey()): Record<string, string> {
  return { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) };
}

async function errorOf(res: Response): Promise<ApiError> {
  const text = await res.text();
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    return new ApiError(res.status, body.error?.code ?? String(res.status), body.error?.message ?? text);
  } catch {
    return new ApiError(res.status, String(res.status), text || res.statusText);
  }
}

/** The tenant of a key, or ApiError (401 for a key the gateway does not know). */
export async function checkKey(key: string): Promise<string> {
  const res = await fetch("/console/api/session", { headers: headers(key) });
  if (!res.ok) throw await errorOf(res);
  return ((await res.json()) as { tenant: string }).tenant;
}

/** Calls `service/Method` with a request in proto3 JSON; the response in proto3 JSON. */
export async function rpc<T>(service: string, method: string, request: object = {}): Promise<T> {
  const res = await fetch(`/console/api/${service}/${method}`, { method: "POST", headers: headers(), body: JSON.stringify(request) });
  if (res.status === 401) onUnauthenticated();
  if (!res.ok) throw await errorOf(res);
  return (await res.json()) as T;
}

/** Reads server-sent events from a response body, calling `onEvent` per event. */
async function readEvents(res: Response, onEvent: (event: string, data: string) => void): Promise<void> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut: number;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) onEvent(event, data.join("\n"));
    }
  }
}

/**
 * Follows a Watch method: `onMessage` per message until the resource ends or `signal` aborts.
 * Resolves when the stream ends; rejects with ApiError on an error.
 */
export async function watch<T>(service: string, method: string, request: object, onMessage: (m: T) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch(`/console/api/${service}/${method}`, { method: "POST", headers: headers(), body: JSON.stringify(request), signal });
  if (res.status === 401) onUnauthenticated();
  if (!res.ok) throw await errorOf(res);
  let failure: ApiError | undefined;
  await readEvents(res, (event, data) => {
    if (event === "message") onMessage(JSON.parse(data) as T);
    else if (event === "error") {
      const e = (JSON.parse(data) as { error: { code: string; message: string } }).error;
      failure = new ApiError(500, e.code, e.message);
    }
  });
  if (failure) throw failure;
}

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** One streamed chat completion from the OpenAI-compatible API; `onText` per piece of the answer. */
export async function chat(model: string, messages: ChatMessage[], maxTokens: number, onText: (text: string) => void, signal: AbortSignal): Promise<string> {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify({ model, messages, stream: true, max_tokens: maxTokens }),
    signal,
  });
  if (res.status === 401) onUnauthenticated();
  if (!res.ok) {
    const text = await res.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { error: { message: string } }).error.message;
    } catch {
      // not OpenAI's error shape: the text as it came
    }
    throw new ApiError(res.status, String(res.status), message);
  }
  let finish = "";
  await readEvents(res, (_event, data) => {
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data) as { choices?: { delta?: { content?: string }; finish_reason?: string | null }[]; error?: { message: string } };
    if (chunk.error) throw new ApiError(500, "stream", chunk.error.message);
    const choice = chunk.choices?.[0];
    if (choice?.delta?.content) onText(choice.delta.content);
    if (choice?.finish_reason) finish = choice.finish_reason;
  });
  return finish;
}

/** A model the caller may call on the OpenAI-compatible API. */
export async function listModels(): Promise<{ id: string; owned_by: string; parent?: string }[]> {
  const res = await fetch("/v1/models", { headers: headers() });
  if (!res.ok) throw await errorOf(res);
  return ((await res.json()) as { data: { id: string; owned_by: string; parent?: string }[] }).data;
}
