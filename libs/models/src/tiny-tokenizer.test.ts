import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTokenizer, writeTinyTokenizer, type ModelTokenizer } from "./index.js";

const samples = [
  "The capital of France is Paris.",
  "  leading spaces, trailing spaces  ",
  "export function add(a: number, b: number): number {\n  return a + b;\n}\n",
  "Unicode: café, naïve, 東京, emoji 🚀 and tabs\tand\r\nnewlines",
  "it's they're we'll 3.14 1e-4",
];

describe("writeTinyTokenizer", () => {
  let root: string;
  let tokenizer: ModelTokenizer;
  beforeAll(async () => {
    root = await mkdtemp(path.join(tmpdir(), "lathe-tiny-tokenizer-"));
    await writeTinyTokenizer(path.join(root, "a"));
    tokenizer = await loadTokenizer(path.join(root, "a"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("writes the same bytes on every run", async () => {
    await writeTinyTokenizer(path.join(root, "b"));
    for (const file of ["tokenizer.json", "tokenizer_config.json"]) {
      const a = await readFile(path.join(root, "a", file));
      const b = await readFile(path.join(root, "b", file));
      expect(a.equals(b), file).toBe(true);
    }
  });

  it("has vocabSize tokens with the ChatML special tokens last", async () => {
    const json = JSON.parse(await readFile(path.join(root, "a", "tokenizer.json"), "utf8")) as {
      model: { vocab: Record<string, number>; merges: string[] };
      added_tokens: Array<{ id: number; content: string }>;
    };
    expect(Object.keys(json.model.vocab).length + json.added_tokens.length).toBe(512);
    expect(json.model.merges.length).toBeGreaterThanOrEqual(512 - 256 - 3);
    expect(json.added_tokens.map((t) => [t.id, t.content])).toEqual([
      [509, "<|endoftext|>"],
      [510, "<|im_start|>"],
      [511, "<|im_end|>"],
    ]);
    expect(tokenizer.encode("<|im_start|>user\nhi<|im_end|>")).toEqual([510, ...tokenizer.encode("user\nhi"), 511]);
    expect(tokenizer.eosToken).toBe("<|im_end|>");
  });

  it("round-trips text through encode and decode", () => {
    for (const text of samples) expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });

  it("encodes deterministically, and common words in fewer tokens than bytes", async () => {
    const again = await loadTokenizer(path.join(root, "a"));
    for (const text of samples) {
      const ids = tokenizer.encode(text);
      expect(ids.length).toBeGreaterThan(0);
      expect(again.encode(text)).toEqual(ids);
    }
    const sentence = "The model learns to predict the next token from the tokens before it.";
    expect(tokenizer.encode(sentence).length).toBeLessThan(Buffer.byteLength(sentence) / 2);
    expect(tokenizer.encode(" the")).toHaveLength(1);
  });

  it("honours a smaller vocabSize and refuses one without room for the byte alphabet", async () => {
    await writeTinyTokenizer(path.join(root, "small"), { vocabSize: 300 });
    const small = await loadTokenizer(path.join(root, "small"));
    expect(small.encode("<|im_end|>")).toEqual([299]);
    await expect(writeTinyTokenizer(path.join(root, "tiny"), { vocabSize: 258 })).rejects.toThrow(/at least 259/);
  });
});
