/**
 * The hidden states of one layer of a model folder (with an optional PEFT adapter) for token
 * sequences: what the evaluator's BERTScore embeds tokens with. Model.hiddenStates does the work.
 */
import { readModelConfig } from "@lathe/models";
import { Model, checkHiddenStatesArgs, engineConfig, type HiddenStatesBatchOptions, type TokenSequences } from "./model.js";
import { applyAdapter } from "./train/init-adapter.js";

export interface HiddenStatesOptions extends HiddenStatesBatchOptions {
  /**
   * Index into Hugging Face's `output_hidden_states=True` tuple: 0 the embedding output, i the
   * output of the i-th decoder layer (model.layers[i-1], before any norm), num_hidden_layers the
   * last layer's output after the final RMSNorm. Required.
   */
  layer: number;
  /** A PEFT adapter to apply; default none (the base model). */
  adapterDir?: string;
  /** Engine threads. Default 0 (all). */
  numThreads?: number;
}

/**
 * Loads the model in `modelDir` (and the adapter in `adapterDir`), computes the hidden states of
 * `layer` for each sequence as if it were alone (positions from 0, causal attention; no dropout,
 * no gradients) and frees the model. See Model.hiddenStates for the convention.
 * @returns one row-major [length × hidden_size] array per sequence, in order.
 * @throws EngineError INVALID_ARGUMENT, before the weights are loaded, for a layer outside
 * [0, num_hidden_layers], an empty sequence or a token id outside the vocabulary (naming the
 * sequence and position); ModelFormatError (from @lathe/models) for an unreadable folder.
 */
export async function hiddenStates(modelDir: string, sequences: TokenSequences, options: HiddenStatesOptions): Promise<Float32Array[]> {
  const numThreads = options.numThreads ?? 0;
  checkHiddenStatesArgs(engineConfig(await readModelConfig(modelDir), numThreads), sequences, options.layer);
  const model = await Model.load(modelDir, { numThreads });
  try {
    if (options.adapterDir !== undefined) await applyAdapter(model, options.adapterDir);
    return await model.hiddenStates(sequences, options.layer, options);
  } finally {
    model.free();
  }
}
