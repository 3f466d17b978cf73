import {
  credentials,
  InterceptingCall,
  Metadata,
  status,
  type CallOptions,
  type Client,
  type ClientUnaryCall,
  type ServiceError,
  type ClientOptions,
  type Interceptor,
} from "@grpc/grpc-js";
import { fromGrpcError } from "../errors.js";
import { traceHeaders } from "../telemetry.js";

export interface ClientFactoryOptions {
  /** API key sent as `authorization: Bearer <key>`. */
  apiKey?: string;
  /** Deadline of each unary call in milliseconds, unless the call sets its own. Default 30000. */
  deadlineMs?: number;
  /**
   * Streaming calls (client, server or both) have no total deadline, since an upload or download
   * takes as long as its size needs; instead one is cancelled with DEADLINE_EXCEEDED `no progress
   * for N s` when no message was sent or received for this many milliseconds. A streaming call
   * that sets its own deadline (e.g. `{ deadline: Infinity }` to follow a job for hours) keeps it
   * and has no idle limit. 0 turns the idle limit off. Default 30000.
   */
  idleTimeoutMs?: number;
  /**
   * Once a client stream with a single answer (an upload) has sent its last message, how long the
   * server may work on it before answering, in milliseconds: checking a large upload can take
   * longer than the idle limit, with nothing to send meanwhile. Default 600000 (10 minutes).
   */
  answerTimeoutMs?: number;
  /** Attempts for a call that fails with UNAVAILABLE (the server was not reached). Default 4. */
  maxAttempts?: number;
  /** First backoff between attempts in milliseconds, doubled each time. Default 100. */
  initialBackoffMs?: number;
}

type ClientCtor<C extends Client> = new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options?: Partial<ClientOptions>) => C;

/**
 * A client for a ts-proto generated service with the kit's defaults: a deadline per unary call
 * and an idle limit per streaming call, the API key and the current trace context in metadata, and retries for UNAVAILABLE only (the
 * server was not reached, or said it cannot serve now), through grpc-js' retry policy. Creates
 * carry a `request_id`, so a retried create never makes a second resource.
 */
export function createClient<C extends Client>(Ctor: ClientCtor<C>, address: string, opts: ClientFactoryOptions = {}): C {
  const deadlineMs = opts.deadlineMs ?? 30_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 30_000;
  const answerTimeoutMs = Math.max(idleTimeoutMs, opts.answerTimeoutMs ?? 600_000);
  const interceptor: Interceptor = (options, next) => {
    const callOptions: CallOptions = options;
    const method = options.method_definition;
    const streaming = method.requestStream || method.responseStream;
    const ownDeadline = callOptions.deadline !== undefined;
    if (!ownDeadline && !streaming) options.deadline = Date.now() + deadlineMs;
    const idle =
      streaming && !ownDeadline && idleTimeoutMs > 0
        ? idleLimit(idleTimeoutMs, (ms, answering) =>
            call.cancelWithStatus(status.DEADLINE_EXCEEDED, answering ? `no answer ${ms / 1000} s after the last message was sent` : `no progress for ${ms / 1000} s: nothing was sent or received`),
          )
        : undefined;
    const call: InterceptingCall = new InterceptingCall(next(options), {
      start(metadata, listener, nextStart) {
        if (opts.apiKey !== undefined && metadata.get("authorization").length === 0) {
          metadata.set("authorization", `Bearer ${opts.apiKey}`);
        }
        for (const [k, v] of Object.entries(traceHeaders())) metadata.set(k, v);
        if (!idle) return nextStart(metadata, listener);
        idle.touch();
        nextStart(metadata, {
          onReceiveMessage(message, nextMessage) {
            idle.touch();
            nextMessage(message);
          },
          onReceiveStatus(s, nextStatus) {
            idle.stop();
            nextStatus(s);
          },
        });
      },
      sendMessage(message, nextSend) {
        idle?.touch();
        nextSend(message);
      },
      halfClose(nextHalfClose) {
        if (!method.responseStream) idle?.awaitAnswer(answerTimeoutMs);
        nextHalfClose();
      },
    });
    return call;
  };
  const attempts = Math.max(1, Math.min(opts.maxAttempts ?? 4, 5));
  const serviceConfig = {
    methodConfig: [
      {
        name: [{}],
        retryPolicy: {
          maxAttempts: attempts,
          initialBackoff: `${(opts.initialBackoffMs ?? 100) / 1000}s`,
          maxBackoff: "2s",
          backoffMultiplier: 2,
          retryableStatusCodes: ["UNAVAILABLE"],
        },
      },
    ],
  };
  return new Ctor(address, credentials.createInsecure(), {
    interceptors: [interceptor],
    // grpc-js rejects a retry policy of fewer than 2 attempts: with 1, send none.
    ...(attempts > 1 ? { "grpc.service_config": JSON.stringify(serviceConfig) } : {}),
    "grpc.enable_retries": attempts > 1 ? 1 : 0,
  });
}

