import { Metadata, status as GrpcStatus } from "@grpc/grpc-js";

/**
 * Canonical error codes (google.rpc.Code names). Domain code throws `AppError` with one of these;
 * the gRPC layer and the HTTP layer map it through the one table below.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "FAILED_PRECONDITION"
  | "OUT_OF_RANGE"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "ABORTED"
  | "RESOURCE_EXHAUSTED"
  | "CANCELLED"
  | "DEADLINE_EXCEEDED"
  | "UNIMPLEMENTED"
  | "UNAVAILABLE"
  | "INTERNAL";

/** The one table from error codes to gRPC status codes and HTTP statuses. */
export const errorCodeTable: Readonly<Record<ErrorCode, { grpc: GrpcStatus; http: number }>> = {
  INVALID_ARGUMENT: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400 },
  FAILED_PRECONDITION: { grpc: GrpcStatus.FAILED_PRECONDITION, http: 400 },
  OUT_OF_RANGE: { grpc: GrpcStatus.OUT_OF_RANGE, http: 400 },
  UNAUTHENTICATED: { grpc: GrpcStatus.UNAUTHENTICATED, http: 401 },
  PERMISSION_DENIED: { grpc: GrpcStatus.PERMISSION_DENIED, http: 403 },
  NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, http: 404 },
  ALREADY_EXISTS: { grpc: GrpcStatus.ALREADY_EXISTS, http: 409 },
  ABORTED: { grpc: GrpcStatus.ABORTED, http: 409 },
  RESOURCE_EXHAUSTED: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, http: 429 },
  CANCELLED: { grpc: GrpcStatus.CANCELLED, http: 499 },
  DEADLINE_EXCEEDED: { grpc: GrpcStatus.DEADLINE_EXCEEDED, http: 504 },
  UNIMPLEMENTED: { grpc: GrpcStatus.UNIMPLEMENTED, http: 501 },
  UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, http: 503 },
  INTERNAL: { grpc: GrpcStatus.INTERNAL, http: 500 },
};

/** Codes a client may retry: the call did not happen, or lost a race it can win next time. */
export const retryableCodes: ReadonlySet<ErrorCode> = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED"]);

/**
 * Whether an operation that failed with `err` may be tried again: its code, read as `asAppError`
 * reads any thrown value (unknown errors are INTERNAL, a full disk RESOURCE_EXHAUSTED), is one of
 * `retryableCodes`.
 */
export function isRetryable(err: unknown): boolean {
  return retryableCodes.has(asAppError(err).code);
}

/** Trailer keys that carry the machine-readable part of an error to gRPC clients. */
export const errorTrailers = { reason: "lathe-error-reason", field: "lathe-error-field", metadata: "lathe-error-metadata" } as const;

/**
 * An error a caller can act on: a canonical `code`, a machine-readable `reason`
 * (UPPER_SNAKE_CASE, stable across releases, e.g. `MODEL_NOT_FOUND`), a message for people that
 * says what was wrong and where, and metadata such as the offending `field`.
 */
export class AppError extends Error {
  override readonly name = "AppError";
  constructor(
    readonly code: ErrorCode,
    readonly reason: string,
    message: string,
    readonly metadata: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  /** The request field this error is about, when there is one. */
  get field(): string | undefined {
    return this.metadata["field"];
  }
}

/** An INVALID_ARGUMENT error about one request field, named in AIP's snake_case path form. */
export function invalidArgument(field: string, message: string, reason = "INVALID_FIELD"): AppError {
  return new AppError("INVALID_ARGUMENT", reason, `${field}: ${message}`, { field });
}

/** A NOT_FOUND error for a resource name. */
export function notFound(resource: string, name: string): AppError {
  return new AppError("NOT_FOUND", `${resource.toUpperCase()}_NOT_FOUND`, `${name} was not found`, { name });
}

/** Names the unfinished RPCs: they belong to a later issue, whose subject the message gives. */
export function unimplemented(method: string, subject: string): AppError {
  return new AppError("UNIMPLEMENTED", "NOT_IMPLEMENTED_YET", `${method} is not implemented yet: ${subject}`);
}

/** The gRPC form of an error: status code, message and trailers with the reason. */
export function toGrpcError(err: unknown): { code: GrpcStatus; details: string; metadata: Metadata } {
  const app = asAppError(err);
  const metadata = new Metadata();
  metadata.set(errorTrailers.reason, toTrailer(app.reason));
  if (app.field !== undefined) metadata.set(errorTrailers.field, toTrailer(app.field));
  if (Object.keys(app.metadata).length > 0) metadata.set(errorTrailers.metadata, toTrailer(JSON.stringify(app.metadata)));
  return { code: errorCodeTable[app.code].grpc, details: app.message, metadata };
}

// Trailer values must be printable ASCII (grpc-js throws otherwise): the rest, and '%', go percent-encoded.
const toTrailer = (v: string): string => v.replace(/[^\x20-\x24\x26-\x7e]+/g, (s: string) => Buffer.from(s).toString("hex").replace(/../g, "%$&"));
const fromTrailer = (v: unknown): string | undefined => {
  if (typeof v !== "string") return undefined;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
};

/**
 * Any thrown value as an AppError; unknown errors become INTERNAL without leaking their text. A
 * full disk (ENOSPC, EDQUOT, or Postgres' SQLSTATE 53100 disk_full), wherever it was hit and
 * however it was wrapped, is RESOURCE_EXHAUSTED `DISK_FULL`: the caller can retry once an
 * operator has freed space.
 */
export function asAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (isGrpcStatusError(err)) return fromGrpcError(err);
  const full = diskFullCode(err);
  if (full !== undefined) {
    const what = full === "EDQUOT" ? "its disk quota is used up" : "no space is left on the device";
    return new AppError("RESOURCE_EXHAUSTED", "DISK_FULL", `the server's disk is full: ${what}; retry once an operator has freed space`);
  }
  return new AppError("INTERNAL", "INTERNAL", "internal error");
}

/** ENOSPC, EDQUOT or 53100 when `err` or one of its causes is a full disk. */
function diskFullCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; typeof e === "object" && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "ENOSPC" || code === "EDQUOT" || code === "53100") return code;
  }
  return undefined;
}

const codeByGrpc = new Map<number, ErrorCode>(
  Object.entries(errorCodeTable).map(([code, v]) => [v.grpc, code as ErrorCode]),
);

interface GrpcStatusError extends Error {
  code: number;
  details?: string;
  metadata?: Metadata;
}

function isGrpcStatusError(err: unknown): err is GrpcStatusError {
  return err instanceof Error && typeof (err as Partial<GrpcStatusError>).code === "number" && "metadata" in err;
}

/** Rebuilds an AppError from a gRPC client error, reading the reason trailers. */
export function fromGrpcError(err: GrpcStatusError): AppError {
  const code = codeByGrpc.get(err.code) ?? "INTERNAL";
  const md = err.metadata;
  const reason = fromTrailer(md?.get(errorTrailers.reason)[0]) ?? code;
  let metadata: Record<string, string> = {};
  const raw = fromTrailer(md?.get(errorTrailers.metadata)[0]);
  if (typeof raw === "string") {
    try {
      metadata = JSON.parse(raw) as Record<string, string>;
    } catch {
      metadata = {};
    }
  }
  const field = fromTrailer(md?.get(errorTrailers.field)[0]);
  if (typeof field === "string") metadata = { ...metadata, field };
  return new AppError(code, reason, err.details ?? err.message, metadata);
}
