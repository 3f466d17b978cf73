/**
 * Hugging Face Llama / Mistral / Qwen2 folder → GGUF that llama.cpp loads, as its
 * convert_hf_to_gguf.py writes one: llama.cpp tensor names, `<arch>.*` hyperparameters, the
 * tokenizer, and for the llama architecture q/k rows permuted to llama.cpp's rotary layout.
 */
import path from "node:path";
import { readModelConfig, type ModelConfig } from "./config.js";
import { ModelFormatError } from "./errors.js";
import { writeGgufPlanned, type GgufTensor, type GgufTensorPlan, type GgufTensorType, type GgufValue } from "./gguf.js";
import { Q8_0_BLOCK } from "./gguf-quant.js";
import { readGgufVocab } from "./gguf-tokenizer.js";
import { shown } from "./read-json.js";
import { listTensors, readTensorF32, type TensorInfo } from "./safetensors.js";

export interface ExportGgufOptions {
  /**
   * Stored type of the matrices; vectors (norms, biases) are always F32, as llama.cpp's converter
   * keeps them. "Q8_0" is ggml's 8-bit blocks of 32 (general.file_type MOSTLY_Q8_0); a matrix whose
   * rows are not a multiple of 32 long cannot be blocked and is stored F16, as llama.cpp's
   * converter falls back. Default "F16".
   */
  dtype?: "F32" | "F16" | "Q8_0";
  /** `general.name`. Default: the folder's name. */
  name?: string;
  /** `tokenizer.ggml.pre` to write instead of the one detected from tokenizer.json (see gguf-tokenizer.ts). */
  tokenizerPre?: string;
}

/** llama.cpp's llama_ftype values for the file types written here (ALL_F32, MOSTLY_F16, MOSTLY_Q8_0). */
export const FILE_TYPE = { F32: 0, F16: 1, Q8_0: 7 } as const;

/** Per-layer HF names (after `model.layers.N.`) → llama.cpp names (after `blk.N.`). */
export const LAYER_TENSORS: ReadonlyArray<readonly [string, string]> = [
  ["input_layernorm", "attn_norm"],
  ["self_attn.q_proj", "attn_q"],
  ["self_attn.k_proj", "attn_k"],
  ["self_attn.v_proj", "attn_v"],
  ["self_attn.o_proj", "attn_output"],
  ["post_attention_layernorm", "ffn_norm"],
  ["mlp.gate_proj", "ffn_gate"],
  ["mlp.up_proj", "ffn_up"],
  ["mlp.down_proj", "ffn_down"],
];

interface Planned {
  source: TensorInfo | null;
  plan: GgufTensorPlan;
  /** Heads to permute the rows by (llama q/k), or null. */
  permuteHeads: number | null;
  /** Data computed here rather than read (rope_freqs). */
  data: Float32Array | null;
}

/**
 * Writes `outFile` as a GGUF v3 file of the model in `modelDir` (config.json, safetensors,
 * tokenizer.json, tokenizer_config.json). general.architecture is "llama" for Llama and Mistral,
 * "qwen2" for Qwen2. Tensors are converted one at a time; the file appears once complete.
 * @throws ModelFormatError naming the file: an unsupported architecture or rope scaling, a missing,
 * unexpected or misshapen tensor, a tokenizer llama.cpp cannot be told about.
 */
