import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DatasetFormat } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { loadTokenizer, parseTrainingLine, tokenizeExample, writeTinyTokenizer, type ModelTokenizer, type RowFormat, type TrainingExample } from "@lathe/models";
import { parseLine } from "./parse.js";

// The dataset service (parseLine), libs/models' row parser (parseTrainingLine) and tokenizeExample
// (the trainer, the engine's train, `lathe train`) refuse the same rows, for the same reason.
// tokenizeExample words a few problems as it did before it used the dataset's rules, because
// its tests pin those words: the `tokenizeExample` column gives them. It also still accepts an
// empty answer (see the last case).

interface Case {
  what: string;
  line: string | Buffer;
  reason: string | RegExp;
  /** The file's format, when the row is checked against it. */
  format?: RowFormat;
  /** tokenizeExample's words, where they are not `reason`. */
  tokenizeExample?: string;
}

const chat = (...messages: [string, unknown][]) => JSON.stringify({ messages: messages.map(([role, content]) => ({ role, content })) });
const qa: [string, string][] = [["user", "q"], ["assistant", "a"]];

const cases: Case[] = [
  { what: "bytes that are not UTF-8", line: Buffer.from([0x7b, 0xc3, 0x28, 0x7d]), reason: "not valid UTF-8" },
  { what: "bad JSON", line: '{"prompt": "x"', reason: /^not valid JSON \(.+\)$/ },
  { what: "a raw control character in the line", line: '{"prompt":"a\u0001","completion":"b"}', reason: "the line contains U+0001 at character 13; remove control characters" },
  { what: "JSON that is not an object", line: "[1,2]", reason: "not a JSON object" },
  { what: "a JSON string", line: '"hello"', reason: "not a JSON object" },
  {
    what: "no known format",
    line: '{"text":"hello"}',
    reason: 'in no known format: expected "messages", "instruction"/"output" or "prompt"/"completion"',
    tokenizeExample: "example must have `messages`, `instruction` and `output`, or `prompt` and `completion`; it has `text`",
  },
  { what: "messages that are not an array", line: '{"messages":"hi"}', reason: '"messages" must be an array', tokenizeExample: '`messages` must be a list, got "hi"' },
  { what: "empty messages", line: '{"messages":[]}', reason: '"messages" is empty', tokenizeExample: "`messages` is empty" },
  { what: "a message that is not an object", line: '{"messages":["hi"]}', reason: "messages[0] is not an object", tokenizeExample: 'messages[0] must be an object with `role` and `content`, got "hi"' },
  { what: "an unknown role", line: chat(["bot", "x"]), reason: 'messages[0].role must be "system", "user" or "assistant"', tokenizeExample: 'messages[0].role must be one of system, user, assistant, got "bot"' },
  { what: "a role every object has", line: chat(["constructor", "x"], ["assistant", "y"]), reason: 'messages[0].role must be "system", "user" or "assistant"', tokenizeExample: 'messages[0].role must be one of system, user, assistant, got "constructor"' },
  { what: "content that is not a string", line: chat(["user", 3]), reason: "messages[0].content must be a string", tokenizeExample: "messages[0].content must be a string, got number 3" },
  { what: "an empty user turn", line: chat(["user", " "], ["assistant", "a"]), reason: "messages[0] (user) is empty" },
  { what: "an empty system turn", line: chat(["system", ""], ...qa), reason: "messages[0] (system) is empty" },
  { what: "no assistant turn", line: chat(["user", "hi"]), reason: "the conversation does not end with an assistant message", tokenizeExample: "`messages` has no assistant message to train on" },
  { what: "a conversation ending with the user", line: chat(...qa, ["user", "more?"]), reason: "the conversation does not end with an assistant message" },
  { what: "two user turns in a row", line: chat(["user", "a"], ["user", "b"], ["assistant", "c"]), reason: "messages[1] is a second user message in a row" },
  { what: "an assistant turn first", line: chat(["assistant", "a"], ...qa), reason: "messages[0] is a second assistant message in a row" },
  { what: "a system turn later", line: chat(...qa, ["system", "s"], ...qa), reason: "messages[2] is a system message after the start of the conversation" },
  { what: "only a system turn", line: chat(["system", "s"]), reason: "the conversation has no user message" },
  { what: "a control character in a turn", line: chat(["user", "q"], ["assistant", "a\u0007"]), reason: "messages[1].content contains U+0007 at character 2; remove control characters" },
  { what: "a NUL in a turn", line: chat(["user", "q\u0000"], ["assistant", "a"]), reason: "messages[0].content contains U+0000 at character 2; remove control characters" },
  { what: "a lone surrogate", line: '{"prompt":"q","completion":"\\ud800"}', reason: "completion contains a lone surrogate U+D800 at character 1; remove it or fix the text's encoding" },
  { what: "a control character in system", line: '{"instruction":"i","output":"o","system":"\\u001b[0m"}', reason: "system contains U+001B at character 1; remove control characters" },
  { what: "a missing output", line: '{"instruction":"Do it."}', reason: '"output" is missing', tokenizeExample: "`output` is missing" },
  { what: "a null output", line: '{"instruction":"Do it.","output":null}', reason: '"output" is missing', tokenizeExample: "`output` is missing" },
  { what: "a missing instruction", line: '{"output":"Done."}', reason: '"instruction" is missing', tokenizeExample: "`instruction` is missing" },
  { what: "a blank instruction", line: '{"instruction":"  ","output":"Done."}', reason: '"instruction" is empty' },
  { what: "an input that is not a string", line: '{"instruction":"Do it.","output":"Done.","input":["x"]}', reason: '"input" must be a string, not an array', tokenizeExample: "`input` must be a string, got a list" },
  { what: "a system that is not a string", line: '{"prompt":"q","completion":"a","system":3}', reason: '"system" must be a string, not number', tokenizeExample: "`system` must be a string, got number 3" },
  { what: "a missing completion", line: '{"prompt":"Q"}', reason: '"completion" is missing', tokenizeExample: "`completion` is missing" },
  { what: "a blank prompt", line: '{"prompt":"","completion":"a"}', reason: '"prompt" is empty' },
  { what: "a prompt/completion row in a chat file", line: '{"prompt":"q","completion":"a"}', format: "chat", reason: "in prompt/completion format, but the file is in chat messages format" },
  { what: "a chat row in an instruction file", line: chat(...qa), format: "instruction", reason: "in chat messages format, but the file is in instruction/output format" },
];

