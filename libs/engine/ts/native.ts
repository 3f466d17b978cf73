/**
 * Every type that crosses the Node-API boundary (binding/binding.cpp), in one place, as the
 * addon sees it. Internal: ts/index.ts is the public surface. Fields the native side may leave
 * empty are written `T | null`, never optional, so that a missing field is a type error here
 * rather than a silent default there.
 */

/** Module names LoRA can adapt, as PEFT's `target_modules` writes them. */
export type LoraModule = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj" | "lm_head";

/** `rope_scaling` of type llama3 (HF's `_compute_llama3_parameters`). */
export interface RopeScaling {
  type: "llama3";
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  /** `original_max_position_embeddings`. */
  originalMaxPosition: number;
}

/** lathe_model_config. */
export interface ModelConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2). */
  attentionBias: boolean;
  /** 0: every hardware thread. */
  numThreads: number;
  /**
   * The backend to compute on: "cpu", "cuda", or null / "auto" for the first device backend
   * usable here, else "cpu" (lathe_model_config.backend). One that is not usable here:
   * UNSUPPORTED, naming those that are.
   */
  backend: string | null;
}

/** lathe_lora_config. */
export interface LoraConfig {
  r: number;
  alpha: number;
  dropout: number;
  useRslora: boolean;
  targetModules: LoraModule[];
  /** Seeds PEFT's initialisation of A and the dropout masks. */
  seed: number | bigint;
}

/** One batch of `batch` rows of `seq` tokens (each array batch*seq long, row-major). */
export interface BatchArgs {
  tokens: Int32Array;
  /** -100 where nothing is trained; already shifted (the label of t is the token after t). */
  labels: Int32Array;
  /** RoPE positions, restarting at 0 in each packed sequence. */
  positions: Int32Array;
  /** Sequence id of each token in its row (attention never crosses them); null: one per row. */
  segments: Int32Array | null;
  batch: number;
  seq: number;
}

/** Arguments of lathe_forward_backward: a batch and what to do with it. */
export interface ForwardBackwardArgs extends BatchArgs {
  backward: boolean;
  training: boolean;
  gradScale: number;
  /** Return [batch, seq, vocab] logits (tests only: costly). */
  wantLogits: boolean;
  /** Size of the logits' last axis; read when wantLogits is true. */
  vocabSize: number;
}

export interface ForwardBackwardResult {
  /** Mean loss over the unmasked labels. */
  loss: number;
  labelCount: number;
  /** Of those labels, how many the logits predicted (argmax, first maximum on ties): mean token accuracy = correctCount / labelCount. */
  correctCount: number;
  logits: Float32Array | null;
}

/** Arguments of lathe_adamw_step. */
export interface AdamwArgs {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** <= 0: no clipping. */
  maxGradNorm: number;
}

export interface AdamwResult {
  /** Global norm of the LoRA gradients before clipping. */
  gradNorm: number;
}

/**
 * Arguments of lathe_hidden_states: `lengths.length` sequences, their tokens one after another.
 * Each runs as if alone (positions from 0, causal attention within it), in eval mode.
 */
export interface HiddenStatesArgs {
  /** The sequences' token ids, one after another (sum of lengths). */
  tokens: Int32Array;
  /** Each sequence's length (> 0); at least one. */
  lengths: Int32Array;
  /** Index into HF's output_hidden_states tuple: 0 embeddings, i the i-th layer's output, numLayers after the final norm. */
  layer: number;
  /** Size of the result's rows (the model's hidden_size; the engine checks it). */
  hiddenSize: number;
}

/** lathe_model_memory: the frozen base weights as stored now (f32: 4 bytes each; NF4 linears about 0.516). */
export interface MemoryReport {
  baseBytes: number;
  baseParams: number;
}

/** lathe_nf4_roundtrip: NF4 (blocks of 64, double-quantised absmax) then back. */
export interface Nf4RoundtripResult {
  /** The dequantised values. */
  values: Float32Array;
  /** (n+1)/2 bytes, two codes each: element 2i in the high nibble, 2i+1 in the low one. */
  codes: Uint8Array;
}

/** Arguments of lathe_lora_merge: weight += scale · b·a, in place. */
export interface LoraMergeArgs {
  /** The base weight's HF name; error messages start with it. */
  name: string;
  /** [rows, cols] f32, written in place off the event loop: the caller leaves it (and a, b) alone until the Promise settles. */
  weight: Float32Array;
  /** lora_A, [r, cols]. */
  a: Float32Array;
  /** lora_B, [rows, r]. */
  b: Float32Array;
  rows: number;
  cols: number;
  r: number;
  /** lora_alpha / r, or lora_alpha / √r with rsLoRA; used as a double. */
  scale: number;
  /** 0: every hardware thread (fewer for a small weight). */
  numThreads: number;
}

