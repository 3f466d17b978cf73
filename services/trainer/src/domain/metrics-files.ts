import { hostname } from "node:os";
import { FineTuningMetricsRow, MetricsFormat } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import type { MetricsRow } from "../db/tables.js";
import { tensorboardEvents, tensorboardFileName } from "./tensorboard.js";

/* A job's logged steps as the API returns them: rows, a CSV file, a TensorBoard event file. */

/** The API form of a logged step. */
export function toMetricsRow(r: MetricsRow): FineTuningMetricsRow {
  return FineTuningMetricsRow.fromPartial({
    step: r.step,
    epoch: r.epoch,
    trainLoss: r.train_loss,
    evalLoss: r.eval_loss ?? undefined,
    learningRate: r.learning_rate,
    gradNorm: r.grad_norm,
    tokensPerSecond: r.tokens_per_second,
    processedTokens: Number(r.processed_tokens),
    trainMeanTokenAccuracy: r.train_mean_token_accuracy ?? undefined,
    evalMeanTokenAccuracy: r.eval_mean_token_accuracy ?? undefined,
    logTime: r.log_time,
  });
}

/** The CSV columns, in order: HF's log names where it has one. */
export const csvColumns = ["step", "epoch", "train_loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second", "processed_tokens", "train_mean_token_accuracy", "eval_mean_token_accuracy", "log_time"] as const;

/** Numbers as JavaScript writes them (shortest round-trip form); an unset value is an empty cell. */
const cell = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? "" : String(v));

export function metricsCsv(rows: readonly FineTuningMetricsRow[]): string {
  const lines = [csvColumns.join(",")];
  for (const r of rows) {
    lines.push(
      [
        cell(r.step),
        cell(r.epoch),
        cell(r.trainLoss),
        cell(r.evalLoss),
        cell(r.learningRate),
        cell(r.gradNorm),
        cell(r.tokensPerSecond),
        cell(r.processedTokens),
        cell(r.trainMeanTokenAccuracy),
        cell(r.evalMeanTokenAccuracy),
        r.logTime?.toISOString() ?? "",
      ].join(","),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** The TensorBoard tags of a logged step (HF's `report_to="tensorboard"` names, and ours for accuracy and throughput). */
export function metricsEvents(rows: readonly FineTuningMetricsRow[], startTime: number): Buffer {
  return tensorboardEvents(
    rows.map((r) => ({
      step: r.step,
      wallTime: (r.logTime?.getTime() ?? startTime * 1000) / 1000,
      scalars: {
        "train/loss": r.trainLoss,
        "train/learning_rate": r.learningRate,
        "train/grad_norm": r.gradNorm,
        "train/epoch": r.epoch,
        "train/tokens_per_second": r.tokensPerSecond,
        "train/mean_token_accuracy": r.trainMeanTokenAccuracy,
        "eval/loss": r.evalLoss,
        "eval/mean_token_accuracy": r.evalMeanTokenAccuracy,
      },
    })),
    startTime,
  );
}

/** The file of `format` for a job's rows; `startTime` (seconds) is the job's start, or its creation when it has not started. */
export function metricsFile(format: MetricsFormat, rows: readonly FineTuningMetricsRow[], startTime: number): { content: Buffer; fileName: string; contentType: string } {
  switch (format) {
    case MetricsFormat.METRICS_FORMAT_CSV:
      return { content: Buffer.from(metricsCsv(rows)), fileName: "metrics.csv", contentType: "text/csv" };
    case MetricsFormat.METRICS_FORMAT_TENSORBOARD:
      return { content: metricsEvents(rows, startTime), fileName: tensorboardFileName(startTime, hostname()), contentType: "application/octet-stream" };
    default:
      return { content: Buffer.alloc(0), fileName: "", contentType: "" };
  }
}
