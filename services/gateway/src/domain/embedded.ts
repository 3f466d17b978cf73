import { getLlama, LlamaGrammarEvaluationState, LlamaLogLevel, type Llama, type LlamaContext, type LlamaGrammar, type LlamaModel, type Token } from "node-llama-cpp";
import { inspectModelFolder, loadTokenizer, type ModelTokenizer } from "@lathe/models";
import { badRequest, OpenAiError } from "./errors.js";
import type { ServingFiles } from "./files.js";
import { createJsonGrammar, type GrammarSchema } from "./json-schema.js";
import { ContextPool, QueueFullError } from "./pool.js";
import type { ResolvedModel } from "./registry.js";
import { chatPrompt, completionPrompt, generationOf } from "./requests.js";
import type { ServingBackend, ServingRequest } from "./serving.js";
import { checkChatTemplate } from "./template.js";

export interface EmbeddedOptions {
  maxContexts: number;
  /** Bytes all contexts of one base may take (KV cache and compute buffers, as llama.cpp's file insights estimate them). */
  contextMemoryBytes: number;
  sequencesPerContext: number;
  maxQueue: number;
  retryAfterS: number;
  contextSize: number;
  /** 0: llama.cpp's choice. */
  threads: number;
}

/** One generation: the prompt's tokens and OpenAI's sampling settings. */
export interface GenerationRequest {
  prompt: number[];
  /** Undefined: up to the context's end. */
  maxTokens: number | undefined;
  temperature: number;
  topP: number;
  seed: number | undefined;
  stop: string[];
  /** A grammar the answer must follow (a JSON response_format). */
  grammar?: LlamaGrammar | undefined;
}

export interface GenerationResult {
  text: string;
  finishReason: "stop" | "length";
  promptTokens: number;
  completionTokens: number;
}

/** A base model loaded once, with its tokenizer and its pool of contexts (one per adapter). */
interface LoadedBase {
  model: LlamaModel;
  tokenizer: ModelTokenizer;
  /** The fingerprint of the chat template chat prompts are rendered with (`sha256:…`, "" when none). */
  chatTemplateFingerprint: string;
  pool: ContextPool<LlamaContext>;
  contextSize: number;
  /** Contexts kept at once: LATHE_GATEWAY_MAX_CONTEXTS, or fewer when the memory budget holds fewer. */
  maxContexts: number;
  /** The estimated bytes of one context. */
  contextBytes: number;
}

const BARE = "base";
/** What node-llama-cpp's JSON grammars put after the JSON. */
const JSON_END = "\n\n\n\n";

/**
 * llama.cpp in this process through node-llama-cpp: each base model loaded once (its GGUF export),
 * each adapter a context over it (node-llama-cpp fixes LoRA adapters per context and caches them
 * by path, so the path is the adapter's content-addressed GGUF file), pooled per base by
 * {@link ContextPool}. Prompts are rendered and tokenized with the model's own tokenizer and
 * chat template, as training did; tokens are counted here (node-llama-cpp returns no usage).
 */
export class EmbeddedBackend implements ServingBackend {
  private llama: Promise<Llama> | undefined;
  private readonly bases = new Map<string, Promise<LoadedBase>>();
  /** Grammars of JSON schemas by their text, the most recently used last (bounded). */
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  private made = 0;

  constructor(
    private readonly files: ServingFiles,
    private readonly opts: EmbeddedOptions,
  ) {}

  /** Tokens per sequence for a model: its deployment's, else the gateway's default within the model's context. */
  private contextSizeOf(m: ResolvedModel): number {
    return m.contextSize ?? Math.min(this.opts.contextSize, m.contextLength > 0 ? m.contextLength : this.opts.contextSize);
  }

  private base(digest: string, contextSize: number): Promise<LoadedBase> {
    // One loaded model per base and context size (deployments may ask for their own size).
    const key = `${digest}@${contextSize}`;
    let loaded = this.bases.get(key);
    if (!loaded) {
      loaded = (async () => {
        this.llama ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
        const llama = await this.llama;
        const [modelPath, folder] = await Promise.all([this.files.baseGguf(digest), this.files.modelFolder(digest)]);
        const [model, tokenizer, inspection] = await Promise.all([llama.loadModel({ modelPath }), loadTokenizer(folder), inspectModelFolder(folder)]);
        // As many contexts as the count allows and the memory budget holds (at least one).
        const need = await model.fileInsights.estimateContextResourceRequirementsV2({ contextSize, modelGpuLayers: model.gpuLayers, sequences: this.opts.sequencesPerContext });
        const perContext = Math.max(1, need.cpuRam + need.gpuVram);
        const maxContexts = Math.max(1, Math.min(this.opts.maxContexts, Math.floor(this.opts.contextMemoryBytes / perContext)));
        const pool = new ContextPool<LlamaContext>({
          maxContexts,
          sequencesPerContext: this.opts.sequencesPerContext,
          maxQueue: this.opts.maxQueue,
          create: async (key) => {
            this.made++;
            return model.createContext({
              contextSize,
              sequences: this.opts.sequencesPerContext,
              ...(this.opts.threads > 0 ? { threads: this.opts.threads } : {}),
              ...(key === BARE ? {} : { lora: { adapters: [{ filePath: await this.files.loraGguf(digest, key), scale: 1 }] } }),
            });
          },
          dispose: (context) => context.dispose(),
        });
        return { model, tokenizer, chatTemplateFingerprint: inspection.chatTemplateFingerprint, pool, contextSize, maxContexts, contextBytes: perContext };
      })();
      loaded.catch(() => this.bases.delete(key));
      this.bases.set(key, loaded);
    }
    return loaded;
  }

