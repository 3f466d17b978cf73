/** The mean loss of a model, with or without a PEFT adapter, over a JSONL file; teacher-forced scores of reference answers. */
import { loadTokenizer, padExamples, tokenizeExample, type ChatTurn, type LabeledSequence, type ModelTokenizer } from "@lathe/models";
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
  /** The share of those labels the model's argmax predicted (teacher forcing), as TRL's mean_token_accuracy. */
  meanTokenAccuracy: number;
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
    const { loss, labels, correct } = await meanLoss(model, data.examples, batchSize, padTokenId(tok));
    return { loss, perplexity: Math.exp(loss), tokens: labels, meanTokenAccuracy: correct / labels, truncatedExamples: data.truncated };
  } finally {
    model.free();
  }
}

/** Mean loss over all labels of `examples`, no backward, dropout off, and how many labels the argmax predicted. */
export async function meanLoss(model: Model, examples: readonly LabeledSequence[], batchSize: number, padId: number): Promise<{ loss: number; labels: number; correct: number }> {
  let sum = 0;
  let labels = 0;
  let correct = 0;
  for (let first = 0; first < examples.length; first += batchSize) {
    const batch = toBatch(padExamples(examples.slice(first, first + batchSize), padId));
    const n = labelCount(batch);
    if (n === 0) continue;
    const r = await model.forwardBackward(batch, { backward: false, training: false });
    sum += r.loss * n;
    labels += n;
    correct += r.correctCount;
  }
  if (labels === 0) throw new EngineError("INVALID_ARGUMENT", "the evaluation data has no trained tokens");
  return { loss: sum / labels, labels, correct };
}

/** Teacher forcing of one reference answer after its prompt. */
export interface ReferenceScore {
  /** The summed cross-entropy (nats) of the answer's tokens (its end token included). */
  lossSum: number;
  /** The answer's tokens scored: 0 when truncation left none. */
  tokens: number;
  /** Of those, how many the model's argmax predicted. */
  correct: number;
  /** The chat was longer than the model's context and was cut at its end. */
  truncated: boolean;
}

/**
 * Scores reference answers under a model (with an optional PEFT adapter) by teacher forcing: the
 * chat rendered with the model's template and tokenized as for training, only its LAST assistant
 * message labelled (earlier ones, as few-shot examples, are prompt), one forward without dropout.
 * Gives what eval loss, perplexity and mean token accuracy are made of, per example. One call at
 * a time per model: concurrent calls wait their turn. `free` releases the model.
 */
export class ReferenceScorer {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly model: Model,
    private readonly tok: ModelTokenizer,
    private readonly maxSeqLength: number,
  ) {}

  static async open(modelDir: string, options: { adapterDir?: string; numThreads?: number; maxSeqLength?: number } = {}): Promise<ReferenceScorer> {
    const maxSeqLength = positiveInt("maxSeqLength", options.maxSeqLength ?? 2048);
    const [model, tok] = await Promise.all([Model.load(modelDir, { numThreads: options.numThreads ?? 0 }), loadTokenizer(modelDir)]);
    try {
      if (options.adapterDir !== undefined) await applyAdapter(model, options.adapterDir);
    } catch (err) {
      model.free();
      throw err;
    }
    return new ReferenceScorer(model, tok, maxSeqLength);
  }

  /** @throws Error when the chat is malformed (no final assistant message). */
  score(messages: readonly ChatTurn[]): Promise<ReferenceScore> {
    const ex = tokenizeExample(this.tok, { messages: messages.map((m) => ({ role: m.role, content: m.content })) }, { maxSeqLength: this.maxSeqLength, lastAnswerOnly: true });
    const run = this.queue.then(async (): Promise<ReferenceScore> => {
      const batch = toBatch(padExamples([{ ids: ex.ids, labels: ex.labels }], 0));
      const n = labelCount(batch);
      if (n === 0) return { lossSum: 0, tokens: 0, correct: 0, truncated: ex.truncated };
      const r = await this.model.forwardBackward(batch, { backward: false, training: false });
      return { lossSum: r.loss * n, tokens: n, correct: r.correctCount, truncated: ex.truncated };
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  async free(): Promise<void> {
    await this.queue;
    this.model.free();
  }
}
