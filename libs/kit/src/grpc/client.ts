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
  /** Deadline of each call in milliseconds, unless the call sets its own. Default 30000. */
  deadlineMs?: number;
  /** Attempts for a call that fails with UNAVAILABLE (the server was not reached). Default 4. */
  maxAttempts?: number;
  /** First backoff between attempts in milliseconds, doubled each time. Default 100. */
  initialBackoffMs?: number;
}

type ClientCtor<C extends Client> = new (address: string, creds: ReturnType<typeof credentials.createInsecure>, options?: Partial<ClientOptions>) => C;

/**
 * A client for a ts-proto generated service with the kit's defaults: a deadline per call, the
 * API key and the current trace context in metadata, and retries for UNAVAILABLE only (the
 * server was not reached, or said it cannot serve now), through grpc-js' retry policy. Creates
 * carry a `request_id`, so a retried create never makes a second resource.
 */
export function createClient<C extends Client>(Ctor: ClientCtor<C>, address: string, opts: ClientFactoryOptions = {}): C {
  const deadlineMs = opts.deadlineMs ?? 30_000;
  const interceptor: Interceptor = (options, next) => {
    const callOptions: CallOptions = options;
    if (callOptions.deadline === undefined) options.deadline = Date.now() + deadlineMs;
    return new InterceptingCall(next(options), {
      start(metadata, listener, nextStart) {
        if (opts.apiKey !== undefined && metadata.get("authorization").length === 0) {
          metadata.set("authorization", `Bearer ${opts.apiKey}`);
        }
        for (const [k, v] of Object.entries(traceHeaders())) metadata.set(k, v);
        nextStart(metadata, listener);
      },
    });
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