/**
 * A timer that fires `onIdle` once `ms` pass without a `touch()`; after `awaitAnswer(answerMs)`
 * (all was sent, the answer is due) it fires `answerMs` later, touched or not.
 */
function idleLimit(ms: number, onIdle: (ms: number, answering: boolean) => void): { touch(): void; awaitAnswer(answerMs: number): void; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let answering = false;
  const arm = (after: number) => {
    clearTimeout(timer);
    // Unref'd: a forgotten stream must not keep a process alive on its own.
    timer = setTimeout(() => {
      stopped = true;
      onIdle(after, answering);
    }, after).unref();
  };
  return {
    touch() {
      if (stopped || answering) return;
      if (timer === undefined) arm(ms);
      else timer.refresh();
    },
    awaitAnswer(answerMs) {
      if (stopped) return;
      answering = true;
      arm(answerMs);
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

type Callback<R> = (err: Error | null, res?: R) => void;

type FullUnary<Req, Res> = (req: Req, md: Metadata, options: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => ClientUnaryCall;
/** The names of a generated client's unary methods. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type UnaryMethod<C> = { [K in keyof C]: C[K] extends FullUnary<any, any> ? (K extends string ? K : never) : never }[keyof C];
type ReqOf<F> = F extends FullUnary<infer Req, infer _Res> ? Req : never;
type ResOf<F> = F extends FullUnary<infer _Req, infer Res> ? Res : never;

/**
 * Calls a unary method of a generated client and awaits it, turning a gRPC error into an
 * AppError (code, reason, field): `await call(client, "getModel", { name })`.
 */
export function call<C, K extends UnaryMethod<C>>(client: C, method: K, request: ReqOf<C[K]>, metadata: Metadata = new Metadata()): Promise<ResOf<C[K]>> {
  const fn = client[method] as unknown as FullUnary<ReqOf<C[K]>, ResOf<C[K]>>;
  return unary<ResOf<C[K]>>((cb) => fn.call(client, request, metadata, {}, cb));
}

/**
 * Awaits a unary call of a generated client, turning a gRPC error into an AppError (code,
 * reason, field). Usage: `await unary(cb => client.getModel(req, cb))`.
 */
export function unary<R>(invoke: (cb: Callback<R>) => unknown): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    invoke((err, res) => {
      if (err) reject(isStatusError(err) ? fromGrpcError(err) : err);
      else resolve(res as R);
    });
  });
}

/**
 * The caller's credentials, to call another service on the caller's behalf (with the caller's
 * key, so its tenant and rights hold there too): its `authorization` header, else its
 * `x-api-key`, as it sent it; empty metadata when it sent neither.
 */
export function callerMetadata(ctx: { readonly metadata: Metadata }): Metadata {
  const md = new Metadata();
  for (const key of ["authorization", "x-api-key"]) {
    const value = ctx.metadata.get(key)[0];
    if (typeof value === "string") {
      md.set(key, value);
      break;
    }
  }
  return md;
}

/** Metadata from plain entries, for calls that send extra headers. */
export function withMetadata(entries: Record<string, string>): Metadata {
  const md = new Metadata();
  for (const [k, v] of Object.entries(entries)) md.set(k, v);
  return md;
}

function isStatusError(err: Error): err is Error & { code: number; details: string; metadata: Metadata } {
  const code = (err as unknown as { code?: unknown }).code;
  return typeof code === "number" && Object.values(status).includes(code);
}