export async function exportGguf(modelDir: string, outFile: string, opts: ExportGgufOptions = {}): Promise<void> {
  const dtype = opts.dtype ?? "F16";
  const cfg = await readModelConfig(modelDir);
  const arch = ggufArchitecture(cfg, modelDir);
  const planned = planTensors(cfg, arch, await listTensors(modelDir), dtype, modelDir);
  const embeddingRows = planned.find((p) => p.plan.name === "token_embd.weight")?.plan.shape[0] ?? cfg.vocabSize;

  const u32 = (value: number): GgufValue => ({ type: "uint32", value });
  const f32 = (value: number): GgufValue => ({ type: "float32", value });
  const metadata: Array<[string, GgufValue]> = [
    ["general.architecture", arch],
    ["general.name", opts.name ?? path.basename(path.resolve(modelDir))],
    ["general.file_type", u32(FILE_TYPE[dtype])],
    [`${arch}.vocab_size`, u32(embeddingRows)],
    [`${arch}.context_length`, u32(cfg.contextLength)],
    [`${arch}.embedding_length`, u32(cfg.hiddenSize)],
    [`${arch}.block_count`, u32(cfg.numLayers)],
    [`${arch}.feed_forward_length`, u32(cfg.intermediateSize)],
    [`${arch}.attention.head_count`, u32(cfg.numHeads)],
    [`${arch}.attention.head_count_kv`, u32(cfg.numKvHeads)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32(cfg.rmsNormEps)],
    [`${arch}.rope.freq_base`, f32(cfg.ropeTheta)],
    [`${arch}.rope.dimension_count`, u32(cfg.headDim)],
  ];
  if (cfg.headDim * cfg.numHeads !== cfg.hiddenSize) {
    metadata.push([`${arch}.attention.key_length`, u32(cfg.headDim)], [`${arch}.attention.value_length`, u32(cfg.headDim)]);
  }
  metadata.push(...ropeScalingMetadata(cfg, arch, modelDir));
  metadata.push(...(await readGgufVocab(modelDir, { embeddingRows, pre: opts.tokenizerPre ?? null, config: cfg.raw })));

  async function* tensors(): AsyncGenerator<GgufTensor> {
    for (const p of planned) {
      let data = p.data ?? (p.source === null ? new Float32Array(0) : await readTensorF32(p.source));
      if (p.permuteHeads !== null) data = permuteRotary(data, p.plan.shape, p.permuteHeads);
      yield { ...p.plan, data };
    }
  }
  await writeGgufPlanned(outFile, metadata, planned.map((p) => p.plan), tensors());
}

/** general.architecture for a config.json's architecture. @throws ModelFormatError naming config.json. */
export function ggufArchitecture(cfg: ModelConfig, modelDir: string): "llama" | "qwen2" {
  switch (cfg.architecture) {
    case "LlamaForCausalLM":
    case "MistralForCausalLM":
      return "llama";
    case "Qwen2ForCausalLM":
      return "qwen2";
    default:
      throw new ModelFormatError(path.join(modelDir, "config.json"), `architecture ${String(cfg.architecture)} has no GGUF export`);
  }
}

/**
 * Pairs each llama.cpp tensor with the HF tensor it comes from, checking names and shapes against
 * config.json, so that a folder llama.cpp would refuse is refused here with the tensor named.
 */
