import type { LlamaContext, LlamaModel, Token } from "node-llama-cpp";
import { decodeRate, median } from "./stats.js";
import type { GenerationTiming } from "./stream-chat.js";

/**
 * One generation with node-llama-cpp directly, as the gateway runs it: a fresh sequence of the
 * context, `evaluate` with the gateway's sampling for a temperature-0 request (topP 1, topK 0),
 * stopping at an end-of-generation token or after `maxTokens`, the sequence disposed at the end.
 * Times from just before the sequence is taken; a `context` given as a function (making one, say,
 * after disposing another) is timed too.
 */
export async function generateDirect(
  model: LlamaModel,
  context: LlamaContext | (() => Promise<LlamaContext>),
  prompt: readonly number[],
  maxTokens: number,
  decode: (tokens: number[]) => string,
): Promise<GenerationTiming & { context: LlamaContext }> {
  const start = performance.now();
  const ctx = typeof context === "function" ? await context() : context;
  const sequence = ctx.getSequence();
  const tokens: Token[] = [];
  let firstMs = NaN;
  let lastMs = NaN;
  try {
    for await (const token of sequence.evaluate(prompt as Token[], { temperature: 0, topP: 1, topK: 0 })) {
      const now = performance.now() - start;
      if (model.isEogToken(token)) break;
      if (Number.isNaN(firstMs)) firstMs = now;
      lastMs = now;
      tokens.push(token);
      if (tokens.length >= maxTokens) break;
    }
  } finally {
    await sequence.dispose();
  }
  return { firstMs, lastMs, totalMs: performance.now() - start, tokens: tokens.length, text: decode(tokens), context: ctx };
}

/**
 * The llama.cpp thread count, from 1 to `max`, at which this model decodes fastest here (median
 * of a few generations each), with each count's tokens/s. More threads are not always faster: on
 * few cores, threads that wait on one another (and on whatever else runs) can halve the speed.
 */
export async function fastestThreads(
  model: LlamaModel,
  prompt: readonly number[],
  max: number,
  contextSize: number,
  decode: (tokens: number[]) => string,
): Promise<{ best: number; rates: Map<number, number> }> {
  const rates = new Map<number, number>();
  for (let threads = 1; threads <= max; threads++) {
    const context = await model.createContext({ contextSize, sequences: 1, threads });
    try {
      await generateDirect(model, context, prompt, 16, decode);
      const runs = [];
      for (let i = 0; i < 3; i++) runs.push(await generateDirect(model, context, prompt, 48, decode));
      rates.set(threads, median(runs.map(decodeRate)));
    } finally {
      await context.dispose();
    }
  }
  const best = [...rates.entries()].reduce((a, b) => (b[1] > a[1] ? b : a))[0];
  return { best, rates };
}
