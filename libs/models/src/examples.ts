import { parseTrainingRow, type RowProblem } from "./rows.js";
import type { ChatRole, ChatTurn, ModelTokenizer } from "./tokenizer.js";

/** One training example in any of the three JSONL shapes users have. */
export type TrainingExample =
  | { messages: { role: "system" | "user" | "assistant"; content: string }[] }
  | { instruction: string; output: string; input?: string; system?: string }
  | { prompt: string; completion: string; system?: string };

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
  /**
   * Label only the last assistant answer (and its end token): the earlier answers are part of the
   * prompt, as in a few-shot prompt whose final answer is scored. Default false. Not with trainOnInputs.
   */
  lastAnswerOnly?: boolean;
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
 * instruction/output → [system?, user(instruction + "\n\n" + input when input), assistant(output)]; prompt/completion → [system?, user, assistant].
 * Throws plain Errors for malformed examples, saying what is wrong (the caller adds file and line):
 * the rules are the dataset service's, see parseTrainingRow and toMessages.
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
    for (let i = opts.lastAnswerOnly === true ? Math.max(0, at.length - 2) : 0; i + 1 < at.length; i += 2) {
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

/**
 * The chat an example stands for, checked as it comes from JSON by parseTrainingRow (rows.ts), the
 * dataset service's rules: the same rows are refused, for the same reasons. Two things are as they
 * were before tokenizeExample used those rules (its tests pin them):
 * - an empty answer is accepted: it trains its end token;
 * - the problems legacyWording words keep their earlier wording.
 */
function toMessages(ex: TrainingExample): ChatTurn[] {
  const value: unknown = ex;
  const parsed = parseTrainingRow(value, { allowEmptyAnswer: true });
  if (!parsed.ok) throw new Error(legacyWording(value, parsed.problem) ?? parsed.reason);
  return parsed.example.messages;
}

/**
 * tokenizeExample's earlier words for a shape, type, missing-field or missing-answer problem, or
 * undefined for every other problem (said in parseTrainingRow's words).
 */
function legacyWording(value: unknown, { kind, field = "", got }: RowProblem): string | undefined {
  switch (kind) {
    case "no-format": {
      const keys = Object.keys(value as object);
      return (
        "example must have `messages`, `instruction` and `output`, or `prompt` and `completion`; " +
        `it has ${keys.length === 0 ? "no fields" : keys.map((k) => `\`${k}\``).join(", ")}`
      );
    }
    case "type":
      if (field === "messages") return `\`messages\` must be a list, got ${describe(got)}`;
      if (/^messages\[\d+\]$/.test(field)) return `${field} must be an object with \`role\` and \`content\`, got ${describe(got)}`;
      return `${field.startsWith("messages[") ? field : `\`${field}\``} must be a string, got ${describe(got)}`;
    case "role":
      return `${field} must be one of ${ROLES.join(", ")}, got ${describe(got)}`;
    case "missing":
      return `\`${field}\` is missing`;
    case "empty":
      return field === "messages" ? "`messages` is empty" : undefined;
    case "no-answer":
      return "`messages` has no assistant message to train on";
    default:
      return undefined;
  }
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
