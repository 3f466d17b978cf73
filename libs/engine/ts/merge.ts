/**
 * Merging a LoRA adapter into its base model through the engine: @lathe/models' mergeAdapter
 * (which reads the folders, checks the adapter against the base, unties a tied lm_head and writes
 * the merged Hugging Face folder) with the engine's native kernel doing the arithmetic.
 */
import { mergeAdapter } from "@lathe/models";
import { loraMerge } from "./model.js";

export interface MergeLoraFolderOptions {
  /** The base model: a Hugging Face folder (config.json, model.safetensors or its shards, tokenizer files). */
  baseDir: string;
  /** The PEFT adapter: adapter_config.json and adapter_model.safetensors. */
  adapterDir: string;
  /** Where the merged model goes; a folder of its own (not baseDir or adapterDir). */
  outDir: string;
  /** Threads per weight. Default 0: every hardware thread (fewer for a small weight). */
  numThreads?: number;
}

/**
 * Writes base + adapter merged into `outDir`: each adapted weight W + scale·B·A (scale alpha/r, or
 * alpha/√r with rsLoRA), stored in W's dtype; every other tensor, the sharding, config and
 * tokenizer files as in the base. The files are byte-identical to those of @lathe/models'
 * mergeAdapter; only the arithmetic runs natively, on the engine's threads, off the event loop.
 * @throws ModelFormatError (from @lathe/models) naming the adapter tensor whose module the base
 * lacks or whose shape does not fit; RangeError when `outDir` is the base or adapter folder;
 * EngineError when the engine fails (FAILED_PRECONDITION: the addon is not built).
 */
export async function mergeLoraFolder(options: MergeLoraFolderOptions): Promise<void> {
  const numThreads = options.numThreads ?? 0;
  await mergeAdapter(options.baseDir, options.adapterDir, options.outDir, {
    kernel: (w, a, b, shape, scale) => loraMerge(w, a, b, shape, scale, { numThreads }),
  });
}
