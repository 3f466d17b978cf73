import type { GenerationTiming } from "./stream-chat.js";

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** Tokens per second from the first token to the last: decoding, without the prompt. */
export const decodeRate = (t: GenerationTiming): number => (t.tokens - 1) / ((t.lastMs - t.firstMs) / 1000);

/** Tokens per second over the whole generation, prompt and first token included. */
export const endToEndRate = (t: GenerationTiming): number => t.tokens / (t.totalMs / 1000);

/** Median milliseconds of `n` calls of `f`, one at a time. */
export async function timeEach(n: number, f: () => Promise<unknown>): Promise<number> {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await f();
    ms.push(performance.now() - start);
  }
  return median(ms);
}
