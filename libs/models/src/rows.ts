import type { ChatRole, ChatTurn } from "./tokenizer.js";

/**
 * The one parser of a training row, in any of the three JSONL formats users have: chat
 * `messages`; `instruction`/`output` (with an optional `input` and `system`); `prompt`/`completion`.
 * The dataset service checks uploaded lines with it, and tokenizeExample (hence the engine's
 * `train` and `lathe train`) checks examples with it, so each refuses the same rows, for the same
 * reason.
 */

/** The three formats, by the fields that mark them. */
export type RowFormat = "chat" | "instruction" | "prompt";

/** Each format's name in the words of a reason. */
export const rowFormatNames: Readonly<Record<RowFormat, string>> = {
  chat: "chat messages",
  instruction: "instruction/output",
  prompt: "prompt/completion",
};

/** A row in its normalized form, a conversation: the chat shape of TrainingExample. */
export interface ChatExample {
  messages: ChatTurn[];
}

/**
 * What is wrong with a row, for a caller that words it itself: `field` is the path of the value
 * at fault (`messages`, `messages[2].content`, `input`…), `got` the value found there.
 * - line: not UTF-8, a raw control character in the line, or not JSON (parseTrainingLine only);
 * - not-object, no-format (none of the formats' fields), other-format (not the file's format);
 * - type (`field` is not an array, object or string as it should be), role (not one of the three);
 * - missing (a required field is absent or null), empty (an empty or blank turn, or no messages);
 * - chars (a forbidden character, see findForbiddenChar);
 * - no-answer (no assistant turn at all), order (any other conversation out of turn).
 */
export interface RowProblem {
  kind: "line" | "not-object" | "no-format" | "other-format" | "type" | "role" | "missing" | "empty" | "chars" | "no-answer" | "order";
  field?: string;
  got?: unknown;
}

export type RowResult = { ok: true; format: RowFormat; example: ChatExample } | { ok: false; reason: string; problem: RowProblem };

export interface ParseRowOptions {
  /** The file's format, when it is known: a row in another is refused. Default: each row's own. */
  format?: RowFormat | undefined;
  /**
   * Accept an empty (or blank) assistant turn, which trains only its end token (default false:
   * refused like any empty turn). tokenizeExample accepts one, as it always has.
   */
  allowEmptyAnswer?: boolean | undefined;
}

/**
 * Characters no stored or trained text may hold:
 *
 * - NUL (U+0000): Postgres stores it in neither text nor jsonb, so a row holding it could not be
 *   kept at all;
 * - the other C0 controls except tab, line feed and carriage return (U+0001–U+0008, U+000B,
 *   U+000C, U+000E–U+001F): invisible, almost always left over from a broken extraction, and each
 *   tokenizer and chat template treats them differently;
 * - a lone surrogate (U+D800–U+DFFF without its other half, as a `\ud800` escape in JSON): not a
 *   character; it has no UTF-8 form and jsonb refuses it.
 *
 * Tab, line feed and carriage return are ordinary text. DEL and the C1 controls (U+007F–U+009F)
 * are kept as they are: Postgres keeps them, and mis-decoded Windows-1252 text is full of them.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const forbidden = /[\u0000-\u0008\u000B\u000C\u000E-\u001F]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const forbiddenAll = new RegExp(forbidden.source, "g");

/** `text` with each forbidden character replaced by U+FFFD: for text we write ourselves from a row, such as a JSON error that quotes it. */
export function withoutForbiddenChars(text: string): string {
  return text.replace(forbiddenAll, "\uFFFD");
}

/** The first forbidden character of `text`: its code point and its 1-based position in characters (code points). */
export function findForbiddenChar(text: string): { codePoint: number; character: number } | undefined {
  const m = forbidden.exec(text);
  if (!m) return undefined;
  return { codePoint: m[0].charCodeAt(0), character: [...text.slice(0, m.index)].length + 1 };
}

/** `what` (a field path, "the line", or "" for none) followed by what is wrong with it and what to do, or undefined when the text is clean. */
export function forbiddenCharProblem(what: string, text: string): string | undefined {
  const found = findForbiddenChar(text);
  if (!found) return undefined;
  const code = `U+${found.codePoint.toString(16).toUpperCase().padStart(4, "0")}`;
  const subject = what === "" ? "" : `${what} `;
  return found.codePoint >= 0xd800
    ? `${subject}contains a lone surrogate ${code} at character ${found.character}; remove it or fix the text's encoding`
    : `${subject}contains ${code} at character ${found.character}; remove control characters`;
}

/** Which of the three formats a JSON object is in, by its keys (`messages` first). */
export function detectRowFormat(obj: Readonly<Record<string, unknown>>): RowFormat | undefined {
  if ("messages" in obj) return "chat";
  if ("instruction" in obj || "output" in obj) return "instruction";
  if ("prompt" in obj || "completion" in obj) return "prompt";
  return undefined;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
const ROLES: ReadonlySet<unknown> = new Set<ChatRole>(["system", "user", "assistant"]);

type Failure = Extract<RowResult, { ok: false }>;
const fail = (reason: string, problem: RowProblem): Failure => ({ ok: false, reason, problem });

/**
 * Parses one JSONL line: UTF-8, no raw control character, JSON, then parseTrainingRow. It never
 * throws, whatever the bytes.
 */
export function parseTrainingLine(bytes: Uint8Array, opts: ParseRowOptions = {}): RowResult {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return fail("not valid UTF-8", { kind: "line" });
  }
  // A raw control character is never valid JSON; saying which one helps more than JSON's error.
  const raw = forbiddenCharProblem("the line", text);
  if (raw) return fail(raw, { kind: "line" });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // V8 quotes the line in its message and may cut it inside a surrogate pair; so may we.
    const message = withoutForbiddenChars([...(err as Error).message.replace(/\s+/g, " ")].slice(0, 120).join(""));
    return fail(`not valid JSON (${message})`, { kind: "line" });
  }
  return parseTrainingRow(value, opts);
}

