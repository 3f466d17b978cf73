/**
 * A model in the engine and the calls that need none: options here are friendly (defaults, HF
 * configs); they are compiled into the exact DTOs of ./native.ts before they cross.
 */
import { listTensors, readModelConfig, readTensorF32, type ModelConfig as HfModelConfig } from "@lathe/models";
import { call, callAsync, loadAddon } from "./addon.js";
import { EngineError } from "./errors.js";
import type * as native from "./native.js";

/** The base linears QLoRA quantises by default: every projection of every layer (lm_head and the embeddings stay f32). */
export const NF4_MODULES: readonly native.LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/**
 * NF4 quantisation of `values` exactly as a QLoRA base weight is stored (bitsandbytes' NF4,
 * blocks of 64, absmax double-quantised to 8 bits in blocks of 256), and the dequantised values.
 */
export function nf4Roundtrip(values: Float32Array): native.Nf4RoundtripResult {
  const addonModule = loadAddon();
  return call(() => addonModule.nf4Roundtrip(values));
}

/**
 * The CPU backend's GEMM kernel and the machine's measured f32 FMA peak on `threads` threads
 * (0 = all), measured for `seconds` (default 1) on the calling thread. For benchmarks.
 */
export function cpuInfo(options: { threads?: number; seconds?: number } = {}): native.CpuInfo {
  const addonModule = loadAddon();
  return call(() => addonModule.cpuInfo({ threads: options.threads ?? 0, seconds: options.seconds ?? 1 }));
}

/**
 * W += scale·B·A in place (W [rows, cols], A [r, cols], B [rows, r], f32), on the engine's threads
 * and off the event loop: each element of B·A summed in f64, added to W in f64 and rounded once,
 * the same bits as @lathe/models' JS kernel. Leave the three arrays alone until it settles.
 * Its arguments are those of @lathe/models' MergeKernel, plus the thread count.
 * @throws EngineError INVALID_ARGUMENT, the message starting with `shape.name`, when an array's
 * length does not fit the shape.
 */
export function loraMerge(
  weight: Float32Array,
  a: Float32Array,
  b: Float32Array,
  shape: { name: string; rows: number; cols: number; r: number },
  scale: number,
  options: { numThreads?: number } = {},
): Promise<void> {
  const args: native.LoraMergeArgs = { name: shape.name, weight, a, b, rows: shape.rows, cols: shape.cols, r: shape.r, scale, numThreads: options.numThreads ?? 0 };
  return callAsync(() => loadAddon().loraMerge(args));
}

/**
 * The backends this engine can compute on on this machine: "cpu" first, then the device backends
 * compiled in whose device is present ("cuda"), in the order `device: "auto"` prefers them.
 */
export function devices(): string[] {
  const addonModule = loadAddon();
  return call(() => addonModule.backends());
}

/**
 * The engine's model config from a Hugging Face config.json as @lathe/models reads it.
 * `device`: the backend to compute on (see devices()); "auto" (the default) is the first device
 * backend usable here, else "cpu".
 * @throws EngineError UNSUPPORTED for a rope_scaling other than llama3.
 */
export function engineConfig(config: HfModelConfig, numThreads = 0, device = "auto"): native.ModelConfig {
  return {
    vocabSize: config.vocabSize,
    hiddenSize: config.hiddenSize,
    intermediateSize: config.intermediateSize,
    numLayers: config.numLayers,
    numHeads: config.numHeads,
    numKvHeads: config.numKvHeads,
    headDim: config.headDim,
    rmsNormEps: config.rmsNormEps,
    ropeTheta: config.ropeTheta,
    ropeScaling: ropeScaling(config.ropeScaling),
    tieWordEmbeddings: config.tieWordEmbeddings,
    attentionBias: config.attentionBias,
    numThreads,
    backend: device,
  };
}

