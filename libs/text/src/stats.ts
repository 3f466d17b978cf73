// Summary statistics for evaluation results: means with percentile-bootstrap confidence
// intervals, paired comparisons of two runs on the same examples, and percentiles.
//
// Every resampling draws from mulberry32 seeded by the caller, so a result is the same on every
// run and machine for the same inputs and seed: a stored evaluation can be recomputed exactly.

import { mulberry32 } from "./random.js";

/** How a bootstrap is drawn. */
export interface BootstrapOptions {
  /**
   * The seed of the resampling, a safe integer. Its low 32 bits seed the generator, so seeds
   * that differ by a multiple of 2^32 give the same result.
   */
  seed: number;
  /** How many bootstrap resamples to draw, a positive integer. Default 1000. */
  resamples?: number;
  /** The confidence level of the interval, greater than 0 and less than 1. Default 0.95. */
  level?: number;
}

/** A mean with its percentile-bootstrap confidence interval. */
export interface MeanWithCi {
  /** The mean of the values. */
  mean: number;
  /** The lower bound of the interval. */
  lower: number;
  /** The upper bound of the interval; never below `lower`. */
  upper: number;
  /** The confidence level of the interval, for example 0.95. */
  level: number;
  /** How many resamples were drawn. */
  resamples: number;
  /** How many values there were. */
  n: number;
}

/** Options of {@link pairedComparison}. */
export interface PairedComparisonOptions extends BootstrapOptions {
  /**
   * Differences |b − a| at most this large count as ties, for noisy scores such as BERTScore.
   * Default 0: only equal scores tie.
   */
  tieTolerance?: number;
}

/** Two runs compared example by example; "difference" is always b − a. */
export interface PairedComparison {
  /** The mean of `a` (the baseline). */
  meanA: number;
  /** The mean of `b` (the candidate). */
  meanB: number;
  /** The mean of the per-example differences b − a. */
  meanDifference: number;
  /** The lower bound of the paired percentile-bootstrap interval of `meanDifference`. */
  lower: number;
  /** The upper bound of that interval; never below `lower`. */
  upper: number;
  /** The confidence level of the interval. */
  level: number;
  /**
   * The two-sided p-value of the paired bootstrap test of a zero mean difference: twice the
   * share of resampled mean differences on the far side of zero (at or below zero when
   * `meanDifference` is positive, at or above it when negative), capped at 1; 1 when
   * `meanDifference` is 0.
   */
  pValue: number;
  /** How many resamples were drawn. */
  resamples: number;
  /** How many examples b scored higher on (by more than the tie tolerance). */
  wins: number;
  /** How many examples scored the same within the tie tolerance. */
  ties: number;
  /** How many examples b scored lower on (by more than the tie tolerance). */
  losses: number;
  /** How many pairs there were. */
  n: number;
}

/**
 * The p-th percentile (p from 0 to 100) of the values, interpolating linearly between the two
 * nearest ranks: the same as numpy's default `np.percentile(values, p)` ("linear" method), where
 * the rank of p is p/100 · (n − 1) over the sorted values. Throws RangeError on no values, a
 * non-finite value or p outside [0, 100].
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be between 0 and 100, got ${p}`);
  checkValues(values, "values");
  return percentileOfSorted(Float64Array.from(values).sort(), p);
}

/**
 * The mean of the values with a percentile-bootstrap confidence interval: `resamples` times,
 * draw n values with replacement and take their mean; the interval is the (1 − level)/2 and
 * (1 + level)/2 percentiles of those means (see {@link percentile}). With one value the interval
 * is that value. Throws RangeError on no values, a non-finite value or invalid options.
 */
export function meanWithCi(values: readonly number[], opts: BootstrapOptions): MeanWithCi {
  checkValues(values, "values");
  const { rng, resamples, level } = bootstrapSetup(opts);
  const n = values.length;
  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += values[Math.floor(rng() * n)]!;
    means[r] = sum / n;
  }
  means.sort();
  return { mean: mean(values), ...interval(means, level), level, resamples, n };
}

/**
 * Compares two runs scored on the same examples in the same order, `a` the baseline and `b` the
 * candidate: their means, the mean of the differences b − a with a paired percentile-bootstrap
 * interval (resampling example indices, so the per-example correlation of the two runs is kept
 * and the interval is narrower than comparing two independent intervals), a bootstrap p-value,
 * and how often b wins, ties or loses. Throws RangeError when the runs differ in length, on no
 * values, a non-finite value or invalid options.
 */
export function pairedComparison(a: readonly number[], b: readonly number[], opts: PairedComparisonOptions): PairedComparison {
  if (a.length !== b.length)
    throw new RangeError(`a paired comparison needs the same examples in the same order, but a has ${a.length} values and b has ${b.length}`);
  checkValues(a, "a");
  checkValues(b, "b");
  const tolerance = opts.tieTolerance ?? 0;
  if (!(tolerance >= 0 && Number.isFinite(tolerance))) throw new RangeError(`tieTolerance must be a finite number ≥ 0, got ${tolerance}`);
  const { rng, resamples, level } = bootstrapSetup(opts);

  const n = a.length;
  const diff = new Float64Array(n);
  let wins = 0;
  let ties = 0;
  let losses = 0;
  for (let i = 0; i < n; i++) {
    const d = b[i]! - a[i]!;
    diff[i] = d;
    if (d > tolerance) wins++;
    else if (d < -tolerance) losses++;
    else ties++;
  }
  const meanDifference = mean(diff);

  const means = new Float64Array(resamples);
  for (let r = 0; r < resamples; r++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += diff[Math.floor(rng() * n)]!;
    means[r] = sum / n;
  }
  let farSide = 0;
  for (const m of means) if (meanDifference > 0 ? m <= 0 : m >= 0) farSide++;
  const pValue = meanDifference === 0 ? 1 : Math.min(1, (2 * farSide) / resamples);
  means.sort();
  return { meanA: mean(a), meanB: mean(b), meanDifference, ...interval(means, level), level, pValue, resamples, wins, ties, losses, n };
}

function mean(values: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  return sum / values.length;
}

function checkValues(values: readonly number[], name: string): void {
  if (values.length === 0) throw new RangeError(`${name} is empty; a statistic needs at least one value`);
  for (let i = 0; i < values.length; i++)
    if (!Number.isFinite(values[i])) throw new RangeError(`${name}[${i}] is ${values[i]}; every value must be a finite number`);
}

function bootstrapSetup(opts: BootstrapOptions): { rng: () => number; resamples: number; level: number } {
  const resamples = opts.resamples ?? 1000;
  const level = opts.level ?? 0.95;
  if (!Number.isSafeInteger(opts.seed)) throw new RangeError(`seed must be a safe integer, got ${opts.seed}`);
  if (!Number.isSafeInteger(resamples) || resamples < 1) throw new RangeError(`resamples must be a positive integer, got ${resamples}`);
  if (!(level > 0 && level < 1)) throw new RangeError(`level must be greater than 0 and less than 1, got ${level}`);
  return { rng: mulberry32(opts.seed), resamples, level };
}

function interval(sortedMeans: Float64Array, level: number): { lower: number; upper: number } {
  return { lower: percentileOfSorted(sortedMeans, (100 * (1 - level)) / 2), upper: percentileOfSorted(sortedMeans, (100 * (1 + level)) / 2) };
}

function percentileOfSorted(sorted: Float64Array, p: number): number {
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, sorted.length - 1);
  const below = sorted[lo]!;
  // Written as below + t·(above − below) so that equal neighbours give exactly that value.
  return below + (rank - lo) * (sorted[hi]! - below);
}