function planTensors(cfg: ModelConfig, arch: "llama" | "qwen2", hf: readonly TensorInfo[], dtype: GgufTensorType, modelDir: string): Planned[] {
  const byName = new Map(hf.map((t) => [t.name, t]));
  const used = new Set<string>();
  const out: Planned[] = [];
  const weightsFile = hf[0]?.file ?? path.join(modelDir, "model.safetensors");
  const fail = (file: string, message: string): never => {
    throw new ModelFormatError(file, message);
  };
  const add = (hfName: string, ggufName: string, shape: readonly number[] | null, permuteHeads: number | null = null): void => {
    const source = byName.get(hfName) ?? fail(weightsFile, `tensor \`${hfName}\` is missing`);
    if (shape !== null && source.shape.join(",") !== shape.join(",")) {
      fail(source.file, `tensor \`${hfName}\` has shape [${source.shape.join(", ")}], config.json implies [${shape.join(", ")}]`);
    }
    used.add(hfName);
    out.push({
      source,
      plan: { name: ggufName, shape: [...source.shape], type: storedType(source.shape, dtype) },
      permuteHeads,
      data: null,
    });
  };

  const h = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const embed = byName.get("model.embed_tokens.weight");
  const vocabRows = embed?.shape[0] ?? cfg.vocabSize;
  add("model.embed_tokens.weight", "token_embd.weight", [vocabRows, h]);
  const ropeFreqs = arch === "llama" ? llama3RopeFactors(cfg) : null;
  if (ropeFreqs !== null) {
    out.push({ source: null, plan: { name: "rope_freqs.weight", shape: [ropeFreqs.length], type: "F32" }, permuteHeads: null, data: ropeFreqs });
  }
  // llama.cpp's llama architecture rotates adjacent pairs; HF rotates halves: see permuteRotary.
  const permute = arch === "llama";
  const shapes: Record<string, readonly number[]> = {
    input_layernorm: [h],
    "self_attn.q_proj": [qDim, h],
    "self_attn.k_proj": [kvDim, h],
    "self_attn.v_proj": [kvDim, h],
    "self_attn.o_proj": [h, qDim],
    post_attention_layernorm: [h],
    "mlp.gate_proj": [cfg.intermediateSize, h],
    "mlp.up_proj": [cfg.intermediateSize, h],
    "mlp.down_proj": [h, cfg.intermediateSize],
  };
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const [hfPart, ggufPart] of LAYER_TENSORS) {
      const heads = !permute ? null : hfPart === "self_attn.q_proj" ? cfg.numHeads : hfPart === "self_attn.k_proj" ? cfg.numKvHeads : null;
      const hfBase = `model.layers.${layer}.${hfPart}`;
      const ggufBase = `blk.${layer}.${ggufPart}`;
      add(`${hfBase}.weight`, `${ggufBase}.weight`, shapes[hfPart] ?? null, heads);
      // Biases: Qwen2's q/k/v always; Llama's attention_bias / mlp_bias when the checkpoint has them.
      const shape = shapes[hfPart];
      if (byName.has(`${hfBase}.bias`) || (arch === "qwen2" && /[qkv]_proj$/.test(hfPart))) {
        add(`${hfBase}.bias`, `${ggufBase}.bias`, shape === undefined ? null : [shape[0] ?? 0], heads);
      }
    }
  }
  add("model.norm.weight", "output_norm.weight", [h]);
  if (!cfg.tieWordEmbeddings) add("lm_head.weight", "output.weight", [vocabRows, h]);
  else used.add("lm_head.weight"); // a tied checkpoint may still carry a copy; llama.cpp reuses token_embd

  for (const t of hf) {
    if (used.has(t.name) || t.name.endsWith(".rotary_emb.inv_freq")) continue;
    fail(t.file, `tensor \`${t.name}\` is not a ${cfg.architecture} weight that GGUF export knows`);
  }
  return out;
}

/** A tensor's stored type: vectors F32; under Q8_0, matrices whose rows do not split into blocks F16. */
function storedType(shape: readonly number[], dtype: GgufTensorType): GgufTensorType {
  if (shape.length === 1) return "F32";
  if (dtype === "Q8_0" && (shape[shape.length - 1] ?? 0) % Q8_0_BLOCK !== 0) return "F16";
  return dtype;
}

/** `<arch>.rope.scaling.*` for linear and YaRN scaling; Llama 3's scaling goes in rope_freqs.weight instead. */
function ropeScalingMetadata(cfg: ModelConfig, arch: string, modelDir: string): Array<[string, GgufValue]> {
  const scaling = cfg.ropeScaling;
  const type = scaling?.["rope_type"] ?? scaling?.["type"];
  if (scaling === null || type === "default" || (type === "llama3" && arch === "llama")) return [];
  const factor = scaling["factor"];
  if ((type === "linear" || type === "yarn") && typeof factor === "number") {
    const out: Array<[string, GgufValue]> = [
      [`${arch}.rope.scaling.type`, type],
      [`${arch}.rope.scaling.factor`, { type: "float32", value: factor }],
    ];
    const original = scaling["original_max_position_embeddings"];
    if (type === "yarn" && typeof original === "number") {
      out.push([`${arch}.rope.scaling.original_context_length`, { type: "uint32", value: original }]);
    }
    return out;
  }
  const why = type === "linear" || type === "yarn" ? `rope_scaling of type ${shown(type)} has no numeric \`factor\`` : `rope_scaling of type ${shown(type)} has no GGUF export (supported: linear, yarn, llama3)`;
  throw new ModelFormatError(path.join(modelDir, "config.json"), why);
}

