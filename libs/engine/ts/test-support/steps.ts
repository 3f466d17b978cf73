/**
 * A deterministic next-token batch and a short training run, shared by the engine's tests of
 * stored-weight formats (bf16, NF4) and loading. Test-only: not compiled into dist.
 */
import type { Batch, Model } from "../index.js";

/** `batch` rows of `seq` tokens (a fixed stride through the vocabulary), each labelled with the next token. */
export function nextTokenBatch(batch: number, seq: number, vocab: number): Batch {
  const n = batch * seq;
  const tokens = Int32Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
  const labels = Int32Array.from({ length: n }, (_, i) => ((i + 1) % seq === 0 ? -100 : tokens[i + 1]!));
  const positions = Int32Array.from({ length: n }, (_, i) => i % seq);
  return { tokens, labels, positions, segments: null, batch, seq };
}

/** The loss of `model` on `batch` (gradients kept), then after `steps` AdamW steps at lr 1e-2 on it. */
export async function lossBeforeAndAfterSteps(model: Model, batch: Batch, steps = 10): Promise<{ first: number; last: number }> {
  const first = (await model.forwardBackward(batch, { training: false })).loss;
  let last = first;
  for (let step = 0; step < steps; step++) {
    await model.adamwStep({ lr: 1e-2 });
    model.zeroGrad();
    last = (await model.forwardBackward(batch, { training: false })).loss;
  }
  return { first, last };
}
