import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { LIMITS } from "./limits.js";
import { readJsonFile } from "./read-json.js";
import { writeSafetensors, type Dtype } from "./safetensors.js";
import { writeTinyTokenizer } from "./tiny-tokenizer.js";

/** Shape of a tiny random model; every size is a positive integer. */
export interface TinyModelOptions {
  /** Layout: "llama" (LlamaForCausalLM) or "qwen2" (Qwen2ForCausalLM, q/k/v biases). Default "llama". */
  arch?: "llama" | "qwen2";
  /** Decoder layers. Default 2. */
  layers?: number;
  /** hidden_size. Default 64. */
  hidden?: number;
  /** num_attention_heads; must divide hidden. Default 4. */
  heads?: number;
  /** num_key_value_heads; must divide heads. Default 2 (grouped-query attention). */
  kvHeads?: number;
  /** intermediate_size of the SwiGLU MLP. Default 128. */
  intermediate?: number;
  /** vocab_size, also the tokenizer's size (at least 259). Default 512. */
  vocab?: number;
  /** Seed of the weights (an unsigned 32-bit integer). Default 0. */
  seed?: number;
  /** tie_word_embeddings: no lm_head.weight, the embeddings serve as the head. Default false. */
  tied?: boolean;
  /** Stored dtype of the weights. Default "F32". */
  dtype?: Dtype;
}

const TORCH_DTYPE: Record<Dtype, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };
/** The transformers release whose config layout we write. */
const TRANSFORMERS_VERSION = "4.45.0";
const CONTEXT_LENGTH = 2048;
/** HF's initializer_range: the std of a freshly initialised linear layer. */
const INIT_STD = 0.02;

/**
 * Writes a complete Hugging Face model folder of random weights: config.json, model.safetensors
 * (HF tensor names), generation_config.json, and the tiny tokenizer (tokenizer.json,
 * tokenizer_config.json with the ChatML template). Weights are drawn per tensor from a seeded
 * generator (roughly normal, std 0.02; norm weights 1), so the bytes depend only on the options.
 */
