import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { meanWithCi, pairedComparison, percentile } from "./stats.js";

/** n standard normal draws (Box–Muller) from a seeded generator. */
function normals(seed: number, n: number): number[] {
  const rand = mulberry32(seed);
  return Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()));
}

describe("percentile", () => {
  it("interpolates linearly between ranks like numpy's default", () => {
    // Values from numpy 2.4: np.percentile(v, p).
    const v = [35, 15, 50, 20, 40];
    const want: [number, number][] = [[0, 15], [5, 16], [25, 20], [40, 29], [50, 35], [95, 48], [100, 50]];
    for (const [p, value] of want) expect(percentile(v, p)).toBeCloseTo(value, 12);
    const w = [3.5, -1, 7, 7, 2, 10.25, 0];
    const wantW: [number, number][] = [[10, -0.4], [33, 1.96], [50, 3.5], [90, 8.3], [99, 10.055]];
    for (const [p, value] of wantW) expect(percentile(w, p)).toBeCloseTo(value, 12);
  });

  it("leaves the input in its order", () => {
    const v = [3, 1, 2];
    percentile(v, 50);
    expect(v).toEqual([3, 1, 2]);
  });

  it("gives the value itself for one value", () => {
    expect(percentile([4.5], 0)).toBe(4.5);
    expect(percentile([4.5], 95)).toBe(4.5);
  });

  it("refuses no values, non-finite values and p outside 0–100", () => {
    expect(() => percentile([], 50)).toThrow(/values is empty/);
    expect(() => percentile([1, NaN], 50)).toThrow(/values\[1\] is NaN/);
    expect(() => percentile([1], 101)).toThrow(/between 0 and 100/);
    expect(() => percentile([1], -1)).toThrow(RangeError);
  });
});

describe("meanWithCi", () => {
  const values = normals(1, 200).map((x) => 0.6 + 0.1 * x);

  it("gives the mean and an interval around it", () => {
    const r = meanWithCi(values, { seed: 42 });
    expect(r.mean).toBeCloseTo(values.reduce((s, v) => s + v, 0) / values.length, 12);
    expect(r.lower).toBeLessThan(r.mean);
    expect(r.upper).toBeGreaterThan(r.mean);
    expect(r).toMatchObject({ n: 200, level: 0.95, resamples: 1000 });
    // The bootstrap standard error of a mean is about σ/√n: the 95% half-width ≈ 1.96·0.1/√200.
    const halfWidth = (r.upper - r.lower) / 2;
    expect(halfWidth).toBeGreaterThan(0.8 * 0.0139);
    expect(halfWidth).toBeLessThan(1.2 * 0.0139);
  });

  it("is the same for the same seed and differs for another", () => {
    expect(meanWithCi(values, { seed: 7 })).toEqual(meanWithCi(values, { seed: 7 }));
    expect(meanWithCi(values, { seed: 7 }).lower).not.toBe(meanWithCi(values, { seed: 8 }).lower);
  });

  it("widens with the level", () => {
    const narrow = meanWithCi(values, { seed: 3, level: 0.8 });
    const wide = meanWithCi(values, { seed: 3, level: 0.99 });
    expect(wide.lower).toBeLessThan(narrow.lower);
    expect(wide.upper).toBeGreaterThan(narrow.upper);
  });

  it("covers the true mean about as often as the level says", () => {
    // 300 samples of 40 draws from N(0.5, 0.2²); a 90% interval should hold 0.5 in about 270.
    let covered = 0;
    for (let k = 0; k < 300; k++) {
      const r = meanWithCi(normals(1000 + k, 40).map((x) => 0.5 + 0.2 * x), { seed: k, resamples: 500, level: 0.9 });
      if (r.lower <= 0.5 && 0.5 <= r.upper) covered++;
    }
    expect(covered).toBeGreaterThan(0.83 * 300);
    expect(covered).toBeLessThan(0.96 * 300);
  });

  it("collapses to the value when there is no spread", () => {
    expect(meanWithCi([0.25, 0.25, 0.25], { seed: 1 })).toMatchObject({ mean: 0.25, lower: 0.25, upper: 0.25 });
    expect(meanWithCi([2], { seed: 1 })).toMatchObject({ mean: 2, lower: 2, upper: 2, n: 1 });
  });

  it("refuses no values and invalid options", () => {
    expect(() => meanWithCi([], { seed: 1 })).toThrow(/values is empty/);
    expect(() => meanWithCi([1], { seed: 1.5 })).toThrow(/seed must be a safe integer/);
    expect(() => meanWithCi([1], { seed: 1, resamples: 0 })).toThrow(/resamples must be a positive integer/);
    expect(() => meanWithCi([1], { seed: 1, level: 1 })).toThrow(/level must be greater than 0 and less than 1/);
  });
});

