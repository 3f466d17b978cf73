import { once } from "node:events";
import {
  Metadata,
  type MethodDefinition,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedHandleCall,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { context, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { asAppError, toGrpcError } from "../errors.js";
import { contextFromHeaders, tracer } from "../telemetry.js";
import type { ApiKeyAuth } from "./auth.js";

/** What a handler knows of its call besides the request. */
export interface CallContext {
  /** The tenant of the caller's API key. Every query a handler makes is scoped to it. */
  readonly tenant: string;
  /** The request metadata. */
  readonly metadata: Metadata;
  /** Aborted when the client cancels, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** The full method path, e.g. `/lathe.registry.v1.RegistryService/GetModel`. */
  readonly method: string;
  readonly logger: Logger;
}

type AnyMethod = MethodDefinition<any, any> & { requestStream: boolean; responseStream: boolean }; // eslint-disable-line @typescript-eslint/no-explicit-any
/** A ts-proto `…Service` definition for @grpc/grpc-js. */
export type ServiceDef = { readonly [method: string]: AnyMethod };

type Req<M> = M extends { requestDeserialize: (b: Buffer) => infer R } ? R : never;
type Res<M> = M extends { responseSerialize: (v: infer R) => Buffer } ? R : never;

/** One async handler per method: promises for single responses, async iterables for streams. */
export type ServiceHandlers<S extends ServiceDef> = {
  [K in keyof S]: S[K]["requestStream"] extends true
    ? S[K]["responseStream"] extends true
      ? (requests: AsyncIterable<Req<S[K]>>, ctx: CallContext) => AsyncIterable<Res<S[K]>>
      : (requests: AsyncIterable<Req<S[K]>>, ctx: CallContext) => Promise<Res<S[K]>>
    : S[K]["responseStream"] extends true
      ? (request: Req<S[K]>, ctx: CallContext) => AsyncIterable<Res<S[K]>>
      : (request: Req<S[K]>, ctx: CallContext) => Promise<Res<S[K]>>;
};

export interface WrapOptions {
  auth: ApiKeyAuth;
  logger: Logger;
  /** Aborted when the server starts to drain: long streams end early. */
  shutdown: AbortSignal;
}

type AnyCall =
  | ServerUnaryCall<unknown, unknown>
  | ServerReadableStream<unknown, unknown>
  | ServerWritableStream<unknown, unknown>
  | ServerDuplexStream<unknown, unknown>;

/**
 * Turns async handlers into grpc-js handlers. This is the kit's server interceptor: it
 * authenticates (API key → tenant), continues the caller's trace (W3C `traceparent` in
 * metadata) in a server span, aborts `ctx.signal` on cancel or drain, and maps every thrown
 * error through `toGrpcError` (AppError → status code + reason trailers; anything else →
 * INTERNAL, logged, its text never sent).
 */
export function wrapHandlers<S extends ServiceDef>(def: S, handlers: ServiceHandlers<S>, opts: WrapOptions): Record<string, UntypedHandleCall> {
  const out: Record<string, UntypedHandleCall> = {};
  for (const [key, method] of Object.entries(def)) {
    const handler = (handlers as Record<string, (...args: unknown[]) => unknown>)[key];
    if (typeof handler !== "function") throw new Error(`no handler for ${method.path}`);
    out[key] = wrapMethod(method, handler.bind(handlers), opts);
  }
  return out;
}

function wrapMethod(method: AnyMethod, handler: (...args: unknown[]) => unknown, opts: WrapOptions): UntypedHandleCall {
  const { requestStream, responseStream, path } = method;

  // Runs `body` inside the call's span with a context, and returns what it returned.
  const begin = (call: AnyCall) => {
    const controller = new AbortController();
    const abort = () => controller.abort();
    (call as ServerUnaryCall<unknown, unknown>).on("cancelled", abort);
    if (opts.shutdown.aborted) controller.abort();
    else opts.shutdown.addEventListener("abort", abort, { once: true });
    const md = call.metadata;
    const headers: Record<string, string> = {};
    const tp = md.get("traceparent")[0];
    if (typeof tp === "string") headers["traceparent"] = tp;
    const ts = md.get("tracestate")[0];
    if (typeof ts === "string") headers["tracestate"] = ts;
    const parent = tp === undefined ? context.active() : contextFromHeaders(headers);
    // The service of `/lathe.{service}.v1.…/Method` (reflection and health: "platform").
    const service = /^\/lathe\.([a-z]+)\.v1\./.exec(path)?.[1] ?? "platform";
    const span = tracer.startSpan(path.slice(1), { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "lathe.service": service } }, parent);
    const ctx = trace.setSpan(parent, span);
    const finish = (err?: unknown) => {
      opts.shutdown.removeEventListener("abort", abort);
      if (err !== undefined) {
        const app = asAppError(err);
        span.setAttribute("rpc.grpc.status_code", app.code);
        if (app.code === "INTERNAL" || app.code === "UNAVAILABLE") {
          span.setStatus({ code: SpanStatusCode.ERROR });
          context.with(ctx, () => opts.logger.error({ err, method: path }, "rpc failed"));
        }
      }
      span.end();
    };
    const run = <T>(body: (cctx: CallContext) => T): T =>
      context.with(ctx, () => {
        const tenant = opts.auth.tenantOf(md);
        return body({ tenant, metadata: md, signal: controller.signal, method: path, logger: opts.logger });
      });
    return { run, finish };
  };

  if (!responseStream) {
    // Unary and client-streaming calls answer once, through the callback.
    return (call: ServerUnaryCall<unknown, unknown> | ServerReadableStream<unknown, unknown>, callback: sendUnaryData<unknown>) => {
      const { run, finish } = begin(call);
      const input = requestStream ? (call as AsyncIterable<unknown>) : (call as ServerUnaryCall<unknown, unknown>).request;
      Promise.resolve()
        .then(() => run((cctx) => handler(input, cctx) as Promise<unknown>))
        .then(
          (res) => {
            finish();
            callback(null, res);
          },
          (err: unknown) => {
            finish(err);
            callback(toGrpcError(err));
          },
        );
    };
  }
  return (call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>) => {
    const { run, finish } = begin(call);
    const input = requestStream ? (call as AsyncIterable<unknown>) : (call as ServerWritableStream<unknown, unknown>).request;
    Promise.resolve()
      .then(() =>
        run(async (cctx) => {
          for await (const res of handler(input, cctx) as AsyncIterable<unknown>) {
            if (call.cancelled) return;
            if (!call.write(res)) await once(call, "drain");
          }
        }),
      )
      .then(
      () => {
        finish();
        if (!call.cancelled) call.end();
      },
      (err: unknown) => {
        finish(err);
        if (!call.cancelled) call.emit("error", toGrpcError(err));
      },
    );
  };
}

export { Metadata };