/**
 * Llama 3.1's rope scaling as llama.cpp applies it: one divisor per rotary frequency, 1 for high
 * frequencies, `factor` for low ones and a smooth blend between (transformers'
 * `_compute_llama3_parameters`), stored as the rope_freqs.weight tensor. Null without llama3 scaling.
 */
export function llama3RopeFactors(cfg: ModelConfig): Float32Array | null {
  const scaling = cfg.ropeScaling;
  if ((scaling?.["rope_type"] ?? scaling?.["type"]) !== "llama3") return null;
  const num = (key: string, fallback: number): number => {
    const v = scaling?.[key];
    return typeof v === "number" ? v : fallback;
  };
  const factor = num("factor", 8);
  const lowFreqFactor = num("low_freq_factor", 1);
  const highFreqFactor = num("high_freq_factor", 4);
  const oldContext = num("original_max_position_embeddings", 8192);
  const lowFreqWavelen = oldContext / lowFreqFactor;
  const highFreqWavelen = oldContext / highFreqFactor;
  const out = new Float32Array(cfg.headDim / 2);
  for (let i = 0; i < out.length; i++) {
    const freq = 1 / Math.fround(cfg.ropeTheta ** ((2 * i) / cfg.headDim));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highFreqWavelen) out[i] = 1;
    else if (wavelen > lowFreqWavelen) out[i] = factor;
    else {
      const smooth = (oldContext / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

/**
 * Reorders the rows of a q or k projection (weight [heads*headDim, cols] or bias [heads*headDim])
 * from Hugging Face's rotary layout to llama.cpp's, as convert_hf_to_gguf.py does for the llama
 * architecture. HF rotates dimension i of a head with i + headDim/2 ("rotate_half"); llama.cpp's
 * llama rope rotates dimensions 2i and 2i+1. Within each head, row j*half + i (j = 0, 1) moves to
 * 2i + j, so the pairs HF rotates together end up adjacent. q and k get the same reordering, so
 * their dot products, and the attention scores, are unchanged. Qwen2 is not permuted: llama.cpp
 * runs it with the NeoX rope, which rotates halves as HF does. `unpermuteRotary` is the inverse.
 */
export function permuteRotary(data: Float32Array, shape: readonly number[], heads: number): Float32Array {
  return reorderRows(data, shape, heads, (i, j) => 2 * i + j, (i, j, half) => j * half + i);
}

/** The inverse of permuteRotary: llama.cpp's rotary layout back to Hugging Face's. */
export function unpermuteRotary(data: Float32Array, shape: readonly number[], heads: number): Float32Array {
  return reorderRows(data, shape, heads, (i, j, half) => j * half + i, (i, j) => 2 * i + j);
}

/** Copies, within each head, source row `from(i, j)` to row `to(i, j)` for i < headDim/2, j ∈ {0, 1}. */
function reorderRows(
  data: Float32Array,
  shape: readonly number[],
  heads: number,
  to: (i: number, j: number, half: number) => number,
  from: (i: number, j: number, half: number) => number,
): Float32Array {
  const rows = shape[0] ?? 0;
  const cols = shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
  const headDim = rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0 || data.length !== rows * cols) {
    throw new RangeError(`cannot permute [${shape.join(", ")}] (${data.length} values) over ${heads} heads of even size`);
  }
  const half = headDim / 2;
  const out = new Float32Array(data.length);
  for (let head = 0; head < heads; head++) {
    const base = head * headDim;
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const src = (base + from(i, j, half)) * cols;
        out.set(data.subarray(src, src + cols), (base + to(i, j, half)) * cols);
      }
    }
  }
  return out;
}