/** Codes of errors thrown by the addon: lathe_status names, and FAILED_PRECONDITION for a freed or busy model. */
export type NativeErrorCode = "INVALID_ARGUMENT" | "UNSUPPORTED" | "OUT_OF_MEMORY" | "NAN" | "CANCELLED" | "INTERNAL" | "FAILED_PRECONDITION";

/** What the addon throws or rejects with. */
export interface NativeError extends Error {
  code: NativeErrorCode;
}

/** The addon's Model class: one lathe_model. Throws NativeError. */
export interface NativeModel {
  setWeight(name: string, data: Float32Array): void;
  loraInit(config: LoraConfig): void;
  loraSet(name: string, data: Float32Array): void;
  /** Fills `out`, whose length must be the tensor's element count. */
  loraGet(name: string, out: Float32Array): void;
  loraGrad(name: string, out: Float32Array): void;
  zeroGrad(): void;
  /** Runs on the libuv thread pool; the model is busy until it settles. */
  forwardBackward(args: ForwardBackwardArgs): Promise<ForwardBackwardResult>;
  /** Runs on the libuv thread pool; the model is busy until it settles. */
  adamwStep(args: AdamwArgs): Promise<AdamwResult>;
  /** Runs on the libuv thread pool; the model is busy until it settles. Resolves to [sum(lengths), hiddenSize]. */
  hiddenStates(args: HiddenStatesArgs): Promise<Float32Array>;
  /** QLoRA: stores these base linears as NF4 and frees their f32 copies (lm_head: INVALID_ARGUMENT). */
  quantizeNf4(modules: LoraModule[]): void;
  /** bf16 base: stores these base linears in bf16 and frees their f32 copies (lm_head: INVALID_ARGUMENT). */
  convertBf16(modules: LoraModule[]): void;
  memory(): MemoryReport;
  /** lathe_model_set_gradient_checkpointing: keep only layer inputs, recompute in backward (bit-identical gradients). */
  setGradientCheckpointing(enabled: boolean): void;
  /** lathe_model_activation_bytes: peak bytes held for backward during the last forwardBackward (0 before). */
  activationBytes(): number;
  /** lathe_model_backend: the backend this model computes on ("cpu", "cuda"). */
  backend(): string;
  /** lathe_model_load_safetensors: mmaps one .safetensors file and sets every tensor in it (F32/F16/BF16 -> f32). Synchronous. */
  loadSafetensors(path: string): void;
  /** Copies a LoRA tensor's AdamW moments into `m` and `v` (each the tensor's element count). */
  adamwStateGet(name: string, m: Float32Array, v: Float32Array): void;
  adamwStateSet(name: string, m: Float32Array, v: Float32Array): void;
  /** AdamW's bias-correction step counter t (steps taken since loraInit). */
  adamwStepCountGet(): number;
  adamwStepCountSet(step: number): void;
  /** The dropout PRNG's xoshiro256** state: 4 words. */
  rngStateGet(): BigUint64Array;
  /** 4 words, not all zero. */
  rngStateSet(state: BigUint64Array): void;
  /** Releases the engine's memory (after a pending call, if one runs). Idempotent. */
  free(): void;
}

/** What the CPU backend computes with on this machine (benchmarks print it). */
export interface CpuInfo {
  /** The GEMM micro-kernel chosen at run time by CPUID: "avx512", "avx2" or "portable". */
  gemmKernel: string;
  /** Measured f32 FMA throughput of that kernel's instruction set on the given threads, GFLOP/s. */
  fmaPeakGflops: number;
}

/** The module object of build/Release/lathe_engine_node.node. */
export interface NativeAddon {
  Model: new (config: ModelConfig) => NativeModel;
  nf4Roundtrip(values: Float32Array): Nf4RoundtripResult;
  /** Runs on the libuv thread pool; rejects with INVALID_ARGUMENT (message starting with the name) when a length does not fit. */
  loraMerge(args: LoraMergeArgs): Promise<void>;
  /** Blocks the calling thread for about `seconds` while it measures the FMA peak. */
  cpuInfo(args: { threads: number; seconds: number }): CpuInfo;
  /** lathe_backend_name's list: "cpu" first, then the device backends usable on this machine. */
  backends(): string[];
}
