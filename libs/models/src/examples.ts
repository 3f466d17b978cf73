import type { ChatRole, ChatTurn, ModelTokenizer } from "./tokenizer.js";

/** One training example in any of the three JSONL shapes users have. */
export type TrainingExample =
  | { messages: { role: "system" | "user" | "assistant"; content: string }[] }
  | { instruction: string; output: string; input?: string; system?: string }
  | { prompt: string; completion: string };

export interface TokenizedExample {
  ids: number[];
  /** The id at each position where it is trained, -100 where it is not. Not shifted. */
  labels: number[];
  /** The example was longer than maxSeqLength and was cut. */
  truncated: boolean;
  /** Positions with a label (after truncation). */
  trainedTokens: number;
}

export interface TokenizeExampleOptions {
  /** Longer examples are cut to this many tokens. */
  maxSeqLength: number;
  /** Label every token, prompts included (default false: only the assistant answers and their end tokens). */
  trainOnInputs?: boolean;
}

/** The label of a position that is not trained (PyTorch's cross-entropy ignore_index). */
export const IGNORE_INDEX = -100;

const ROLES: readonly ChatRole[] = ["system", "user", "assistant"];

/**
 * Token ids and labels of an example rendered with the model's chat template: ONLY the assistant
 * answers' tokens (and each answer's end token, e.g. <|im_end|> / <|eot_id|>) carry labels;
 * everything else (system, user, template scaffolding, the assistant header) is -100.
 * `trainOnInputs` labels every token. Labels are NOT shifted (label[t] is the id at t; the trainer shifts).
 * Longer than maxSeqLength → cut to maxSeqLength, `truncated: true`.
 * instruction/output → [system?, user(instruction + "\n\n" + input when input), assistant(output)]; prompt/completion → [user, assistant].
 * Throws plain Errors for malformed examples, saying what is wrong (the caller adds file and line).
 *
 * The ids are the tokenization of the whole rendered chat, as the model sees it at generation time:
 * each answer starts where the chat rendered with add_generation_prompt=true ends (see
 * ModelTokenizer.chatAnswerSpans). Each span boundary is mapped to a token index by encoding the
 * text before it; when that is not a prefix of the whole encoding (a BPE merge or pre-tokenizer
 * split crosses the boundary), the text is cut there and the two sides are encoded separately, so
 * that the prompt's tokens are exactly those of the prompt alone and the answer's are those the
 * model has to emit after it.
 */
export function tokenizeExample(tok: ModelTokenizer, ex: TrainingExample, opts: TokenizeExampleOptions): TokenizedExample {
  const { maxSeqLength } = opts;
  if (!Number.isInteger(maxSeqLength) || maxSeqLength < 1) {
    throw new RangeError(`maxSeqLength must be a positive integer, got ${maxSeqLength}`);
  }
  const messages = toMessages(ex);
  const { text, spans } = tok.chatAnswerSpans(messages);
  const cuts = spans.flatMap((span) => [span.start, span.end]);
  const { ids, at } = encodeAtBoundaries(tok, text, cuts);

  let labels: number[];
  if (opts.trainOnInputs === true) {
    labels = [...ids];
  } else {
    labels = ids.map(() => IGNORE_INDEX);
    for (let i = 0; i + 1 < at.length; i += 2) {
      for (let t = at[i] ?? 0; t < (at[i + 1] ?? 0); t++) labels[t] = ids[t] ?? IGNORE_INDEX;
    }
  }

  const truncated = ids.length > maxSeqLength;
  if (truncated) {
    ids.length = maxSeqLength;
    labels.length = maxSeqLength;
  }
  const trainedTokens = labels.reduce((n, label) => (label === IGNORE_INDEX ? n : n + 1), 0);
  return { ids, labels, truncated, trainedTokens };
}

