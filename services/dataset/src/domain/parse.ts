import { ChatRole, type ChatMessage } from "@lathe/proto/lathe/type/v1/chat";
import { DatasetFormat } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { forbiddenCharProblem, withoutForbiddenChars } from "./control-chars.js";

/** A row in Lathe's one internal form: a conversation. */
export interface NormalRow {
  messages: ChatMessage[];
}

export type ParseResult = { ok: true; format: DatasetFormat; row: NormalRow } | { ok: false; reason: string };

const utf8 = new TextDecoder("utf-8", { fatal: true });

const roleOf: Record<string, ChatRole> = { system: ChatRole.CHAT_ROLE_SYSTEM, user: ChatRole.CHAT_ROLE_USER, assistant: ChatRole.CHAT_ROLE_ASSISTANT };

export const formatNames: Record<number, string> = {
  [DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES]: "chat messages",
  [DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT]: "instruction/output",
  [DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION]: "prompt/completion",
};

/** Which of the three formats a JSON object is in, by its keys. */
export function detectFormat(obj: Record<string, unknown>): DatasetFormat | undefined {
  if ("messages" in obj) return DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES;
  if ("instruction" in obj || "output" in obj) return DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT;
  if ("prompt" in obj || "completion" in obj) return DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION;
  return undefined;
}

function str(obj: Record<string, unknown>, key: string, required: boolean): string | { error: string } | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return required ? { error: `"${key}" is missing` } : undefined;
  if (typeof v !== "string") return { error: `"${key}" must be a string, not ${Array.isArray(v) ? "an array" : typeof v}` };
  if (required && v.trim() === "") return { error: `"${key}" is empty` };
  const bad = forbiddenCharProblem(key, v);
  if (bad) return { error: bad };
  return v;
}

/**
 * Parses one line: UTF-8, JSON, one of the three formats (the file's `format` when it is known,
 * else detected), and a conversation that makes sense (an optional system message first, then
 * user and assistant turns in turn, ending with the assistant, no empty turn), with no control
 * character or lone surrogate in any turn (see control-chars.ts). Every failure says what is
 * wrong in words a user can act on. It never throws, whatever the bytes.
 */
export function parseLine(bytes: Buffer, format: DatasetFormat): ParseResult {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return { ok: false, reason: "not valid UTF-8" };
  }
  // A raw control character is never valid JSON; saying which one helps more than JSON's error.
  const raw = forbiddenCharProblem("the line", text);
  if (raw) return { ok: false, reason: raw };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // V8 quotes the line in its message and may cut it inside a surrogate pair; so may we.
    return { ok: false, reason: `not valid JSON (${withoutForbiddenChars([...(err as Error).message.replace(/\s+/g, " ")].slice(0, 120).join(""))})` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { ok: false, reason: "not a JSON object" };
  const obj = value as Record<string, unknown>;
  const found = detectFormat(obj);
  if (found === undefined) return { ok: false, reason: 'in no known format: expected "messages", "instruction"/"output" or "prompt"/"completion"' };
  const want = format === DatasetFormat.DATASET_FORMAT_AUTO || format === DatasetFormat.DATASET_FORMAT_UNSPECIFIED ? found : format;
  if (found !== want) return { ok: false, reason: `in ${formatNames[found]} format, but the file is in ${formatNames[want]} format` };

  const messages: ChatMessage[] = [];
  if (want === DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES) {
    const raw = obj["messages"];
    if (!Array.isArray(raw)) return { ok: false, reason: '"messages" must be an array' };
    if (raw.length === 0) return { ok: false, reason: '"messages" is empty' };
    for (const [i, m] of raw.entries()) {
      if (typeof m !== "object" || m === null || Array.isArray(m)) return { ok: false, reason: `messages[${i}] is not an object` };
      const mm = m as Record<string, unknown>;
      const role = typeof mm["role"] === "string" ? roleOf[mm["role"]] : undefined;
      if (role === undefined) return { ok: false, reason: `messages[${i}].role must be "system", "user" or "assistant"` };
      if (typeof mm["content"] !== "string") return { ok: false, reason: `messages[${i}].content must be a string` };
      if (mm["content"].trim() === "") return { ok: false, reason: `messages[${i}] (${mm["role"] as string}) is empty` };
      const bad = forbiddenCharProblem(`messages[${i}].content`, mm["content"]);
      if (bad) return { ok: false, reason: bad };
      messages.push({ role, content: mm["content"] });
    }
  } else {
    const isInstruction = want === DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT;
    const fields = isInstruction ? (["instruction", "output"] as const) : (["prompt", "completion"] as const);
    const prompt = str(obj, fields[0], true);
    const answer = str(obj, fields[1], true);
    const system = str(obj, "system", false);
    const input = isInstruction ? str(obj, "input", false) : undefined;
    for (const v of [prompt, answer, system, input]) if (typeof v === "object") return { ok: false, reason: v.error };
    if (typeof system === "string" && system.trim() !== "") messages.push({ role: ChatRole.CHAT_ROLE_SYSTEM, content: system });
    const user = typeof input === "string" && input.trim() !== "" ? `${prompt as string}\n\n${input}` : (prompt as string);
    messages.push({ role: ChatRole.CHAT_ROLE_USER, content: user }, { role: ChatRole.CHAT_ROLE_ASSISTANT, content: answer as string });
  }
  const order = checkOrder(messages);
  if (order) return { ok: false, reason: order };
  return { ok: true, format: want, row: { messages } };
}

function checkOrder(messages: readonly ChatMessage[]): string | undefined {
  let i = 0;
  if (messages[0]?.role === ChatRole.CHAT_ROLE_SYSTEM) i = 1;
  if (i >= messages.length) return "the conversation has no user message";
  for (let expect = ChatRole.CHAT_ROLE_USER; i < messages.length; i++) {
    const role = messages[i]!.role;
    if (role === ChatRole.CHAT_ROLE_SYSTEM) return `messages[${i}] is a system message after the start of the conversation`;
    if (role !== expect) return `messages[${i}] is a second ${role === ChatRole.CHAT_ROLE_USER ? "user" : "assistant"} message in a row`;
    expect = expect === ChatRole.CHAT_ROLE_USER ? ChatRole.CHAT_ROLE_ASSISTANT : ChatRole.CHAT_ROLE_USER;
  }
  if (messages[messages.length - 1]!.role !== ChatRole.CHAT_ROLE_ASSISTANT) return "the conversation does not end with an assistant message";
  return undefined;
}

/** The prompt of a row (every user turn) and its answer (every assistant turn), for length checks and dedup. */
export function promptOf(row: NormalRow): string {
  return row.messages.filter((m) => m.role === ChatRole.CHAT_ROLE_USER).map((m) => m.content).join("\n");
}
export function answerOf(row: NormalRow): string {
  return row.messages.filter((m) => m.role === ChatRole.CHAT_ROLE_ASSISTANT).map((m) => m.content).join("\n");
}
/** The whole conversation as one text, for duplicate detection. */
export function conversationText(row: NormalRow): string {
  return row.messages.map((m) => m.content).join("\n");
}
