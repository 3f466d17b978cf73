import { context, propagation, trace, type Context, type TextMapGetter, type TextMapSetter } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { NodeSDK } from "@opentelemetry/sdk-node";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";

export interface Telemetry {
  shutdown(): Promise<void>;
}

let started: { sdk: NodeSDK; users: number } | undefined;

/**
 * Starts the OpenTelemetry NodeSDK once per process (several services may share a process under
 * `lathe up`). Spans are always created, so trace ids reach logs and events; they are exported
 * over OTLP/HTTP only when `otlpEndpoint` is set. No auto-instrumentation: the kit makes the
 * spans of gRPC calls and events itself.
 */
export function startTelemetry(opts: { serviceName: string; otlpEndpoint?: string | undefined }): Telemetry {
  if (!started) {
    const spanProcessors = opts.otlpEndpoint
      ? [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${opts.otlpEndpoint.replace(/\/$/, "")}/v1/traces` }))]
      : [];
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
export { propagation };
