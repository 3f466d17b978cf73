import { trace } from "@opentelemetry/api";
import { pino, type Logger, type LevelWithSilent } from "pino";

export type { Logger } from "pino";

/**
 * A pino JSON logger whose every line carries the active span's `trace_id` and `span_id`, so a
 * log line leads to its trace. Messages are constant; data goes in fields.
 */
export function createLogger(opts: { service: string; level?: LevelWithSilent; destination?: NodeJS.WritableStream }): Logger {
  return pino(
    {
      level: opts.level ?? "info",
      base: { service: opts.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin() {
        const span = trace.getActiveSpan();
        if (!span) return {};
        const ctx = span.spanContext();
        return { trace_id: ctx.traceId, span_id: ctx.spanId };
      },
    },
    opts.destination ?? process.stdout,
  );
}