/** The chat an example stands for, checked as it comes from JSON. */
function toMessages(ex: TrainingExample): ChatTurn[] {
  const value: unknown = ex;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`example must be a JSON object, got ${describe(value)}`);
  }
  const record = value as Record<string, unknown>;
  if ("messages" in record) return chatMessages(record["messages"]);
  if ("instruction" in record || "output" in record) {
    const instruction = requireString(record, "instruction");
    const output = requireString(record, "output");
    const input = optionalString(record, "input");
    const system = optionalString(record, "system");
    const user = input === undefined || input === "" ? instruction : `${instruction}\n\n${input}`;
    return [
      ...(system === undefined || system === "" ? [] : [{ role: "system" as const, content: system }]),
      { role: "user", content: user },
      { role: "assistant", content: output },
    ];
  }
  if ("prompt" in record || "completion" in record) {
    return [
      { role: "user", content: requireString(record, "prompt") },
      { role: "assistant", content: requireString(record, "completion") },
    ];
  }
  const keys = Object.keys(record);
  throw new Error(
    "example must have `messages`, `instruction` and `output`, or `prompt` and `completion`; " +
      `it has ${keys.length === 0 ? "no fields" : keys.map((k) => `\`${k}\``).join(", ")}`,
  );
}

function chatMessages(value: unknown): ChatTurn[] {
  if (!Array.isArray(value)) throw new Error(`\`messages\` must be a list, got ${describe(value)}`);
  if (value.length === 0) throw new Error("`messages` is empty");
  const turns = value.map((entry: unknown, i): ChatTurn => {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw new Error(`messages[${i}] must be an object with \`role\` and \`content\`, got ${describe(entry)}`);
    }
    const { role, content } = entry as Record<string, unknown>;
    if (!(ROLES as readonly unknown[]).includes(role)) {
      throw new Error(`messages[${i}].role must be one of ${ROLES.join(", ")}, got ${describe(role)}`);
    }
    if (typeof content !== "string") throw new Error(`messages[${i}].content must be a string, got ${describe(content)}`);
    return { role: role as ChatRole, content };
  });
  // A chat without an answer would train nothing: almost always a conversion mistake.
  if (!turns.some((t) => t.role === "assistant")) throw new Error("`messages` has no assistant message to train on");
  return turns;
}

function requireString(record: Record<string, unknown>, key: string): string {
  const value = record[key];
  if (value === undefined) throw new Error(`\`${key}\` is missing`);
  if (typeof value !== "string") throw new Error(`\`${key}\` must be a string, got ${describe(value)}`);
  return value;
}

function optionalString(record: Record<string, unknown>, key: string): string | undefined {
  const value = record[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new Error(`\`${key}\` must be a string, got ${describe(value)}`);
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "an object";
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return `${typeof value} ${String(value)}`;
}

/**
 * Tokens of `text` and, for each character offset in `cuts` (ascending), the index of the first
 * token at or after it. Where encoding the text before a cut is a prefix of encoding the text
 * (the usual case: cuts sit next to special tokens or pre-tokenizer splits), the ids are the plain
 * encoding of the whole text; where it is not, the text is encoded in two pieces at that cut.
 */
function encodeAtBoundaries(tok: ModelTokenizer, text: string, cuts: readonly number[]): { ids: number[]; at: number[] } {
  const ids: number[] = [];
  const at: number[] = [];
  let pieceStart = 0;
  let piece = tok.encode(text);
  for (const cut of cuts) {
    const before = tok.encode(text.slice(pieceStart, cut));
    if (!isPrefix(before, piece)) {
      ids.push(...before);
      pieceStart = cut;
      piece = tok.encode(text.slice(cut));
      at.push(ids.length);
    } else {
      at.push(ids.length + before.length);
    }
  }
  ids.push(...piece);
  return { ids, at };
}

function isPrefix(prefix: readonly number[], of: readonly number[]): boolean {
  if (prefix.length > of.length) return false;
  return prefix.every((id, i) => of[i] === id);
}