export async function writeTinyModel(dir: string, opts: TinyModelOptions = {}): Promise<void> {
  const arch = opts.arch ?? "llama";
  const layers = positiveInt("layers", opts.layers ?? 2);
  const hidden = positiveInt("hidden", opts.hidden ?? 64);
  const heads = positiveInt("heads", opts.heads ?? 4);
  const kvHeads = positiveInt("kvHeads", opts.kvHeads ?? 2);
  const intermediate = positiveInt("intermediate", opts.intermediate ?? 128);
  const vocab = positiveInt("vocab", opts.vocab ?? 512);
  const seed = opts.seed ?? 0;
  const tied = opts.tied ?? false;
  const dtype = opts.dtype ?? "F32";
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an unsigned 32-bit integer, got ${seed}`);
  if (hidden % heads !== 0) throw new RangeError(`heads (${heads}) must divide hidden (${hidden})`);
  if (heads % kvHeads !== 0) throw new RangeError(`kvHeads (${kvHeads}) must divide heads (${heads})`);
  const headDim = hidden / heads;

  await mkdir(dir, { recursive: true });
  await writeTinyTokenizer(dir, { vocabSize: vocab });
  const ids = await specialTokenIds(dir);

  const qwen2 = arch === "qwen2";
  const config: Record<string, unknown> = {
    architectures: [qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
    attention_dropout: 0.0,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    head_dim: headDim,
    hidden_act: "silu",
    hidden_size: hidden,
    initializer_range: INIT_STD,
    intermediate_size: intermediate,
    max_position_embeddings: CONTEXT_LENGTH,
    model_type: qwen2 ? "qwen2" : "llama",
    num_attention_heads: heads,
    num_hidden_layers: layers,
    num_key_value_heads: kvHeads,
    rms_norm_eps: qwen2 ? 1e-6 : 1e-5,
    rope_scaling: null,
    rope_theta: qwen2 ? 1000000.0 : 10000.0,
    tie_word_embeddings: tied,
    torch_dtype: TORCH_DTYPE[dtype],
    transformers_version: TRANSFORMERS_VERSION,
    use_cache: true,
    vocab_size: vocab,
    ...(qwen2
      ? { max_window_layers: layers, sliding_window: CONTEXT_LENGTH, use_sliding_window: false }
      : { attention_bias: false, mlp_bias: false, pretraining_tp: 1 }),
  };
  const generation = {
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    transformers_version: TRANSFORMERS_VERSION,
  };

  const tensors: { name: string; dtype: Dtype; shape: number[]; data: Float32Array }[] = [];
  const random = (name: string, shape: number[]): void => {
    tensors.push({ name, dtype, shape, data: normalish(seed, name, shape.reduce((n, d) => n * d, 1), INIT_STD) });
  };
  const ones = (name: string, shape: number[]): void => {
    tensors.push({ name, dtype, shape, data: new Float32Array(shape.reduce((n, d) => n * d, 1)).fill(1) });
  };
  const qDim = heads * headDim;
  const kvDim = kvHeads * headDim;
  random("model.embed_tokens.weight", [vocab, hidden]);
  for (let layer = 0; layer < layers; layer++) {
    const p = `model.layers.${layer}`;
    ones(`${p}.input_layernorm.weight`, [hidden]);
    random(`${p}.self_attn.q_proj.weight`, [qDim, hidden]);
    random(`${p}.self_attn.k_proj.weight`, [kvDim, hidden]);
    random(`${p}.self_attn.v_proj.weight`, [kvDim, hidden]);
    if (qwen2) {
      random(`${p}.self_attn.q_proj.bias`, [qDim]);
      random(`${p}.self_attn.k_proj.bias`, [kvDim]);
      random(`${p}.self_attn.v_proj.bias`, [kvDim]);
    }
    random(`${p}.self_attn.o_proj.weight`, [hidden, qDim]);
    ones(`${p}.post_attention_layernorm.weight`, [hidden]);
    random(`${p}.mlp.gate_proj.weight`, [intermediate, hidden]);
    random(`${p}.mlp.up_proj.weight`, [intermediate, hidden]);
    random(`${p}.mlp.down_proj.weight`, [hidden, intermediate]);
  }
  ones("model.norm.weight", [hidden]);
  if (!tied) random("lm_head.weight", [vocab, hidden]);

  await writeFile(path.join(dir, "config.json"), jsonText(config));
  await writeFile(path.join(dir, "generation_config.json"), jsonText(generation));
  await writeSafetensors(path.join(dir, "model.safetensors"), tensors, { format: "pt" });
}

/** Ids of the tiny tokenizer's special tokens, read back so they stay right if its vocabulary ends early. */
async function specialTokenIds(dir: string): Promise<{ bos: number; eos: number; pad: number }> {
  const json = (await readJsonFile(path.join(dir, "tokenizer.json"), LIMITS.tokenizerJsonBytes)) as { added_tokens: Array<{ id: number; content: string }> };
  const id = (content: string): number => {
    const token = json.added_tokens.find((t) => t.content === content);
    if (token === undefined) throw new Error(`tiny tokenizer has no ${content}`);
    return token.id;
  };
  // Qwen2's convention: documents start and pad with <|endoftext|>, chat answers end with <|im_end|>.
  return { bos: id("<|endoftext|>"), eos: id("<|im_end|>"), pad: id("<|endoftext|>") };
}

/** JSON as transformers writes it: keys sorted, two-space indent, a final newline. */
export function jsonText(value: Record<string, unknown>): string {
  const sorted = Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return `${JSON.stringify(sorted, null, 2)}\n`;
}

/**
 * `count` values of mean 0 and standard deviation `std` from a generator seeded by (seed, name),
 * so a tensor's values do not depend on which tensors come before it. Each value is the scaled sum
 * of four 16-bit uniforms (Irwin–Hall): close to normal, and only integer arithmetic and exact
 * scaling, so every platform draws the same numbers.
 */
export function normalish(seed: number, name: string, count: number, std: number): Float32Array {
  const next = mulberry32((fnv1a(name) ^ Math.imul(seed, 0x9e3779b1)) >>> 0);
  const out = new Float32Array(count);
  // Four U(0,1) sum to mean 2, variance 1/3.
  const scale = (std * Math.sqrt(3)) / 65536;
  for (let i = 0; i < count; i++) {
    const a = next();
    const b = next();
    const sum = (a >>> 16) + (a & 0xffff) + (b >>> 16) + (b & 0xffff) + 2 - 2 * 65536;
    out[i] = sum * scale;
  }
  return out;
}

function mulberry32(state: number): () => number {
  let a = state;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, "utf8")) hash = Math.imul(hash ^ byte, 0x01000193);
  return hash >>> 0;
}

function positiveInt(name: string, value: number): number {
  if (!Number.isInteger(value) || value <= 0) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}
