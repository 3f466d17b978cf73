/**
 * The `tokenizer.*` metadata of a GGUF file from a Hugging Face byte-level BPE tokenizer
 * (GPT-2, Llama 3 and Qwen2 style), as llama.cpp's "gpt2" tokenizer model reads it: tokens in id
 * order with the byte-level alphabet (`Ġ` for a space) as tokenizer.json writes them, merges as
 * "left right" lines, token types, special token ids and the chat template.
 */
import path from "node:path";
import { ModelFormatError } from "./errors.js";
import type { GgufValue } from "./gguf.js";
import { LIMITS } from "./limits.js";
import { asObject, readBoundedFile, readJsonFile, shown } from "./read-json.js";

/** llama.cpp's token types (llama_token_type). */
const TOKEN_TYPE = { normal: 1, control: 3, userDefined: 4, unused: 5 } as const;

/**
 * Pre-tokenizer regexes that llama.cpp knows under a `tokenizer.ggml.pre` name; it splits text
 * with its own copy of the regex named there, so the name must match what tokenizer.json does.
 */
const KNOWN_SPLITS: ReadonlyArray<{ pre: string; regex: string }> = [
  {
    pre: "qwen2",
    regex: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  },
  {
    pre: "llama-bpe",
    regex: String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
  },
];

export interface GgufVocabOptions {
  /** Number of token embedding rows; the token list is padded with `[PAD<id>]` (type unused) up to it. */
  embeddingRows: number;
  /** `tokenizer.ggml.pre` to write instead of the one detected from tokenizer.json. */
  pre: string | null;
  /** config.json, whose bos_token_id / eos_token_id serve when tokenizer_config.json names none. */
  config: Record<string, unknown>;
}

/**
 * Reads tokenizer.json and tokenizer_config.json (and chat_template.jinja) of `modelDir`.
 * @throws ModelFormatError naming the file: not byte-level BPE, a pre-tokenizer llama.cpp does not
 * know, more tokens than embedding rows, a special token that is not in the vocabulary.
 */