  /**
   * Makes a deployment ready to answer at once: the base model's GGUF made and loaded, each
   * adapter's GGUF LoRA file made (contexts are still made on first use, and evicted when idle).
   */
  async prepare(baseDigest: string, contextSize: number, adapterDigests: readonly string[]): Promise<void> {
    await this.base(baseDigest, contextSize);
    for (const d of adapterDigests) await this.files.loraGguf(baseDigest, d);
  }

  /** The model's tokenizer (for rendering and counting prompts). */
  async tokenizer(m: ResolvedModel): Promise<ModelTokenizer> {
    return (await this.base(m.baseDigest, this.contextSizeOf(m))).tokenizer;
  }

  /** The fingerprint of the chat template the model's chat prompts are rendered with (`sha256:…`, "" when it has none). */
  async chatTemplateFingerprint(m: ResolvedModel): Promise<string> {
    return (await this.base(m.baseDigest, this.contextSizeOf(m))).chatTemplateFingerprint;
  }

  /** Base models loaded (or loading): one per base, however many adapters are served over it. */
  get loadedBaseModels(): number {
    return this.bases.size;
  }

  /** Contexts made since start, over all bases (more than the adapters served: some were evicted and made again). */
  get contextsMade(): number {
    return this.made;
  }

  /**
   * Answers a chat (rendered with the model's chat template, refused when an adapter was trained
   * with another) or a completion.
   */
  async serve(m: ResolvedModel, req: ServingRequest, signal: AbortSignal, onText?: (delta: string) => void, onStart?: () => void): Promise<GenerationResult> {
    const tok = await this.tokenizer(m);
    let prompt: number[];
    if (req.kind === "chat") {
      checkChatTemplate(m, await this.chatTemplateFingerprint(m));
      prompt = chatPrompt(tok, req.body);
      if (req.format.kind !== "text") {
        const gen = { ...generationOf(req.body, prompt), grammar: await this.grammar(req.format.grammarSchema) };
        // node-llama-cpp's JSON grammars end an answer with four newlines (a stop trigger only its
        // chat API acts on): here a stop sequence, and the JSON before it is the answer.
        gen.stop = [...gen.stop, JSON_END];
        return this.generate(m, gen, signal, onText, onStart);
      }
    } else {
      prompt = completionPrompt(tok, req.body);
    }
    return this.generate(m, generationOf(req.body, prompt), signal, onText, onStart);
  }

  /** The grammar of a normalised JSON schema, made once and kept (the 64 most recently used). */
  private grammar(schema: GrammarSchema): Promise<LlamaGrammar> {
    const key = JSON.stringify(schema);
    let g = this.grammars.get(key);
    if (g) this.grammars.delete(key);
    else {
      g = (async () => {
        this.llama ??= getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
        return createJsonGrammar(await this.llama, schema);
      })();
      g.catch(() => this.grammars.delete(key));
    }
    this.grammars.set(key, g);
    if (this.grammars.size > 64) this.grammars.delete(this.grammars.keys().next().value!);
    return g;
  }