/**
 * Checks one row, as it comes from JSON, and returns its conversation: one of the three formats
 * (`opts.format` when the file's is known, else detected), and a conversation that makes sense (an
 * optional system message first, then user and assistant turns in turn, ending with the
 * assistant, no empty turn), with no forbidden character in any turn (see findForbiddenChar).
 * instruction/output → [system?, user(instruction, + "\n\n" + input when there is one),
 * assistant(output)]; prompt/completion → [system?, user, assistant]; a blank `system` or `input`
 * counts as none. Every failure says what is wrong in words a user can act on. It never throws.
 */
export function parseTrainingRow(value: unknown, opts: ParseRowOptions = {}): RowResult {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return fail("not a JSON object", { kind: "not-object", got: value });
  const obj = value as Record<string, unknown>;
  const found = detectRowFormat(obj);
  if (found === undefined) return fail('in no known format: expected "messages", "instruction"/"output" or "prompt"/"completion"', { kind: "no-format" });
  const want = opts.format ?? found;
  if (found !== want) return fail(`in ${rowFormatNames[found]} format, but the file is in ${rowFormatNames[want]} format`, { kind: "other-format" });

  const messages = want === "chat" ? chatTurns(obj["messages"], opts) : fieldTurns(obj, want, opts);
  if (!Array.isArray(messages)) return messages;
  const order = checkOrder(messages);
  if (order) return order;
  return { ok: true, format: want, example: { messages } };
}

function chatTurns(raw: unknown, opts: ParseRowOptions): ChatTurn[] | Failure {
  if (!Array.isArray(raw)) return fail('"messages" must be an array', { kind: "type", field: "messages", got: raw });
  if (raw.length === 0) return fail('"messages" is empty', { kind: "empty", field: "messages" });
  const messages: ChatTurn[] = [];
  for (const [i, m] of raw.entries()) {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) return fail(`${at} is not an object`, { kind: "type", field: at, got: m });
    const { role, content } = m as Record<string, unknown>;
    if (!ROLES.has(role)) return fail(`${at}.role must be "system", "user" or "assistant"`, { kind: "role", field: `${at}.role`, got: role });
    if (typeof content !== "string") return fail(`${at}.content must be a string`, { kind: "type", field: `${at}.content`, got: content });
    const emptyAllowed = role === "assistant" && opts.allowEmptyAnswer === true;
    if (content.trim() === "" && !emptyAllowed) return fail(`${at} (${role as string}) is empty`, { kind: "empty", field: `${at}.content` });
    const bad = forbiddenCharProblem(`${at}.content`, content);
    if (bad) return fail(bad, { kind: "chars", field: `${at}.content` });
    messages.push({ role: role as ChatRole, content });
  }
  return messages;
}

function fieldTurns(obj: Record<string, unknown>, format: "instruction" | "prompt", opts: ParseRowOptions): ChatTurn[] | Failure {
  const [question, answerField] = format === "instruction" ? (["instruction", "output"] as const) : (["prompt", "completion"] as const);
  const prompt = text(obj, question, "required");
  const answer = text(obj, answerField, opts.allowEmptyAnswer === true ? "present" : "required");
  const system = text(obj, "system", "optional");
  const input = format === "instruction" ? text(obj, "input", "optional") : undefined;
  for (const v of [prompt, answer, system, input]) if (typeof v === "object") return v;
  const messages: ChatTurn[] = [];
  if (typeof system === "string" && system.trim() !== "") messages.push({ role: "system", content: system });
  const user = typeof input === "string" && input.trim() !== "" ? `${prompt as string}\n\n${input}` : (prompt as string);
  messages.push({ role: "user", content: user }, { role: "assistant", content: answer as string });
  return messages;
}

/** The string at `key`: "required" must be there and not blank, "present" there, "optional" may be absent (or null). */
function text(obj: Record<string, unknown>, key: string, need: "required" | "present" | "optional"): string | Failure | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return need === "optional" ? undefined : fail(`"${key}" is missing`, { kind: "missing", field: key });
  if (typeof v !== "string") return fail(`"${key}" must be a string, not ${Array.isArray(v) ? "an array" : typeof v}`, { kind: "type", field: key, got: v });
  if (need === "required" && v.trim() === "") return fail(`"${key}" is empty`, { kind: "empty", field: key });
  const bad = forbiddenCharProblem(key, v);
  if (bad) return fail(bad, { kind: "chars", field: key });
  return v;
}

function checkOrder(messages: readonly ChatTurn[]): Failure | undefined {
  let i = 0;
  if (messages[0]?.role === "system") i = 1;
  if (i >= messages.length) return fail("the conversation has no user message", { kind: "order" });
  for (let expect: ChatRole = "user"; i < messages.length; i++) {
    const role = messages[i]!.role;
    if (role === "system") return fail(`messages[${i}] is a system message after the start of the conversation`, { kind: "order" });
    if (role !== expect) return fail(`messages[${i}] is a second ${role} message in a row`, { kind: "order" });
    expect = expect === "user" ? "assistant" : "user";
  }
  if (messages[messages.length - 1]!.role !== "assistant") {
    const kind = messages.some((m) => m.role === "assistant") ? "order" : "no-answer";
    return fail("the conversation does not end with an assistant message", { kind });
  }
  return undefined;
}