export async function readGgufVocab(modelDir: string, opts: GgufVocabOptions): Promise<Array<[string, GgufValue]>> {
  const tokenizerFile = path.join(modelDir, "tokenizer.json");
  const configFile = path.join(modelDir, "tokenizer_config.json");
  const tokenizer = asObject(await readJsonFile(tokenizerFile, LIMITS.tokenizerJsonBytes));
  if (tokenizer === null) throw new ModelFormatError(tokenizerFile, "expected a JSON object");
  const config = asObject(await readJsonFile(configFile));
  if (config === null) throw new ModelFormatError(configFile, "expected a JSON object");
  const fail = (message: string): never => {
    throw new ModelFormatError(tokenizerFile, message);
  };

  const model = asObject(tokenizer["model"]) ?? fail("no `model` object");
  const vocab = asObject(model["vocab"]);
  if (model["type"] !== "BPE" || vocab === null || model["byte_fallback"] === true || !usesByteLevel(tokenizer)) {
    fail(
      `GGUF export handles byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2 style); this one is ${String(model["type"])}` +
        `${model["byte_fallback"] === true ? " with byte_fallback (SentencePiece style)" : ""} with pre_tokenizer ` +
        `${shown(asObject(tokenizer["pre_tokenizer"])?.["type"] ?? null)}`,
    );
  }
  const pre = opts.pre ?? detectPre(tokenizer["pre_tokenizer"], fail);

  const byId = new Map<number, { text: string; type: number }>();
  const idOf = new Map<string, number>();
  const entries = Object.entries(vocab ?? {});
  if (entries.length > LIMITS.vocabSize) fail(`model.vocab holds ${entries.length} tokens; at most ${LIMITS.vocabSize} are supported`);
  for (const [text, id] of entries) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) fail(`model.vocab: token ${shown(text)} has id ${shown(id)}`);
    byId.set(id as number, { text, type: TOKEN_TYPE.normal });
    idOf.set(text, id as number);
  }
  const added = Array.isArray(tokenizer["added_tokens"]) ? (tokenizer["added_tokens"] as unknown[]) : [];
  for (const [i, entry] of added.entries()) {
    const token = asObject(entry);
    const id = token?.["id"];
    const content = token?.["content"];
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || typeof content !== "string") {
      fail(`added_tokens[${i}] needs an integer id and a string content`);
    }
    // Added tokens are matched as raw text before BPE runs; llama.cpp does the same for control and user-defined tokens.
    byId.set(id as number, { text: content as string, type: token?.["special"] === true ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined });
    idOf.set(content as string, id as number);
  }

  let maxId = -1;
  for (const id of byId.keys()) maxId = Math.max(maxId, id);
  if (maxId + 1 > opts.embeddingRows) {
    fail(`the tokenizer has ids up to ${maxId}, but the model has ${opts.embeddingRows} token embeddings`);
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < opts.embeddingRows; id++) {
    const token = byId.get(id);
    tokens.push(token?.text ?? `[PAD${id}]`);
    types.push(token?.type ?? TOKEN_TYPE.unused);
  }

  const merges = Array.isArray(model["merges"]) ? (model["merges"] as unknown[]) : [];
  const mergeLines = merges.map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") return `${m[0]} ${m[1]}`;
    return fail(`model.merges[${i}] is neither "left right" nor [left, right]`);
  });

  const metadata: Array<[string, GgufValue]> = [
    ["tokenizer.ggml.model", "gpt2"],
    ["tokenizer.ggml.pre", pre],
    ["tokenizer.ggml.tokens", { type: "array", itemType: "string", value: tokens }],
    ["tokenizer.ggml.token_type", { type: "array", itemType: "int32", value: types }],
    ["tokenizer.ggml.merges", { type: "array", itemType: "string", value: mergeLines }],
  ];

  const specialId = (field: string, configField: string): number | null => {
    const value = config[field];
    const text = typeof value === "string" ? value : asObject(value)?.["content"];
    if (typeof text === "string") {
      const id = idOf.get(text);
      if (id === undefined) throw new ModelFormatError(configFile, `\`${field}\` ${shown(text)} is not a token of tokenizer.json`);
      return id;
    }
    const fromConfig = opts.config[configField];
    const id = Array.isArray(fromConfig) ? (fromConfig[0] as unknown) : fromConfig;
    return typeof id === "number" && Number.isInteger(id) && id >= 0 && id < opts.embeddingRows ? id : null;
  };
  const bos = specialId("bos_token", "bos_token_id");
  const eos = specialId("eos_token", "eos_token_id");
  const pad = specialId("pad_token", "pad_token_id");
  const unk = specialId("unk_token", "unk_token_id");
  if (bos !== null) metadata.push(["tokenizer.ggml.bos_token_id", { type: "uint32", value: bos }]);
  if (eos !== null) metadata.push(["tokenizer.ggml.eos_token_id", { type: "uint32", value: eos }]);
  if (pad !== null) metadata.push(["tokenizer.ggml.padding_token_id", { type: "uint32", value: pad }]);
  if (unk !== null) metadata.push(["tokenizer.ggml.unknown_token_id", { type: "uint32", value: unk }]);
  // Written explicitly: llama.cpp's defaults for a gpt2 vocabulary depend on the pre-tokenizer.
  const addBos = typeof config["add_bos_token"] === "boolean" ? config["add_bos_token"] : bos !== null && postProcessorAddsBos(tokenizer, bos);
  metadata.push(["tokenizer.ggml.add_bos_token", addBos]);
  metadata.push(["tokenizer.ggml.add_eos_token", config["add_eos_token"] === true]);

  for (const [key, template] of await chatTemplates(modelDir, config, configFile)) metadata.push([key, template]);
  return metadata;
}

