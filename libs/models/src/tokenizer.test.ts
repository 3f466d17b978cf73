import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { llama3Template, loadTokenizer, ModelFormatError, writeTinyTokenizer, type ChatTurn, type ModelTokenizer } from "./index.js";

const LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

const singleTurn: ChatTurn[] = [
  { role: "user", content: "What is the capital of France?" },
  { role: "assistant", content: "The capital of France is Paris." },
];
const multiTurn: ChatTurn[] = [
  { role: "system", content: "You answer in one sentence." },
  { role: "user", content: "How many days are in a week?" },
  { role: "assistant", content: "There are seven days in a week." },
  { role: "user", content: "And hours in a day?" },
  { role: "assistant", content: "There are twenty-four hours in a day." },
];

/** Answer tokens a trainer should unmask: each answer's content and its one end token. */
function expectedAnswerTokens(tokenizer: ModelTokenizer, chat: readonly ChatTurn[]): number {
  return chat.filter((m) => m.role === "assistant").reduce((n, m) => n + tokenizer.encode(m.content).length + 1, 0);
}

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
  const config = {
    bos_token: "<|begin_of_text|>",
    eos_token: "<|eot_id|>",
    chat_template: llama3Template,
    clean_up_tokenization_spaces: true,
    tokenizer_class: "PreTrainedTokenizerFast",
  };
  await writeFile(path.join(dir, "tokenizer_config.json"), JSON.stringify(config));
}

describe("loadTokenizer", () => {
  let root: string;
  let chatml: ModelTokenizer;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-tokenizer-"));
    await writeTinyTokenizer(path.join(root, "chatml"));
    chatml = await loadTokenizer(path.join(root, "chatml"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  describe("ChatML", () => {
    it("renders a two-turn chat exactly as Hugging Face does", () => {
      expect(chatml.renderChat(singleTurn)).toBe(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" +
          "<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n",
      );
    });

    it("counts the answer's tokens and its <|im_end|> in a single-turn chat", () => {
      const counts = chatml.countChat(singleTurn);
      expect(counts.total).toBe(chatml.encode(chatml.renderChat(singleTurn)).length);
      expect(counts.answer).toBe(expectedAnswerTokens(chatml, singleTurn));
      expect(counts.answer).toBe(chatml.encode("The capital of France is Paris.<|im_end|>").length);
    });

    it("counts every answer of a multi-turn chat and nothing of the prompts", () => {
      const counts = chatml.countChat(multiTurn);
      expect(counts.total).toBe(chatml.encode(chatml.renderChat(multiTurn)).length);
      expect(counts.answer).toBe(expectedAnswerTokens(chatml, multiTurn));
    });

    it("counts no answer tokens in a chat without an assistant turn", () => {
      const chat: ChatTurn[] = [{ role: "user", content: "Hello" }];
      expect(chatml.countChat(chat)).toEqual({ total: chatml.encode(chatml.renderChat(chat)).length, answer: 0 });
    });
  });

  describe("Llama 3", () => {
    let llama3: ModelTokenizer;
    beforeAll(async () => {
      await makeLlama3(path.join(root, "llama3"));
      llama3 = await loadTokenizer(path.join(root, "llama3"));
    });

    it("renders with <|begin_of_text|> and header tokens, trimming content", () => {
      const chat: ChatTurn[] = [
        { role: "user", content: "  Hi there \n" },
        { role: "assistant", content: "Hello!" },
      ];
      expect(llama3.renderChat(chat)).toBe(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
          "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
      );
      expect(llama3.eosToken).toBe("<|eot_id|>");
    });

    it("counts each answer and its <|eot_id|>", () => {
      for (const chat of [singleTurn, multiTurn]) {
        const counts = llama3.countChat(chat);
        expect(counts.total).toBe(llama3.encode(llama3.renderChat(chat)).length);
        expect(counts.answer).toBe(expectedAnswerTokens(llama3, chat));
      }
    });
  });

  describe("errors", () => {
    it("names tokenizer.json when it is missing", async () => {
      const dir = path.join(root, "empty");
      const error = await loadTokenizer(dir).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect((error as ModelFormatError).file).toBe(path.join(dir, "tokenizer.json"));
      expect((error as Error).message).toBe(`${path.join(dir, "tokenizer.json")}: file is missing`);
    });

    it("names the file and the line of invalid JSON", async () => {
      const dir = path.join(root, "bad-json");
      await writeTinyTokenizer(dir);
      await writeFile(path.join(dir, "tokenizer_config.json"), '{\n  "eos_token": "<|im_end|>",\n}\n');
      const error = await loadTokenizer(dir).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelFormatError);
      expect((error as ModelFormatError).file).toBe(path.join(dir, "tokenizer_config.json"));
      expect((error as Error).message).toMatch(/tokenizer_config\.json: invalid JSON at line 3 column 1/);
    });

    it("refuses a tokenizer model type the library does not implement", async () => {
      const dir = path.join(root, "wordlevel");
      await writeTinyTokenizer(dir);
      const file = path.join(dir, "tokenizer.json");
      const json = JSON.parse(await readFile(file, "utf8")) as { model: { type: string } };
      json.model.type = "WordLevel";
      await writeFile(file, JSON.stringify(json));
      await expect(loadTokenizer(dir)).rejects.toThrow(`${file}: unsupported tokenizer model type "WordLevel" (supported: BPE, WordPiece, Unigram)`);
    });

    it("loads a tokenizer without chat_template, and says so when asked to render a chat", async () => {
      const dir = path.join(root, "no-template");
      await writeTinyTokenizer(dir);
      const file = path.join(dir, "tokenizer_config.json");
      const config = JSON.parse(await readFile(file, "utf8")) as Record<string, unknown>;
      delete config["chat_template"];
      await writeFile(file, JSON.stringify(config));
      const tokenizer = await loadTokenizer(dir);
      expect(tokenizer.encode("hello").length).toBeGreaterThan(0);
      expect(() => tokenizer.renderChat(singleTurn)).toThrow(ModelFormatError);
      expect(() => tokenizer.countChat(singleTurn)).toThrow(`${file}: no \`chat_template\``);
    });
  });
});
