import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { candidateProbability, LshIndex, optimalBandsRows } from "./lsh.js";
import { exactJaccard, MinHasher, wordShingles } from "./minhash.js";

const prng = mulberry32;

describe("optimalBandsRows", () => {
  it("picks the bands and rows datasketch picks for 128 permutations at 0.8", () => {
    expect(optimalBandsRows(128, 0.8)).toEqual({ bands: 9, rows: 13 });
  });

  it("never uses more rows than permutations and moves the S-curve with the threshold", () => {
    for (const [numPerm, threshold] of [[64, 0.5], [128, 0.9], [256, 0.7], [10, 0.3]] as const) {
      const { bands, rows } = optimalBandsRows(numPerm, threshold);
      expect(bands * rows).toBeLessThanOrEqual(numPerm);
      expect(candidateProbability(threshold + 0.1, bands, rows)).toBeGreaterThan(candidateProbability(threshold - 0.1, bands, rows));
    }
  });

  it("weights false negatives to lower the S-curve", () => {
    const balanced = optimalBandsRows(128, 0.8);
    const recall = optimalBandsRows(128, 0.8, [0.1, 0.9]);
    expect(candidateProbability(0.8, recall.bands, recall.rows)).toBeGreaterThan(candidateProbability(0.8, balanced.bands, balanced.rows));
  });

  it("rejects thresholds outside (0, 1)", () => {
    expect(() => optimalBandsRows(128, 1)).toThrow(RangeError);
    expect(() => optimalBandsRows(128, 0)).toThrow(RangeError);
  });
});

describe("LshIndex", () => {
  /** A pair of word lists with exact shingle Jaccard in [lo, hi]. */
  function pairNear(rand: () => number, lo: number, hi: number): [string, string] {
    for (;;) {
      const words = Array.from({ length: 100 }, () => `w${Math.floor(rand() * 100000)}`);
      const target = (lo + hi) / 2;
      // Replacing a fraction f of words keeps about (1-f)^3 of the shingles.
      const f = 1 - Math.cbrt((2 * target) / (1 + target));
      const other = words.map((w) => (rand() < f ? `v${Math.floor(rand() * 100000)}` : w));
      const a = words.join(" ");
      const b = other.join(" ");
      const j = exactJaccard(new Set(wordShingles(a, 3)), new Set(wordShingles(b, 3)));
      if (j >= lo && j <= hi) return [a, b];
    }
  }

  function foundRate(lo: number, hi: number, trials: number): number {
    const rand = prng(Math.round(lo * 1000));
    const hasher = new MinHasher();
    let found = 0;
    for (let t = 0; t < trials; t++) {
      const [a, b] = pairNear(rand, lo, hi);
      const index = new LshIndex({ numPerm: 128, threshold: 0.8 });
      index.insert(1, hasher.signature(a));
      if (index.query(hasher.signature(b)).includes(1)) found++;
    }
    return found / trials;
  }

  it("finds pairs at Jaccard 0.95 nearly always", () => {
    expect(foundRate(0.94, 0.96, 300)).toBeGreaterThanOrEqual(0.97);
  });

  it("rarely finds pairs at Jaccard 0.3", () => {
    expect(foundRate(0.28, 0.32, 300)).toBeLessThanOrEqual(0.02);
  });

  it("returns every id sharing a band once, ascending", () => {
    const hasher = new MinHasher();
    const index = new LshIndex({ numPerm: 128, threshold: 0.8 });
    const sig = hasher.signature("the same text every time");
    index.insert(30, sig);
    index.insert(10, sig);
    index.insert(20, sig);
    index.insert(10, sig);
    index.insert(40, hasher.signature("a completely different text about something else"));
    expect(index.query(sig)).toEqual([10, 20, 30]);
    expect(index.size).toBe(5);
  });

  it("finds each of many entries by its own signature as its tables grow", () => {
    const hasher = new MinHasher({ numPerm: 64 });
    const index = new LshIndex({ numPerm: 64, threshold: 0.8 });
    const sigs = Array.from({ length: 5000 }, (_, i) => hasher.signature(`document ${i} with words ${i * 7} and ${i * 13}`));
    sigs.forEach((sig, i) => index.insert(i, sig));
    for (let i = 0; i < sigs.length; i += 7) expect(index.query(sigs[i]!)).toContain(i);
    expect(index.query(hasher.signature("nothing like the others at all"))).toEqual([]);
  });

  it("rejects a signature of the wrong length", () => {
    const index = new LshIndex({ numPerm: 128, threshold: 0.8 });
    expect(() => index.insert(1, new Uint32Array(64))).toThrow(RangeError);
    expect(() => index.query(new Uint32Array(64))).toThrow(RangeError);
  });
});
