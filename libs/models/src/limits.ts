/**
 * The largest sizes Lathe accepts from the files of a model or adapter folder, in one place.
 *
 * A file states numbers (layers, vocabulary, header lengths, counts) that the readers would
 * otherwise turn straight into lists and buffers; a config.json saying 10⁹ layers once made the
 * expected-tensor list 4.7 GB and took the service down. Every such number is checked against
 * these maxima, and where the file's own size bounds it (a header, a count of records that each
 * take bytes), against that too, before anything is allocated from it. So what a request can
 * cost in memory follows the bytes it brings, never a number it states.
 *
 * The maxima sit well above every released Llama / Mistral / Qwen2 checkpoint (Llama 3.1 405B:
 * 126 layers, hidden 16384, intermediate 53248, 128 heads; Qwen2.5-1M: context 1010000; the
 * largest vocabularies are about 260k), so no real model meets them.
 */
export const LIMITS = {
  /** `num_hidden_layers`. */
  layers: 1024,
  /** `hidden_size` (65536·2). */
  hiddenSize: 131_072,
  /** `intermediate_size` (4 × the largest hidden size). */
  intermediateSize: 524_288,
  /** `vocab_size`, and the entries and ids of a tokenizer's vocabulary, added tokens and merges. */
  vocabSize: 1 << 22,
  /** `num_attention_heads` and `num_key_value_heads`. */
  heads: 1024,
  /** `head_dim`. */
  headDim: 1024,
  /** `max_position_embeddings`, and rope_scaling's `original_max_position_embeddings`. */
  contextLength: 1 << 24,
  /** `rope_theta` (the largest released one is 1e7). */
  ropeTheta: 1e12,
  /** rope_scaling's `factor`, `low_freq_factor`, `high_freq_factor`, `beta_fast`, `beta_slow` and the like. */
  ropeScalingValue: 1e6,

  /** Bytes of config.json, adapter_config.json, tokenizer_config.json, an index, generation_config.json. */
  jsonFileBytes: 16 << 20,
  /** Bytes of tokenizer.json (the largest real ones, 256k-token vocabularies, are about 35 MB). */
  tokenizerJsonBytes: 64 << 20,
  /** Bytes of chat_template.jinja. */
  chatTemplateBytes: 4 << 20,

  /** A safetensors JSON header, as the reference implementation limits it. */
  safetensorsHeaderBytes: 100_000_000,
  /** Dimensions of one tensor. */
  tensorRank: 8,
  /** Characters of a tensor name (real ones are under 100). */
  tensorNameChars: 1024,

  /** Tokens of one stored training sequence (the recipe's largest max_seq_length). */
  sequenceTokens: 1 << 20,

  /** PEFT `r`. */
  loraRank: 16_384,
  /** PEFT `lora_alpha`. */
  loraAlpha: 1e6,
  /** Entries of a `target_modules` list. */
  targetModules: 1024,
  /** Characters of a `target_modules` name or pattern. */
  targetModuleChars: 4096,
  /** Milliseconds a `target_modules` pattern may take to match every module of an adapter. */
  targetPatternMs: 1000,
  /** Bytes of tensor data scanned for NaN and infinity at a time. */
  scanChunkBytes: 1 << 20,

  /** Dimensions of a GGUF tensor (ggml's GGML_MAX_DIMS). */
  ggufDims: 4,
  /** Arrays within arrays in GGUF metadata (llama.cpp writes none). */
  ggufArrayDepth: 2,
} as const;
