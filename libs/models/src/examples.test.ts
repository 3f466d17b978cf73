import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  llama3Template,
  loadTokenizer,
  tokenizeExample,
  writeTinyTokenizer,
  type ModelTokenizer,
  type TokenizedExample,
  type TrainingExample,
} from "./index.js";

const LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

const singleTurn: TrainingExample = {
  messages: [
    { role: "user", content: "What is the capital of France?" },
    { role: "assistant", content: "The capital of France is Paris." },
  ],
};
const multiTurn: TrainingExample = {
  messages: [
    { role: "system", content: "You answer in one sentence." },
    { role: "user", content: "How many days are in a week?" },
    { role: "assistant", content: "There are seven days in a week." },
    { role: "user", content: "And hours in a day?" },
    { role: "assistant", content: "There are twenty-four hours in a day." },
  ],
};

/** Turns a tiny ChatML tokenizer folder into a Llama-3-style one: its special tokens and template. */
async function makeLlama3(dir: string): Promise<void> {
  await writeTinyTokenizer(dir);
  const file = path.join(dir, "tokenizer.json");
  const json = JSON.parse(await readFile(file, "utf8")) as { added_tokens: Array<{ id: number; content: string }> };
  const next = Math.max(...json.added_tokens.map((t) => t.id)) + 1;
  const added = LLAMA3_SPECIALS.map((content, i) => ({
    id: next + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  json.added_tokens.push(...added);
  await writeFile(file, JSON.stringify(json));
  const config = { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", chat_template: llama3Template };
  await writeFile(path.join(dir, "tokenizer_config.json"), JSON.stringify(config));
}

/** The text of each run of consecutive trained positions. */
function trainedRuns(tok: ModelTokenizer, result: TokenizedExample): string[] {
  const runs: number[][] = [];
  let open = false;
  result.labels.forEach((label) => {
    if (label === -100) {
      open = false;
      return;
    }
    if (!open) runs.push([]);
    open = true;
    runs[runs.length - 1]?.push(label);
  });
  return runs.map((ids) => tok.decode(ids));
}

function trainedText(tok: ModelTokenizer, result: TokenizedExample): string {
  return tok.decode(result.ids.filter((_, t) => result.labels[t] !== -100));
}

/** Every label is the id at its position or -100, and trainedTokens counts the former. */
function expectConsistent(result: TokenizedExample): void {
  expect(result.labels).toHaveLength(result.ids.length);
  result.labels.forEach((label, t) => expect([result.ids[t], -100]).toContain(label));
  expect(result.trainedTokens).toBe(result.labels.filter((l) => l !== -100).length);
}

const answers = (ex: TrainingExample): string[] =>
  "messages" in ex ? ex.messages.filter((m) => m.role === "assistant").map((m) => m.content) : [];

describe("tokenizeExample", () => {
  let root: string;
  let chatml: ModelTokenizer;
  let llama3: ModelTokenizer;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-examples-"));
    await writeTinyTokenizer(path.join(root, "chatml"));
    chatml = await loadTokenizer(path.join(root, "chatml"));
    await makeLlama3(path.join(root, "llama3"));
    llama3 = await loadTokenizer(path.join(root, "llama3"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const templates = [
    { name: "ChatML", end: "<|im_end|>", tok: () => chatml },
    { name: "Llama 3", end: "<|eot_id|>", tok: () => llama3 },
  ];

  for (const { name, end, tok } of templates) {
    describe(name, () => {
      it("trains exactly the answer and its end token in a single-turn chat", () => {
        const result = tokenizeExample(tok(), singleTurn, { maxSeqLength: 1024 });
        expectConsistent(result);
        expect(result.ids).toEqual(tok().encode(tok().renderChat((singleTurn as { messages: [] }).messages)));
        expect(trainedRuns(tok(), result)).toEqual([`The capital of France is Paris.${end}`]);
        expect(result.truncated).toBe(false);
      });

      it("trains every assistant turn of a multi-turn chat and nothing of the system or user turns", () => {
        const result = tokenizeExample(tok(), multiTurn, { maxSeqLength: 1024 });
        expectConsistent(result);
        expect(tok().decode(result.ids)).toBe(tok().renderChat((multiTurn as { messages: [] }).messages));
        expect(trainedRuns(tok(), result)).toEqual(answers(multiTurn).map((a) => a + end));
        expect(trainedText(tok(), result)).toBe(answers(multiTurn).map((a) => a + end).join(""));
        expect(result.trainedTokens).toBe(tok().countChat((multiTurn as { messages: [] }).messages).answer);
      });

      it("leaves the assistant header untrained: the first trained token is the answer's first", () => {
        const result = tokenizeExample(tok(), singleTurn, { maxSeqLength: 1024 });
        const first = result.labels.findIndex((l) => l !== -100);
        expect(tok().decode(result.ids.slice(0, first))).toMatch(/assistant(<\|end_header_id\|>)?\n+$/);
      });
    });
  }

  it("keeps <|begin_of_text|> untrained on Llama 3", () => {
    const result = tokenizeExample(llama3, singleTurn, { maxSeqLength: 1024 });
    expect(llama3.decode(result.ids.slice(0, 1))).toBe("<|begin_of_text|>");
    expect(result.labels[0]).toBe(-100);
  });

  it("turns instruction, input and system into system, user and assistant turns", () => {
    const ex: TrainingExample = { system: "Be terse.", instruction: "Translate to French.", input: "Good morning", output: "Bonjour" };
    const result = tokenizeExample(chatml, ex, { maxSeqLength: 1024 });
    expect(chatml.decode(result.ids)).toBe(
      "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nTranslate to French.\n\nGood morning<|im_end|>\n" +
        "<|im_start|>assistant\nBonjour<|im_end|>\n",
    );
    expect(trainedRuns(chatml, result)).toEqual(["Bonjour<|im_end|>"]);
  });

  it("turns instruction and output alone (an empty input counts as none) into a user and an assistant turn", () => {
    for (const ex of [
      { instruction: "Say hi.", output: "Hi!" },
      { instruction: "Say hi.", input: "", output: "Hi!" },
    ] satisfies TrainingExample[]) {
      const result = tokenizeExample(llama3, ex, { maxSeqLength: 1024 });
      expect(llama3.decode(result.ids)).toBe(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nSay hi.<|eot_id|>" +
          "<|start_header_id|>assistant<|end_header_id|>\n\nHi!<|eot_id|>",
      );
      expect(trainedText(llama3, result)).toBe("Hi!<|eot_id|>");
    }
  });

  it("turns prompt and completion into a user and an assistant turn", () => {
    const result = tokenizeExample(chatml, { prompt: "2 + 2 =", completion: "4" }, { maxSeqLength: 1024 });
    expect(chatml.decode(result.ids)).toBe("<|im_start|>user\n2 + 2 =<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n");
    expect(trainedRuns(chatml, result)).toEqual(["4<|im_end|>"]);
  });

  it("labels every token with trainOnInputs", () => {
    const result = tokenizeExample(chatml, multiTurn, { maxSeqLength: 1024, trainOnInputs: true });
    expect(result.labels).toEqual(result.ids);
    expect(result.trainedTokens).toBe(result.ids.length);
  });

  it("cuts an example longer than maxSeqLength and says so", () => {
    const full = tokenizeExample(chatml, multiTurn, { maxSeqLength: 1024 });
    const exact = tokenizeExample(chatml, multiTurn, { maxSeqLength: full.ids.length });
    expect(exact.truncated).toBe(false);
    expect(exact.ids).toEqual(full.ids);

    const cutAt = full.labels.findIndex((l) => l !== -100) + 3;
    const cut = tokenizeExample(chatml, multiTurn, { maxSeqLength: cutAt });
    expect(cut.truncated).toBe(true);
    expect(cut.ids).toEqual(full.ids.slice(0, cutAt));
    expect(cut.labels).toEqual(full.labels.slice(0, cutAt));
    expect(cut.trainedTokens).toBe(3);
  });

  it("splits the encoding where a pre-tokenizer split crosses the answer's start, so the prompt is tokenized as at generation", () => {
    // "\n  " is one pre-token of the whole text, across the end of the generation prompt.
    const ex: TrainingExample = { messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "  indented answer" }] };
    const rendered = chatml.renderChat(ex.messages);
    const result = tokenizeExample(chatml, ex, { maxSeqLength: 1024 });
    expect(result.ids).not.toEqual(chatml.encode(rendered));
    expect(chatml.decode(result.ids)).toBe(rendered);
    const first = result.labels.findIndex((l) => l !== -100);
    expect(result.ids.slice(0, first)).toEqual(chatml.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"));
    expect(trainedRuns(chatml, result)).toEqual(["  indented answer<|im_end|>"]);
  });

  it("trains the end token of an empty answer", () => {
    const ex: TrainingExample = { messages: [{ role: "user", content: "Say nothing." }, { role: "assistant", content: "" }] };
    expect(trainedRuns(chatml, tokenizeExample(chatml, ex, { maxSeqLength: 1024 }))).toEqual(["<|im_end|>"]);
  });

  describe("malformed examples", () => {
    const cases: Array<[string, unknown, string]> = [
      ["an unknown shape", { text: "hello" }, "example must have `messages`, `instruction` and `output`, or `prompt` and `completion`; it has `text`"],
      ["messages that are not a list", { messages: "hi" }, '`messages` must be a list, got "hi"'],
      ["no messages", { messages: [] }, "`messages` is empty"],
      ["an unknown role", { messages: [{ role: "bot", content: "x" }] }, 'messages[0].role must be one of system, user, assistant, got "bot"'],
      ["content that is not a string", { messages: [{ role: "user", content: 3 }] }, "messages[0].content must be a string, got number 3"],
      ["no assistant message", { messages: [{ role: "user", content: "hi" }] }, "`messages` has no assistant message to train on"],
      ["a missing output", { instruction: "Do it." }, "`output` is missing"],
      ["an input that is not a string", { instruction: "Do it.", output: "Done.", input: ["x"] }, "`input` must be a string, got a list"],
      ["a missing completion", { prompt: "Q" }, "`completion` is missing"],
    ];
    for (const [what, ex, message] of cases) {
      it(`says what is wrong with ${what}`, () => {
        expect(() => tokenizeExample(chatml, ex as TrainingExample, { maxSeqLength: 64 })).toThrow(message);
      });
    }
  });
});