/** A ByteLevel pre-tokenizer, alone or in a Sequence, and a ByteLevel decoder. */
function usesByteLevel(tokenizer: Record<string, unknown>): boolean {
  const pre = asObject(tokenizer["pre_tokenizer"]);
  const steps = pre?.["type"] === "Sequence" && Array.isArray(pre["pretokenizers"]) ? (pre["pretokenizers"] as unknown[]) : [pre];
  return steps.some((s) => asObject(s)?.["type"] === "ByteLevel") && asObject(tokenizer["decoder"])?.["type"] === "ByteLevel";
}

/**
 * The llama.cpp pre-tokenizer that splits as tokenizer.json does: a lone ByteLevel with its
 * built-in regex is GPT-2's split ("gpt-2"); a Split with Qwen2's or Llama 3's regex before a
 * ByteLevel that does not split again is "qwen2" or "llama-bpe".
 */
function detectPre(preTokenizer: unknown, fail: (message: string) => never): string {
  const pre = asObject(preTokenizer);
  const steps = (pre?.["type"] === "Sequence" && Array.isArray(pre["pretokenizers"]) ? (pre["pretokenizers"] as unknown[]) : [pre]).map(asObject);
  const byteLevel = steps.find((s) => s?.["type"] === "ByteLevel");
  const splits = steps.filter((s) => s?.["type"] === "Split");
  if (steps.length === 1 && byteLevel !== undefined && byteLevel?.["use_regex"] !== false) return "gpt-2";
  if (steps.length === 2 && splits.length === 1 && byteLevel?.["use_regex"] === false) {
    const regex = asObject(splits[0]?.["pattern"])?.["Regex"];
    const known = KNOWN_SPLITS.find((k) => k.regex === regex);
    if (known !== undefined) return known.pre;
  }
  return fail(
    `pre_tokenizer ${steps.map((s) => shown(s?.["type"])).join(" → ")} is not one whose llama.cpp name is known (GPT-2, Qwen2, Llama 3); pass tokenizerPre to name it`,
  );
}

/** Whether the post-processor's template for a single sequence starts with the bos token. */
function postProcessorAddsBos(tokenizer: Record<string, unknown>, bos: number): boolean {
  const post = asObject(tokenizer["post_processor"]);
  const steps = post?.["type"] === "Sequence" && Array.isArray(post["processors"]) ? (post["processors"] as unknown[]) : [post];
  for (const step of steps.map(asObject)) {
    if (step?.["type"] !== "TemplateProcessing" || !Array.isArray(step["single"])) continue;
    const first = asObject(asObject(step["single"][0])?.["SpecialToken"]);
    const special = asObject(asObject(step["special_tokens"])?.[String(first?.["id"])]);
    const ids = special?.["ids"];
    if (Array.isArray(ids) && ids[0] === bos) return true;
  }
  return false;
}

/**
 * `tokenizer.chat_template` (and `tokenizer.chat_template.<name>` for named templates), from
 * tokenizer_config.json or, as recent transformers save it, chat_template.jinja.
 */
async function chatTemplates(modelDir: string, config: Record<string, unknown>, configFile: string): Promise<Array<[string, string]>> {
  const template = config["chat_template"];
  if (typeof template === "string") return [["tokenizer.chat_template", template]];
  if (Array.isArray(template)) {
    return template.map((entry, i): [string, string] => {
      const name = asObject(entry)?.["name"];
      const text = asObject(entry)?.["template"];
      if (typeof name !== "string" || typeof text !== "string") {
        throw new ModelFormatError(configFile, `chat_template[${i}] needs a string name and template`);
      }
      return [name === "default" ? "tokenizer.chat_template" : `tokenizer.chat_template.${name}`, text];
    });
  }
  try {
    return [["tokenizer.chat_template", (await readBoundedFile(path.join(modelDir, "chat_template.jinja"), LIMITS.chatTemplateBytes)).toString("utf8")]];
  } catch (err) {
    if ((err as { cause?: NodeJS.ErrnoException }).cause?.code === "ENOENT") return [];
    throw err;
  }
}