  /**
   * Generates after `req.prompt` with the model (and adapter) `m`; `onText` gets the answer as it
   * grows, never text a stop sequence may still claim; `onStart` is called once the request holds
   * a sequence (past the queue). Aborting `signal` ends it early.
   */
  async generate(m: ResolvedModel, req: GenerationRequest, signal: AbortSignal, onText?: (delta: string) => void, onStart?: () => void): Promise<GenerationResult> {
    const base = await this.base(m.baseDigest, this.contextSizeOf(m));
    if (req.prompt.length === 0) throw badRequest("The prompt is empty.", "prompt");
    const room = base.contextSize - req.prompt.length;
    if (room <= 0) throw badRequest(`This model's context is ${base.contextSize} tokens; the prompt has ${req.prompt.length}.`, "messages", "context_length_exceeded");
    if (req.maxTokens !== undefined && req.maxTokens > room) {
      throw badRequest(`This model's context is ${base.contextSize} tokens: the prompt has ${req.prompt.length}, so at most ${room} can be generated, not ${req.maxTokens}.`, "max_tokens", "context_length_exceeded");
    }
    const maxTokens = req.maxTokens ?? room;
    let lease;
    try {
      lease = await base.pool.acquire(m.adapter?.digest ?? BARE, signal);
    } catch (err) {
      if (err instanceof QueueFullError) {
        throw new OpenAiError(429, "rate_limit_error", `The model ${m.id} is busy: ${err.queued} requests are waiting. Retry shortly.`, "queue_full", null, this.opts.retryAfterS);
      }
      throw err;
    }
    const sequence = lease.context.getSequence();
    try {
      onStart?.();
      const out: Token[] = [];
      const stops = new StopScanner(req.stop);
      const decoder = new IncrementalDecoder(base.tokenizer);
      let finishReason: GenerationResult["finishReason"] = "length";
      let emitted = 0;
      let text = "";
      let stopped = false;
      // Adds decoded text; true when a stop sequence ends the answer.
      const add = (piece: string): boolean => {
        text += piece;
        const cut = stops.find(text, emitted);
        if (cut === undefined) return false;
        text = text.slice(0, cut);
        return true;
      };
      if (maxTokens > 0) {
        const options = {
          temperature: req.temperature,
          topP: req.topP,
          topK: 0,
          ...(req.seed === undefined ? {} : { seed: req.seed }),
          ...(req.grammar === undefined ? {} : { grammarEvaluationState: new LlamaGrammarEvaluationState({ model: base.model, grammar: req.grammar }) }),
        };
        for await (const token of sequence.evaluate(req.prompt as Token[], options)) {
          if (base.model.isEogToken(token)) {
            finishReason = "stop";
            break;
          }
          out.push(token);
          if (add(decoder.push(token))) {
            stopped = true;
            break;
          }
          // Text that a stop sequence may still claim waits.
          const safe = text.length - stops.holdBack;
          if (safe > emitted) {
            onText?.(text.slice(emitted, safe));
            emitted = safe;
          }
          if (out.length >= maxTokens || signal.aborted) break;
        }
      }
      if (!stopped) stopped = add(decoder.flush());
      if (stopped) finishReason = "stop";
      if (text.length > emitted) onText?.(text.slice(emitted));
      return { text, finishReason, promptTokens: req.prompt.length, completionTokens: out.length };
    } finally {
      // The sequence's id returns to the context only once its disposal (under the context's lock)
      // is done: the next request of this context would otherwise find no sequence left.
      try {
        await sequence.dispose();
      } finally {
        lease.release();
      }
    }
  }

  /** Queue depth and loaded contexts per base model (and context size), with the most contexts it keeps and their estimated size. */
  async stats(): Promise<{ base: string; contexts: number; busy: number; queued: number; maxContexts: number; contextBytes: number }[]> {
    const out = [];
    for (const [key, loaded] of this.bases) {
      const b = await loaded.catch(() => undefined);
      if (b) out.push({ base: key, ...b.pool.stats, maxContexts: b.maxContexts, contextBytes: b.contextBytes });
    }
    return out;
  }

  async close(): Promise<void> {
    const bases = [...this.bases.values()];
    this.bases.clear();
    for (const loaded of bases) {
      const b = await loaded.catch(() => undefined);
      if (!b) continue;
      await b.pool.close();
      await b.model.dispose();
    }
    if (this.llama) await (await this.llama).dispose();
  }
}

/** Finds the earliest stop sequence in generated text. */
class StopScanner {
  /** Characters at the end that may be the start of a stop sequence. */
  readonly holdBack: number;

  constructor(private readonly stops: readonly string[]) {
    this.holdBack = Math.max(0, ...stops.map((s) => s.length - 1));
  }

  /** Where the first stop sequence starts in `text`, looking from just before `from`; undefined when none does. */
  find(text: string, from: number): number | undefined {
    let best: number | undefined;
    for (const s of this.stops) {
      const at = text.indexOf(s, Math.max(0, from - s.length));
      if (at >= 0 && (best === undefined || at < best)) best = at;
    }
    return best;
  }
}

/**
 * Text of generated tokens as they come, each piece once: a token's text is taken from a decode
 * of it with the few tokens before it (so that decoders that strip or merge at the start of a
 * decode do so only at the start), and withheld while it ends in a character whose bytes are not
 * all there yet. Linear in the answer's length.
 */
export class IncrementalDecoder {
  private readonly tokens: number[] = [];
  private prefix = 0;
  private read = 0;

  constructor(private readonly tok: Pick<ModelTokenizer, "decode">) {}

  /** The new text that `token` completes (often empty while a character is incomplete). */
  push(token: number): string {
    this.tokens.push(token);
    const before = this.tok.decode(this.tokens.slice(this.prefix, this.read));
    const now = this.tok.decode(this.tokens.slice(this.prefix));
    if (now.length <= before.length || now.endsWith("\ufffd")) return "";
    this.prefix = this.read;
    this.read = this.tokens.length;
    return now.slice(before.length);
  }

  /** What is still withheld, as it decodes. */
  flush(): string {
    const before = this.tok.decode(this.tokens.slice(this.prefix, this.read));
    const now = this.tok.decode(this.tokens.slice(this.prefix));
    this.prefix = this.read = this.tokens.length;
    return now.slice(before.length);
  }
}
