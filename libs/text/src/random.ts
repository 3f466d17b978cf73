/**
 * mulberry32: a small, fast PRNG with 32 bits of state, giving floats in [0, 1). Used wherever
 * Lathe needs "random but the same for the same seed": splits, generated test corpora.
 */
export function mulberry32(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
