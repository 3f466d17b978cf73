import { meanWithCi, pairedComparison, percentile } from "@lathe/text";
import { MetricDifference, MetricValue } from "@lathe/proto/lathe/type/v1/metric";
import { ServingStats } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import type { Prices } from "../config.js";
import type { MetricName } from "../db/migrations.js";
import { metrics } from "./spec.js";

type Scores = Partial<Record<MetricName, number>>;
export interface BootstrapSettings {
  resamples: number;
  level: number;
  seed: number;
}

/** Each metric's mean over the scored answers with its percentile-bootstrap interval (proto JSON of MetricValue). */
export function valuesOf(names: readonly MetricName[], scores: readonly Scores[], b: BootstrapSettings): unknown[] {
  const out: unknown[] = [];
  for (const m of names) {
    const values = scores.map((s) => s[m]).filter((v): v is number => v !== undefined);
    if (values.length === 0) continue;
    const ci = meanWithCi(values, { seed: b.seed, resamples: b.resamples, level: b.level });
    out.push(MetricValue.toJSON({ metric: metrics.value(m)!, value: ci.mean, confidenceInterval: { lower: ci.lower, upper: ci.upper, level: ci.level }, exampleCount: ci.n }));
  }
  return out;
}

/** Each metric's paired difference candidate − baseline over the examples both answered (proto JSON of MetricDifference). */
export function differencesOf(names: readonly MetricName[], pairs: readonly { candidate: Scores; baseline: Scores }[], b: BootstrapSettings): unknown[] {
  const out: unknown[] = [];
  for (const m of names) {
    const both = pairs.filter((p) => p.candidate[m] !== undefined && p.baseline[m] !== undefined);
    if (both.length === 0) continue;
    const c = pairedComparison(
      both.map((p) => p.baseline[m]!),
      both.map((p) => p.candidate[m]!),
      { seed: b.seed, resamples: b.resamples, level: b.level },
    );
    out.push(
      MetricDifference.toJSON({
        metric: metrics.value(m)!,
        candidateValue: c.meanB,
        baselineValue: c.meanA,
        meanDifference: c.meanDifference,
        confidenceInterval: { lower: c.lower, upper: c.upper, level: c.level },
        pValue: c.pValue,
        bootstrapSamples: c.resamples,
        exampleCount: c.n,
        winCount: c.wins,
        lossCount: c.losses,
        tieCount: c.ties,
      }),
    );
  }
  return out;
}

/** The price of a model: its gateway name's, else its base's. */
export function priceOf(prices: Prices | undefined, gatewayName: string): { input: number; output: number } | undefined {
  if (!prices) return undefined;
  return prices[gatewayName] ?? prices[gatewayName.split(":")[0]!];
}

/** Tokens, latency (p50/p95) and cost per 1,000 answers of one model's answers (proto JSON of ServingStats). */
export function servingStatsOf(answers: readonly { promptTokens: number; completionTokens: number; latencyMs: number }[], price: { input: number; output: number } | undefined): unknown {
  const n = answers.length;
  const prompt = answers.reduce((s, a) => s + a.promptTokens, 0);
  const completion = answers.reduce((s, a) => s + a.completionTokens, 0);
  const latencies = answers.map((a) => a.latencyMs);
  return ServingStats.toJSON({
    answerCount: n,
    promptTokens: prompt,
    completionTokens: completion,
    latencyP50Ms: n === 0 ? 0 : percentile(latencies, 50),
    latencyP95Ms: n === 0 ? 0 : percentile(latencies, 95),
    ...(price && n > 0
      ? { costPer1000Answers: ((prompt * price.input + completion * price.output) / 1e6) * (1000 / n), inputPricePerMillion: price.input, outputPricePerMillion: price.output }
      : {}),
  });
}
