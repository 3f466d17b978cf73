import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { trainByteLevelBpe } from "./bpe-train.js";
import { chatmlTemplate } from "./chat-templates.js";
import { tinyCorpus } from "./tiny-corpus.js";

/** Special tokens of a tiny tokenizer, in id order after the learned vocabulary (Qwen2's set). */
const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

export interface TinyTokenizerOptions {
  /** Total vocabulary size, special tokens included (default 512, at least 259). Fewer tokens result when the corpus runs out of pairs that occur twice. */
  vocabSize?: number;
}

/**
 * Writes tokenizer.json (byte-level BPE learned from a built-in corpus) and tokenizer_config.json
 * (ChatML template, eos `<|im_end|>`, pad `<|endoftext|>`) into `dir`. The bytes depend only on
 * `vocabSize`, so tests and tiny models are reproducible without downloads.
 */
export async function writeTinyTokenizer(dir: string, opts: TinyTokenizerOptions = {}): Promise<void> {
  const vocabSize = opts.vocabSize ?? 512;
  if (!Number.isInteger(vocabSize) || vocabSize < 256 + SPECIAL_TOKENS.length) {
    throw new RangeError(`vocabSize must be an integer of at least ${256 + SPECIAL_TOKENS.length}, got ${vocabSize}`);
  }
  const bpe = trainByteLevelBpe(tinyCorpus, vocabSize - SPECIAL_TOKENS.length);
  const addedTokens = SPECIAL_TOKENS.map((content, i) => ({
    id: bpe.vocab.length + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: VOCAB_PLACEHOLDER,
      merges: bpe.merges.map(([left, right]) => `${left} ${right}`),
    },
  };
  const config = {
    add_bos_token: false,
    add_eos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(
      addedTokens.map(({ id, ...token }) => [String(id), token]),
    ),
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    bos_token: null,
    chat_template: chatmlTemplate,
    clean_up_tokenization_spaces: false,
    eos_token: "<|im_end|>",
    errors: "replace",
    model_max_length: 2048,
    pad_token: "<|endoftext|>",
    split_special_tokens: false,
    tokenizer_class: "PreTrainedTokenizerFast",
    unk_token: null,
  };

  // JSON.stringify would move integer-like keys ("0", "42") to the front; tokenizer.json lists the vocabulary in id order.
  const vocab = `{\n${bpe.vocab.map((token, id) => `      ${JSON.stringify(token)}: ${id}`).join(",\n")}\n    }`;
  const tokenizerText = JSON.stringify(tokenizerJson, null, 2).replace(JSON.stringify(VOCAB_PLACEHOLDER), vocab);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, "tokenizer.json"), `${tokenizerText}\n`);
  await writeFile(path.join(dir, "tokenizer_config.json"), `${JSON.stringify(config, null, 2)}\n`);
}

const VOCAB_PLACEHOLDER = "\u0000vocab\u0000";