function ropeScaling(raw: Record<string, unknown> | null): native.RopeScaling | null {
  if (raw === null) return null;
  const type = raw["rope_type"] ?? raw["type"];
  if (type === "default") return null;
  if (type !== "llama3") throw new EngineError("UNSUPPORTED", `config.json: rope_scaling type ${JSON.stringify(type)} is not supported (llama3 is)`);
  const num = (key: string): number => {
    const value = raw[key];
    if (typeof value !== "number" || !Number.isFinite(value)) throw new EngineError("INVALID_ARGUMENT", `config.json: rope_scaling.${key} must be a number`);
    return value;
  };
  return {
    type: "llama3",
    factor: num("factor"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    originalMaxPosition: num("original_max_position_embeddings"),
  };
}

/** LoRA settings; names follow PEFT's LoraConfig. */
export interface LoraOptions {
  r: number;
  /** lora_alpha. */
  alpha: number;
  /** lora_dropout. Default 0. */
  dropout?: number;
  /** use_rslora: scale alpha/sqrt(r) instead of alpha/r. Default false. */
  useRslora?: boolean;
  targetModules: native.LoraModule[];
  /** Seed of A's initialisation and of dropout. Default 0. */
  seed?: number | bigint;
}

/** One batch of `batch` rows of `seq` tokens (each array batch*seq long, row-major). */
export type Batch = native.BatchArgs;

export interface ForwardBackwardOptions {
  /** Accumulate d(loss·gradScale)/d(LoRA). Default true. */
  backward?: boolean;
  /** Apply LoRA dropout. Default true. */
  training?: boolean;
  /** Default 1 (use 1/accumulation steps when accumulating). */
  gradScale?: number;
  /** Return the [batch, seq, vocab] logits (costly; for tests). Default false. */
  logits?: boolean;
}

/** Token sequences for hiddenStates: each a non-empty list of token ids. */
export type TokenSequences = readonly (Int32Array | readonly number[])[];

export interface HiddenStatesBatchOptions {
  /**
   * Most tokens per engine call: sequences are grouped, in order, up to this many (a longer one
   * runs alone). Bounds the engine's working memory (about one layer's activations for that many
   * tokens) and the attention cost of a packed call. Default 4096.
   */
  maxBatchTokens?: number;
}

/**
 * Checks hiddenStates' arguments against a model config, naming the sequence and position at
 * fault, before anything runs: the engine checks the same, but only within each of its calls,
 * counting sequences from the call's first one.
 * @throws EngineError INVALID_ARGUMENT.
 */
export function checkHiddenStatesArgs(config: native.ModelConfig, sequences: TokenSequences, layer: number): void {
  const layers = config.numLayers;
  if (!Number.isInteger(layer) || layer < 0 || layer > layers) {
    throw new EngineError(
      "INVALID_ARGUMENT",
      `layer ${layer} is outside [0, ${layers}] (0: the embeddings; i: the output of model.layers[i-1]; ${layers} = num_hidden_layers: the last layer's output after the final norm)`,
    );
  }
  sequences.forEach((seq, i) => {
    if (seq.length === 0) throw new EngineError("INVALID_ARGUMENT", `sequence ${i} is empty: every sequence needs at least one token`);
    for (let t = 0; t < seq.length; t++) {
      const id = seq[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new EngineError("INVALID_ARGUMENT", `sequence ${i}, token ${t}: id ${id} is outside the vocabulary [0, ${config.vocabSize})`);
      }
    }
  });
}

/** AdamW with HF TrainingArguments' defaults. */
export interface AdamwOptions {
  lr: number;
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Default 0. */
  weightDecay?: number;
  /** Clip the global LoRA gradient norm to this (<= 0: no clipping). Default 1.0. */
  maxGradNorm?: number;
}

/** A model in the engine: frozen base weights, LoRA adapters, their gradients and AdamW state. */
export class Model {
  private lora: native.LoraConfig | null = null;

  private constructor(
    private readonly handle: native.NativeModel,
    readonly config: native.ModelConfig,
  ) {}

  /**
   * An empty model; set every weight with setWeight before running it.
   * @throws EngineError UNSUPPORTED when config.backend names a backend not usable here (the
   * message lists those that are).
   */
  static create(config: native.ModelConfig): Model {
    const addonModule = loadAddon();
    return new Model(call(() => new addonModule.Model(config)), config);
  }

  /**
   * A model with the weights of a Hugging Face folder (config.json and safetensors). Each
   * .safetensors file (model.safetensors, or each shard named by model.safetensors.index.json) is
   * memory-mapped by the engine and converted (F16/BF16 -> f32) straight into its weights; no
   * tensor passes through JS. `viaJs: true` reads every tensor into JS and calls setWeight instead
   * (the older path, kept for comparison in tests). `device`: the backend to compute on ("cpu",
   * "cuda"; default "auto": the first device backend usable here, else "cpu"; see devices()).
   */
  static async load(dir: string, options: { numThreads?: number; viaJs?: boolean; device?: string } = {}): Promise<Model> {
    const model = Model.create(engineConfig(await readModelConfig(dir), options.numThreads ?? 0, options.device ?? "auto"));
    try {
      const tensors = await listTensors(dir);
      if (options.viaJs === true) {
        for (const tensor of tensors) model.setWeight(tensor.name, await readTensorF32(tensor));
      } else {
        for (const file of new Set(tensors.map((t) => t.file))) model.loadSafetensors(file);
      }
    } catch (err) {
      model.free();
      throw err;
    }
    return model;
  }

  /**
   * Sets every tensor of one .safetensors file from a read-only mmap of it (F32, F16, BF16).
   * @throws EngineError INVALID_ARGUMENT for an unknown tensor name, a wrong shape or a truncated
   * file; UNSUPPORTED for another dtype.
   */
  loadSafetensors(file: string): void {
    call(() => this.handle.loadSafetensors(file));
  }

  /**
   * Gradient checkpointing: forward keeps only each layer's input; backward recomputes each
   * layer. Gradients are bit-identical; activation memory drops. Default off.
   */
  setGradientCheckpointing(enabled: boolean): void {
    call(() => this.handle.setGradientCheckpointing(enabled));
  }

  /** Peak bytes held for backward during the last forwardBackward (0 before the first). */
  activationBytes(): number {
    return call(() => this.handle.activationBytes());
  }

  /** The backend this model computes on ("cpu", "cuda"): what config.backend chose. */
  get device(): string {
    return call(() => this.handle.backend());
  }

  /** Sets a frozen base weight by its HF name. @throws EngineError INVALID_ARGUMENT for an unknown name or a wrong size. */
  setWeight(name: string, data: Float32Array): void {
    call(() => this.handle.setWeight(name, data));
  }

  /** Adds LoRA adapters with PEFT's initialisation (A kaiming-uniform, B zeros). */
  loraInit(options: LoraOptions): void {
    const lora: native.LoraConfig = {
      r: options.r,
      alpha: options.alpha,
      dropout: options.dropout ?? 0,
      useRslora: options.useRslora ?? false,
      targetModules: [...options.targetModules],
      seed: options.seed ?? 0,
    };
    call(() => this.handle.loraInit(lora));
    this.lora = lora;
  }

  /** PEFT names (without `base_model.model.`) and [rows, cols] of every LoRA tensor, A before B, layer by layer. */
  loraShapes(): Map<string, [number, number]> {
    const lora = this.lora;
    if (lora === null) throw new EngineError("FAILED_PRECONDITION", "no LoRA adapters: call loraInit first");
    const c = this.config;
    const io: Record<native.LoraModule, [number, number]> = {
      q_proj: [c.numHeads * c.headDim, c.hiddenSize],
      k_proj: [c.numKvHeads * c.headDim, c.hiddenSize],
      v_proj: [c.numKvHeads * c.headDim, c.hiddenSize],
      o_proj: [c.hiddenSize, c.numHeads * c.headDim],
      gate_proj: [c.intermediateSize, c.hiddenSize],
      up_proj: [c.intermediateSize, c.hiddenSize],
      down_proj: [c.hiddenSize, c.intermediateSize],
      lm_head: [c.vocabSize, c.hiddenSize],
    };
    const shapes = new Map<string, [number, number]>();
    const add = (path: string, module: native.LoraModule): void => {
      const [out, inp] = io[module];
      shapes.set(`${path}.lora_A.weight`, [lora.r, inp]);
      shapes.set(`${path}.lora_B.weight`, [out, lora.r]);
    };
    const order: native.LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    for (let layer = 0; layer < c.numLayers; layer++) {
      for (const m of order) {
        const block = m === "gate_proj" || m === "up_proj" || m === "down_proj" ? "mlp" : "self_attn";
        if (lora.targetModules.includes(m)) add(`model.layers.${layer}.${block}.${m}`, m);
      }
    }
    if (lora.targetModules.includes("lm_head")) add("lm_head", "lm_head");
    return shapes;
  }

  loraSet(name: string, data: Float32Array): void {
    call(() => this.handle.loraSet(name, data));
  }

  loraGet(name: string): Float32Array {
    const out = new Float32Array(this.loraSize(name));
    call(() => this.handle.loraGet(name, out));
    return out;
  }

  /** The gradient accumulated since the last zeroGrad. */
  loraGrad(name: string): Float32Array {
    const out = new Float32Array(this.loraSize(name));
    call(() => this.handle.loraGrad(name, out));
    return out;
  }

  zeroGrad(): void {
    call(() => this.handle.zeroGrad());
  }

  /** Loss (and, by default, LoRA gradients) of one batch, computed off the event loop. */
  forwardBackward(batch: Batch, options: ForwardBackwardOptions = {}): Promise<native.ForwardBackwardResult> {
    const args: native.ForwardBackwardArgs = {
      tokens: batch.tokens,
      labels: batch.labels,
      positions: batch.positions,
      segments: batch.segments,
      batch: batch.batch,
      seq: batch.seq,
      backward: options.backward ?? true,
      training: options.training ?? true,
      gradScale: options.gradScale ?? 1,
      wantLogits: options.logits ?? false,
      vocabSize: this.config.vocabSize,
    };
    return callAsync(() => this.handle.forwardBackward(args));
  }

  /**
   * The hidden states of one layer for each sequence, read-only, off the event loop. `layer`
   * indexes Hugging Face's `output_hidden_states=True` tuple: 0 is the embedding output; i in
   * 1..numLayers-1 the output of the i-th decoder layer (model.layers[i-1], the residual stream
   * before any norm); numLayers the last layer's output after the final RMSNorm (HF's
   * hidden_states[num_hidden_layers], equal to last_hidden_state). Eval mode: no LoRA dropout, no
   * gradients, nothing kept for backward; LoRA adapters, when set, apply. Each sequence is
   * computed as if alone (positions from 0, causal attention within it); sequences are packed into
   * few engine calls (see HiddenStatesBatchOptions) without padding.
   * @returns one row-major [length × hiddenSize] array per sequence, in order (views into the
   * buffer of their engine call).
   * @throws EngineError INVALID_ARGUMENT for a layer outside [0, numLayers], an empty sequence, or
   * a token id that is not an integer in [0, vocabSize); FAILED_PRECONDITION while another call runs.
   */
  async hiddenStates(sequences: TokenSequences, layer: number, options: HiddenStatesBatchOptions = {}): Promise<Float32Array[]> {
    const maxBatchTokens = options.maxBatchTokens ?? 4096;
    if (!Number.isInteger(maxBatchTokens) || maxBatchTokens <= 0) throw new EngineError("INVALID_ARGUMENT", `maxBatchTokens must be a positive integer, got ${maxBatchTokens}`);
    checkHiddenStatesArgs(this.config, sequences, layer);
    const hidden = this.config.hiddenSize;
    const out: Float32Array[] = [];
    for (let first = 0; first < sequences.length; ) {
      let end = first + 1;
      let total = sequences[first]!.length;
      while (end < sequences.length && total + sequences[end]!.length <= maxBatchTokens) total += sequences[end++]!.length;
      const group = sequences.slice(first, end);
      const tokens = new Int32Array(total);
      let at = 0;
      for (const seq of group) {
        tokens.set(seq, at);
        at += seq.length;
      }
      const args: native.HiddenStatesArgs = { tokens, lengths: Int32Array.from(group, (seq) => seq.length), layer, hiddenSize: hidden };
      const states = await callAsync(() => this.handle.hiddenStates(args));
      at = 0;
      for (const seq of group) {
        out.push(states.subarray(at * hidden, (at + seq.length) * hidden));
        at += seq.length;
      }
      first = end;
    }
    return out;
  }

  /** Clips the gradients, then one AdamW step, off the event loop. */
  adamwStep(options: AdamwOptions): Promise<native.AdamwResult> {
    const args: native.AdamwArgs = {
      lr: options.lr,
      beta1: options.beta1 ?? 0.9,
      beta2: options.beta2 ?? 0.999,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
      maxGradNorm: options.maxGradNorm ?? 1.0,
    };
    return callAsync(() => this.handle.adamwStep(args));
  }

  /**
   * QLoRA: stores the frozen weights of these linears as NF4 with double quantisation and frees
   * their f32 copies; forward and backward dequantise them on the fly. Call after every weight is
   * set. @throws EngineError INVALID_ARGUMENT for lm_head or a weight not yet set.
   */
  quantizeNf4(modules: readonly native.LoraModule[] = NF4_MODULES): void {
    call(() => this.handle.quantizeNf4([...modules]));
  }

  /**
   * `--base-dtype bf16`: stores the frozen weights of these linears in bf16 (half the memory) and
   * frees their f32 copies; their products round the activation or gradient to bf16 and sum in
   * f32 (AVX512_BF16 dot products where the CPU has them). "lm_head" does the same for the LM
   * head (a tied head gets a bf16 copy; the embedding lookup keeps the f32 table). LoRA weights,
   * gradients and the optimizer state stay f32. Call after every weight is set. Default: the 7
   * projections and the head.
   * @throws EngineError INVALID_ARGUMENT for a weight not yet set.
   */
  convertBaseToBf16(modules: readonly native.LoraModule[] = [...NF4_MODULES, "lm_head"]): void {
    call(() => this.handle.convertBf16([...modules]));
  }

  /** Bytes and element count of the frozen base weights as stored now. */
  memory(): native.MemoryReport {
    return call(() => this.handle.memory());
  }

  /** AdamW's first and second moments of a LoRA tensor (checkpointing). */
  adamwStateGet(name: string): { m: Float32Array; v: Float32Array } {
    const n = this.loraSize(name);
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    call(() => this.handle.adamwStateGet(name, m, v));
    return { m, v };
  }

  /** Restores a LoRA tensor's AdamW moments. @throws EngineError INVALID_ARGUMENT for a wrong size or a non-finite value. */
  adamwStateSet(name: string, m: Float32Array, v: Float32Array): void {
    call(() => this.handle.adamwStateSet(name, m, v));
  }

  /** AdamW's bias-correction step counter (steps taken since loraInit). */
  adamwStepCount(): number {
    return call(() => this.handle.adamwStepCountGet());
  }

  setAdamwStepCount(step: number): void {
    call(() => this.handle.adamwStepCountSet(step));
  }

  /** The LoRA dropout PRNG's state (xoshiro256**, 4 words). */
  rngState(): BigUint64Array {
    return call(() => this.handle.rngStateGet());
  }

  setRngState(state: BigUint64Array): void {
    call(() => this.handle.rngStateSet(state));
  }

  /** Releases the engine's memory (after a call in flight, if any). */
  free(): void {
    this.handle.free();
  }

  private loraSize(name: string): number {
    const shape = this.loraShapes().get(name);
    if (shape === undefined) throw new EngineError("INVALID_ARGUMENT", `unknown LoRA tensor \`${name}\``);
    return shape[0] * shape[1];
  }
}
