import { Model } from "@lathe/engine";
import { loadTokenizer, readModelConfig, type ModelTokenizer } from "@lathe/models";
import type { EmbeddingProvider, TokenEmbeddings } from "@lathe/text";

/** The layer BERTScore takes when none is configured: two thirds of the way up, as the layers bert-score picks for most encoders sit. */
export const defaultLayer = (numLayers: number): number => Math.max(1, Math.round((numLayers * 2) / 3));

/**
 * BERTScore's token embeddings from any model folder the engine loads: the hidden states of one
 * layer (Hugging Face's `output_hidden_states` numbering) for the text's tokens, tokenized with the
 * model's own tokenizer without special tokens, cut at the model's context. Token identities (for
 * IDF) are the token ids. Loaded once and reused for a run; `free` releases it.
 */
export class EngineEncoder implements EmbeddingProvider {
  /** The engine runs one call per model at a time: concurrent answers wait their turn. */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly id: string,
    readonly layer: number,
    private readonly model: Model,
    private readonly tok: ModelTokenizer,
    private readonly hidden: number,
    private readonly maxTokens: number,
  ) {}

  /** `id` names the encoder in results (its digest); `layer` 0 is {@link defaultLayer}. */
  static async open(dir: string, id: string, layer: number, numThreads: number): Promise<EngineEncoder> {
    const config = await readModelConfig(dir);
    const chosen = layer === 0 ? defaultLayer(config.numLayers) : layer;
    if (chosen > config.numLayers) throw new RangeError(`BERTScore layer ${chosen}: the encoder has ${config.numLayers} layers (0 is its embeddings, ${config.numLayers} its last layer)`);
    const [model, tok] = await Promise.all([Model.load(dir, { numThreads }), loadTokenizer(dir)]);
    return new EngineEncoder(`${id}#layer=${chosen}`, chosen, model, tok, config.hiddenSize, config.contextLength > 0 ? config.contextLength : 2048);
  }

  async embed(texts: string[]): Promise<TokenEmbeddings[]> {
    const ids = texts.map((t) => this.tok.encode(t).slice(0, this.maxTokens));
    const nonEmpty = ids.filter((s) => s.length > 0);
    const run = this.queue.then(() => (nonEmpty.length === 0 ? [] : this.model.hiddenStates(nonEmpty, this.layer)));
    this.queue = run.catch(() => undefined);
    const states = await run;
    let k = 0;
    return ids.map((seq) => {
      if (seq.length === 0) return { tokens: [], vectors: [] };
      const flat = states[k++]!;
      return { tokens: seq.map(String), vectors: seq.map((_, i) => flat.subarray(i * this.hidden, (i + 1) * this.hidden)) };
    });
  }

  /** Frees the model once its last call is done. */
  async free(): Promise<void> {
    await this.queue;
    this.model.free();
  }
}