describe("pairedComparison", () => {
  // Per-example difficulty dominates the scores; the candidate b is 0.02 better on average.
  const difficulty = normals(11, 300);
  const noiseA = normals(12, 300);
  const noiseB = normals(13, 300);
  const a = difficulty.map((d, i) => 0.5 + 0.3 * d + 0.03 * noiseA[i]!);
  const b = difficulty.map((d, i) => 0.52 + 0.3 * d + 0.03 * noiseB[i]!);

  it("gives both means and the mean difference b − a with its interval", () => {
    const r = pairedComparison(a, b, { seed: 42 });
    expect(r.meanA).toBeCloseTo(a.reduce((s, v) => s + v, 0) / a.length, 12);
    expect(r.meanB).toBeCloseTo(b.reduce((s, v) => s + v, 0) / b.length, 12);
    expect(r.meanDifference).toBeCloseTo(r.meanB - r.meanA, 12);
    expect(r.lower).toBeLessThan(r.meanDifference);
    expect(r.upper).toBeGreaterThan(r.meanDifference);
    expect(r.lower).toBeGreaterThan(0);
    expect(r.pValue).toBeLessThan(0.01);
    expect(r.n).toBe(300);
    expect(r.wins + r.ties + r.losses).toBe(300);
    expect(r.wins).toBeGreaterThan(r.losses);
  });

  it("is narrower than comparing the two runs as if they were independent", () => {
    const paired = pairedComparison(a, b, { seed: 5 });
    // The unpaired bootstrap: resample each run on its own.
    const rand = mulberry32(5);
    const resampledMean = (v: number[]) => {
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[Math.floor(rand() * v.length)]!;
      return s / v.length;
    };
    const diffs = Array.from({ length: 1000 }, () => resampledMean(b) - resampledMean(a));
    const unpairedWidth = percentile(diffs, 97.5) - percentile(diffs, 2.5);
    expect(paired.upper - paired.lower).toBeLessThan(unpairedWidth / 3);
    // Without pairing, the 0.02 improvement is lost in the per-example spread.
    expect(percentile(diffs, 2.5)).toBeLessThan(0);
  });

  it("is the same for the same seed", () => {
    expect(pairedComparison(a, b, { seed: 9 })).toEqual(pairedComparison(a, b, { seed: 9 }));
  });

  it("counts wins, ties and losses of b with a tie tolerance", () => {
    const x = [0.5, 0.5, 0.5, 0.5, 0.5];
    const y = [0.6, 0.5, 0.52, 0.49, 0.3];
    expect(pairedComparison(x, y, { seed: 1 })).toMatchObject({ wins: 2, ties: 1, losses: 2 });
    expect(pairedComparison(x, y, { seed: 1, tieTolerance: 0.05 })).toMatchObject({ wins: 1, ties: 3, losses: 1 });
  });

  it("gives p = 1 and a zero interval when the runs are the same", () => {
    expect(pairedComparison(a, a, { seed: 1 })).toMatchObject({ meanDifference: 0, lower: 0, upper: 0, pValue: 1, ties: 300 });
  });

  it("gives a large p-value when b only differs by noise", () => {
    const noise = normals(14, 300);
    const c = a.map((v, i) => v + 0.01 * noise[i]!);
    const r = pairedComparison(a, c, { seed: 2 });
    expect(r.lower).toBeLessThan(0);
    expect(r.upper).toBeGreaterThan(0);
    expect(r.pValue).toBeGreaterThan(0.05);
  });

  it("refuses runs of different lengths with a clear error", () => {
    expect(() => pairedComparison([1, 2, 3], [1, 2], { seed: 1 })).toThrow(
      "a paired comparison needs the same examples in the same order, but a has 3 values and b has 2",
    );
    expect(() => pairedComparison([1], [1], { seed: 1, tieTolerance: -1 })).toThrow(/tieTolerance/);
  });
});
