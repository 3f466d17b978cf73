/** The mean loss of a model, with or without a PEFT adapter, over a JSONL file. */
import { loadTokenizer, padExamples, type LabeledSequence } from "@lathe/models";
import { EngineError } from "../errors.js";
import { Model } from "../model.js";
import { labelCount, padTokenId, readExamples, toBatch } from "./batches.js";
import { positiveInt } from "./config.js";
import { applyAdapter } from "./init-adapter.js";

export interface EvalLossOptions {
  /** A PEFT adapter to apply; default none (the base model). */
  adapterDir?: string;
  /** Default 2048. */
  maxSeqLength?: number;
  /** Default 4. */
  batchSize?: number;
  /** Default 0 (all). */
  numThreads?: number;
  /** Default false. */
  trainOnInputs?: boolean;
}

export interface EvalLossResult {
  /** Mean loss over every label of the data. */
  loss: number;
  perplexity: number;
  /** Labels (trained tokens) the mean runs over. */
  tokens: number;
  truncatedExamples: number;
}

/** Mean loss and perplexity of a model (with an optional PEFT adapter) on a JSONL file. */
export async function evalLoss(modelDir: string, dataPath: string, options: EvalLossOptions = {}): Promise<EvalLossResult> {
  const maxSeqLength = positiveInt("maxSeqLength", options.maxSeqLength ?? 2048);
  const batchSize = positiveInt("batchSize", options.batchSize ?? 4);
  const tok = await loadTokenizer(modelDir);
  const data = await readExamples(dataPath, tok, { maxSeqLength, trainOnInputs: options.trainOnInputs ?? false });
  const model = await Model.load(modelDir, { numThreads: options.numThreads ?? 0 });
  try {
    if (options.adapterDir !== undefined) await applyAdapter(model, options.adapterDir);
    const { loss, labels } = await meanLoss(model, data.examples, batchSize, padTokenId(tok));
    return { loss, perplexity: Math.exp(loss), tokens: labels, truncatedExamples: data.truncated };
  } finally {
    model.free();
  }
}

/** Mean loss over all labels of `examples`, no backward, dropout off. */
export async function meanLoss(model: Model, examples: readonly LabeledSequence[], batchSize: number, padId: number): Promise<{ loss: number; labels: number }> {
  let sum = 0;
  let labels = 0;
  for (let first = 0; first < examples.length; first += batchSize) {
    const batch = toBatch(padExamples(examples.slice(first, first + batchSize), padId));
    const n = labelCount(batch);
    if (n === 0) continue;
    const r = await model.forwardBackward(batch, { backward: false, training: false });
    sum += r.loss * n;
    labels += n;
  }
  if (labels === 0) throw new EngineError("INVALID_ARGUMENT", "the evaluation data has no trained tokens");
  return { loss: sum / labels, labels };
}
