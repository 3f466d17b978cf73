import { context, propagation, SpanKind, SpanStatusCode, trace, type Context, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { FileSpanExporter } from "./span-store.js";

export interface Telemetry {
  shutdown(): Promise<void>;
}

let started: { sdk: NodeSDK; users: number } | undefined;

/**
 * Starts the OpenTelemetry NodeSDK once per process (several services may share a process under
 * `lathe up`). Spans are always created, so trace ids reach logs and events; they are exported
 * over OTLP/HTTP only when `otlpEndpoint` is set. No auto-instrumentation: the kit makes the
 * spans of gRPC calls and events itself. With `spanStore`, finished spans are also kept in a
 * bounded local store (span-store.ts) that `lathe trace` reads.
 */
export function startTelemetry(opts: { serviceName: string; otlpEndpoint?: string | undefined; spanStore?: { dir: string; maxBytes: number } | undefined }): Telemetry {
  if (!started) {
    const spanProcessors = opts.otlpEndpoint
      ? [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${opts.otlpEndpoint.replace(/\/$/, "")}/v1/traces` }))]
      : [];
    // The local span store (`lathe trace`), flushed often so a trace can be read right after its work.
    if (opts.spanStore && opts.spanStore.maxBytes > 0) spanProcessors.push(new BatchSpanProcessor(new FileSpanExporter(opts.spanStore.dir, opts.spanStore.maxBytes, opts.serviceName.replace(/^lathe-/, "")), { scheduledDelayMillis: 200 }));
    const sdk = new NodeSDK({
      resource: resourceFromAttributes({ "service.name": opts.serviceName }),
      spanProcessors,
      instrumentations: [],
      textMapPropagator: new W3CTraceContextPropagator(),
      autoDetectResources: false,
    });
    sdk.start();
    started = { sdk, users: 0 };
  }
  started.users++;
  let done = false;
  return {
    async shutdown() {
      if (done || !started) return;
      done = true;
      if (--started.users === 0) {
        const { sdk } = started;
        started = undefined;
        await sdk.shutdown();
      }
    },
  };
}

const w3c = new W3CTraceContextPropagator();

const recordGetter: TextMapGetter<Record<string, string>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};
const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/** The W3C trace headers (`traceparent`, `tracestate`) of a context, for event headers or metadata. */
export function traceHeaders(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  // The W3C propagator is used directly, so propagation works even before an SDK is registered.
  w3c.inject(ctx, carrier, recordSetter);
  return carrier;
}

/** The context that W3C trace headers describe, as a parent for new spans. */
export function contextFromHeaders(headers: Record<string, string>, base: Context = context.active()): Context {
  return w3c.extract(base, headers, recordGetter);
}

/** The process-wide tracer of the kit. */
export const tracer = trace.getTracer("@lathe/kit");

/**
 * A server span for a request arriving with W3C trace headers (an HTTP request's): `run` calls a
 * function in its context (a framework's `done`, so what follows runs inside it); `end` closes it.
 */
export function serverSpan(name: string, attributes: Record<string, string | number | boolean>, headers: Record<string, string | string[] | undefined>) {
  const carrier: Record<string, string> = {};
  for (const k of ["traceparent", "tracestate"]) {
    const v = headers[k];
    if (typeof v === "string") carrier[k] = v;
  }
  const parent = contextFromHeaders(carrier);
  const span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
  const ctx = trace.setSpan(parent, span);
  return {
    run: (fn: () => void) => context.with(ctx, fn),
    end: (failed: boolean, more: Record<string, string | number | boolean> = {}) => {
      span.setAttributes(more);
      if (failed) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    },
  };
}

/**
 * Runs `fn` in a new span: a child of the context that `parent` (W3C trace headers, as stored
 * with queued work) describes, else of the active context. Its `lathe.service` names the service
 * for `lathe trace`. An error marks the span and is rethrown.
 */
export function inSpan<T>(name: string, attributes: Record<string, string | number | boolean>, parent: Record<string, string> | undefined, fn: () => Promise<T>): Promise<T> {
  const base = parent === undefined ? context.active() : contextFromHeaders(parent);
  return tracer.startActiveSpan(name, { attributes }, base, async (span) => {
    try {
      return await fn();
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}
export { propagation };