const datasetFormat: Record<RowFormat, DatasetFormat> = {
  chat: DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES,
  instruction: DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT,
  prompt: DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION,
};

/** The JSON value of a line, or undefined when it is not JSON (then only the line parsers see it). */
function valueOf(line: string | Buffer): unknown {
  try {
    return JSON.parse(typeof line === "string" ? line : new TextDecoder("utf-8", { fatal: true }).decode(line));
  } catch {
    return undefined;
  }
}

/** What tokenizeExample throws for an example, or "accepted". */
function tokenizeReason(tok: ModelTokenizer, value: unknown): string {
  try {
    tokenizeExample(tok, value as TrainingExample, { maxSeqLength: 256 });
    return "accepted";
  } catch (err) {
    return (err as Error).message;
  }
}

describe("the dataset service, libs/models and tokenizeExample refuse the same rows", () => {
  let root: string;
  let tok: ModelTokenizer;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-same-rows-"));
    await writeTinyTokenizer(root);
    tok = await loadTokenizer(root);
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  for (const c of cases) {
    it(`gives the same reason for ${c.what}`, () => {
      const bytes = Buffer.from(c.line);
      const dataset = parseLine(bytes, c.format === undefined ? DatasetFormat.DATASET_FORMAT_AUTO : datasetFormat[c.format]);
      const models = parseTrainingLine(bytes, { format: c.format });
      expect(dataset.ok).toBe(false);
      expect(models.ok).toBe(false);
      if (dataset.ok || models.ok) return;
      expect(dataset.reason).toMatch(c.reason);
      expect(models.reason).toBe(dataset.reason);
      // tokenizeExample takes JSON values, and has no file format to compare with.
      const value = valueOf(c.line);
      if (value === undefined || c.format !== undefined) return;
      expect(tokenizeReason(tok, value)).toBe(c.tokenizeExample ?? dataset.reason);
    });
  }

  it("gives the same conversation for a valid row in each format", () => {
    const roles = { system: ChatRole.CHAT_ROLE_SYSTEM, user: ChatRole.CHAT_ROLE_USER, assistant: ChatRole.CHAT_ROLE_ASSISTANT };
    for (const line of [
      chat(["system", "s"], ...qa, ["user", "q2"], ["assistant", "a2"]),
      '{"instruction":"Translate.","input":"Good morning","output":"Bonjour","system":"Be terse."}',
      '{"prompt":"2 + 2 =","completion":"4"}',
    ]) {
      const dataset = parseLine(Buffer.from(line), DatasetFormat.DATASET_FORMAT_AUTO);
      const models = parseTrainingLine(Buffer.from(line));
      if (!dataset.ok || !models.ok) throw new Error(`${line} was refused`);
      expect(dataset.row.messages).toEqual(models.example.messages.map((m) => ({ role: roles[m.role], content: m.content })));
      expect(tokenizeReason(tok, valueOf(line))).toBe("accepted");
      expect(tokenizeExample(tok, valueOf(line) as TrainingExample, { maxSeqLength: 256 }).ids).toEqual(tokenizeExample(tok, models.example, { maxSeqLength: 256 }).ids);
    }
  });

  it("differs on an empty answer only: the dataset refuses it, tokenizeExample trains its end token", () => {
    for (const line of [chat(["user", "Say nothing."], ["assistant", ""]), '{"prompt":"q","completion":""}']) {
      const dataset = parseLine(Buffer.from(line), DatasetFormat.DATASET_FORMAT_AUTO);
      expect(dataset.ok).toBe(false);
      expect(parseTrainingLine(Buffer.from(line)).ok).toBe(false);
      expect(tokenizeReason(tok, valueOf(line))).toBe("accepted");
    }
  });
});
