import { Command } from "commander";
import { call, readStoredTrace, spanStoreDir, type StoredSpan } from "@lathe/kit";
import { TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { jobName } from "../names.js";
import { printJson } from "../output.js";
import { defaultDataDir } from "../platform.js";

/** A Jaeger query API trace (`GET /api/traces/{id}`), as far as `lathe trace` reads it. */
interface JaegerTrace {
  spans: { traceID: string; spanID: string; operationName: string; references?: { refType: string; spanID: string }[]; startTime: number; duration: number; processID: string; tags?: { key: string; value: unknown }[] }[];
  processes: Record<string, { serviceName: string }>;
}

/** The spans of a trace from Jaeger's query API (`--jaeger URL`, e.g. http://jaeger:16686). */
async function jaegerSpans(base: string, traceId: string): Promise<StoredSpan[]> {
  const res = await fetch(`${base.replace(/\/+$/, "")}/api/traces/${traceId}`).catch((err: Error) => {
    throw new Error(`--jaeger ${base}: no answer (${err.cause instanceof Error ? err.cause.message : err.message})`);
  });
  if (res.status === 404) return [];
  if (!res.ok) throw new Error(`--jaeger ${base}: the query API answered ${res.status}`);
  const body = (await res.json()) as { data?: JaegerTrace[] };
  return (body.data ?? []).flatMap((t) =>
    t.spans.map((s) => {
      const tag = (k: string) => s.tags?.find((x) => x.key === k)?.value;
      const lathe = tag("lathe.service");
      return {
        traceId: s.traceID.padStart(32, "0"),
        spanId: s.spanID,
        parentSpanId: s.references?.find((r) => r.refType === "CHILD_OF")?.spanID ?? "",
        name: s.operationName,
        service: typeof lathe === "string" ? lathe : (t.processes[s.processID]?.serviceName ?? "").replace(/^lathe-/, ""),
        startMs: s.startTime / 1000,
        durationMs: s.duration / 1000,
        status: tag("error") === true ? ("error" as const) : ("ok" as const),
        attributes: {},
      };
    }),
  );
}

/**
 * The span tree of a trace, one line per span: indented under its parent, in start order, with
 * its service, when it started after the trace began and how long it took. Spans whose parent is
 * not among them (in another process's store, or not exported) start trees of their own.
 */
export function spanTree(spans: readonly StoredSpan[]): string {
  if (spans.length === 0) return "";
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string, StoredSpan[]>();
  const roots: StoredSpan[] = [];
  for (const s of [...spans].sort((a, b) => a.startMs - b.startMs)) {
    if (s.parentSpanId !== "" && ids.has(s.parentSpanId)) children.set(s.parentSpanId, [...(children.get(s.parentSpanId) ?? []), s]);
    else roots.push(s);
  }
  const t0 = Math.min(...spans.map((s) => s.startMs));
  const ms = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(1)} ms`);
  const lines: string[] = [];
  const walk = (s: StoredSpan, depth: number) => {
    lines.push(`${"  ".repeat(depth)}${s.name}  [${s.service}]  +${ms(s.startMs - t0)}  ${ms(s.durationMs)}${s.status === "error" ? "  ERROR" : ""}`);
    // Many siblings alike (a progress event per logged step, an answer per example): the first two, then a count.
    const kids = children.get(s.spanId) ?? [];
    const key = (k: StoredSpan) => `${k.service}/${k.name}`;
    const alike = new Map<string, StoredSpan[]>();
    for (const k of kids) alike.set(key(k), [...(alike.get(key(k)) ?? []), k]);
    const shown = new Map<string, number>();
    for (const k of kids) {
      const group = alike.get(key(k));
      if (group && group.length > 3) {
        const n = (shown.get(key(k)) ?? 0) + 1;
        shown.set(key(k), n);
        if (n === 3) {
          const rest = group.slice(2);
          lines.push(`${"  ".repeat(depth + 1)}… ${rest.length} more ${k.name}  [${k.service}]  ${ms(rest.reduce((t, x) => t + x.durationMs, 0))} in all`);
        }
        if (n >= 3) continue;
      }
      walk(k, depth + 1);
    }
  };
  for (const r of roots) walk(r, 0);
  return `${lines.join("\n")}\n`;
}

/** `lathe trace JOB`: the trace of a fine-tuning job's whole pipeline, as a span tree. */
export function traceCommand(): Command {
  return withConnection(new Command("trace").argument("<job>", "the fine-tuning job: ID or fineTuningJobs/ID"))
    .description("draw the trace of a fine-tuning job's pipeline (create call, training, registration, evaluation, promotion, serving): a span tree with each span's service and duration")
    .option("--jaeger <url>", "read the spans from a Jaeger query API (e.g. http://jaeger:16686) instead of the local span store")
    .action(async (job: string, o: ConnectionOptions & { jaeger?: string }) => {
      const trainer = connect(TrainerServiceClient, o);
      let traceId: string;
      try {
        const { fineTuningJob } = await call(trainer, "getFineTuningJob", { name: jobName(job) });
        traceId = fineTuningJob!.traceId;
      } finally {
        trainer.close();
      }
      if (traceId === "") throw new Error(`${jobName(job)} has no trace id (it was created before jobs kept one)`);
      const jaeger = o.jaeger ?? process.env["LATHE_JAEGER_URL"];
      const where = jaeger ?? spanStoreDir(o.dataDir ?? defaultDataDir(process.env));
      const spans = jaeger ? await jaegerSpans(jaeger, traceId) : readStoredTrace(where, traceId);
      if (o.json) {
        printJson({ traceId, spans });
        return;
      }
      if (spans.length === 0) {
        throw new Error(
          `no spans of trace ${traceId} in ${where}. Against a deployment the services export spans over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT): look the trace id up in your tracing backend, or give --jaeger URL`,
        );
      }
      const services = [...new Set(spans.map((s) => s.service))];
      process.stdout.write(`trace ${traceId}: ${spans.length} spans from ${services.join(", ")}\n`);
      process.stdout.write(spanTree(spans));
    });
}
