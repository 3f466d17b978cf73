import { join } from "node:path";
import { trace } from "@opentelemetry/api";
import { pino, type DestinationStream, type Logger, type LevelWithSilent, type StreamEntry } from "pino";

export type { Logger } from "pino";

/**
 * Names of fields whose values never reach a log, at any depth: API keys, `authorization`
 * metadata, passwords and secrets of the config. (`redactConfig` already masks the config; this is
 * the second line, for whatever else is logged with such a field.)
 */
export const redactedLogField = /^(authorization|x-api-key|api[-_]?keys?|password|secret|.*_SECRET|LATHE_API_KEYS)$/i;

const maxRedactDepth = 8;

/** `obj` with the values of secret-named fields replaced; copies only what it changes. */
function redactFields<T>(obj: T, depth = 0): T {
  if (depth > maxRedactDepth || typeof obj !== "object" || obj === null) return obj;
  if (Array.isArray(obj)) {
    let copy: unknown[] | undefined;
    obj.forEach((v, i) => {
      const r = redactFields(v, depth + 1);
      if (r !== v) (copy ??= [...obj])[i] = r;
    });
    return (copy ?? obj) as T;
  }
  const proto = Object.getPrototypeOf(obj) as unknown;
  if (proto !== Object.prototype && proto !== null) return obj; // errors have their serializer; buffers, maps and the like are left
  let copy: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    // What redactConfig masked ("[redacted: 2 entries]") stays as it says.
    const masked = typeof v === "string" && v.startsWith("[redacted");
    const r = redactedLogField.test(k) && !masked ? "[redacted]" : redactFields(v, depth + 1);
    if (r !== v) (copy ??= { ...(obj as Record<string, unknown>) })[k] = r;
  }
  return (copy ?? obj) as T;
}

/**
 * Test runs only: when LATHE_TEST_LOG_DIR is set, every logger also writes every line (level
 * trace, whatever its own level) to `<dir>/<service>-<pid>.log`, so the suite can check that no
 * planted secret reached any log (scripts/test-log-scan.ts). Read when a logger is made, never at
 * import time.
 */
export const testLogDirVariable = "LATHE_TEST_LOG_DIR";

/**
 * A pino JSON logger whose every line carries the active span's `trace_id` and `span_id`, so a
 * log line leads to its trace. Messages are constant; data goes in fields. API keys and other
 * secret fields are redacted, and errors (`err`, `error`, `cause`) are logged by
 * {@link serializeError}: their kind, code, message and stack, never the SQL, parameters, rows or
 * quoted values a database error carries.
 */
export function createLogger(opts: { service: string; level?: LevelWithSilent; destination?: NodeJS.WritableStream }): Logger {
  const level = opts.level ?? "info";
  const main = opts.destination ?? process.stdout;
  const testDir = process.env[testLogDirVariable];
  const streams: StreamEntry[] = [];
  if (level !== "silent") streams.push({ level, stream: main as DestinationStream });
  if (testDir) streams.push({ level: "trace", stream: testLogFile(join(testDir, `${opts.service.replace(/[^A-Za-z0-9_-]/g, "_")}-${process.pid}.log`)) });
  return pino(
    {
      level: testDir ? "trace" : level,
      base: { service: opts.service },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: (obj) => redactFields(obj) },
      serializers: { err: serializeError, error: serializeError, cause: serializeError },
      mixin() {
        const span = trace.getActiveSpan();
        if (!span) return {};
        const ctx = span.spanContext();
        return { trace_id: ctx.traceId, span_id: ctx.spanId };
      },
    },
    testDir ? pino.multistream(streams) : (main as DestinationStream),
  );
}

// One appending file per path and process, however many loggers write to it.
const testFiles = new Map<string, DestinationStream>();
function testLogFile(path: string): DestinationStream {
  let f = testFiles.get(path);
  if (!f) {
    f = pino.destination({ dest: path, append: true, mkdir: true, sync: true });
    testFiles.set(path, f);
  }
  return f;
}

/** A five-character SQLSTATE, as Postgres (over the wire or in PGlite) reports. */
const sqlstate = /^[0-9A-Z]{5}$/;
const maxMessage = 500;

/** Whether `e` came from a database: it carries a SQLSTATE and the fields of a Postgres error. */
function isDatabaseError(e: Record<string, unknown>): boolean {
  return typeof e["code"] === "string" && sqlstate.test(e["code"]) && ["severity", "routine", "detail", "where", "query", "params", "internalQuery"].some((k) => k in e);
}

/**
 * A message with the values it quotes taken out: `"…"` for what was in double quotes (Postgres
 * quotes values, JSON.parse quotes the input it choked on) and for single-quoted words (a path in
 * a system error). A database message is also cut before its first `: `, after which Postgres puts
 * the offending input (`invalid input syntax for type integer: "…"`, `invalid byte sequence …: 0x…`).
 */
export function scrubMessage(message: string, database = false): string {
  let m = database ? message.split(": ")[0]! : message;
  m = m.replace(/"(?:[^"\\]|\\.)*"?/g, '"…"').replace(/(^|[\s(=:,[])'(?:[^'\\]|\\.)*'?/g, "$1'…'");
  return m.length > maxMessage ? `${m.slice(0, maxMessage)}…` : m;
}

/**
 * What a log keeps of an error: its kind (`type`, and `name` when different), `code` (an errno
 * code, a SQLSTATE, a gRPC status), an AppError's `reason` and `field`, a system error's
 * `syscall`, the schema objects a database error names (`table`, `column`, `constraint`…), the
 * message scrubbed by {@link scrubMessage}, the stack under that message, and its `cause` alike.
 * Dropped: everything else, notably a database error's `detail`, `where`, `hint`, `query`,
 * `params`, `internalQuery` (the SQL, its parameters, the rows' values), a system error's `path`
 * and a gRPC error's `metadata`.
 */
export function serializeError(err: unknown, depth = 0): Record<string, unknown> {
  if (typeof err !== "object" || err === null) return { type: typeof err };
  const e = err as Record<string, unknown>;
  const type = (err as { constructor?: { name?: unknown } }).constructor?.name;
  const out: Record<string, unknown> = { type: typeof type === "string" ? type : "Object" };
  const name = typeof e["name"] === "string" ? e["name"] : undefined;
  if (name !== undefined && name !== out["type"]) out["name"] = name;
  const code = e["code"];
  if ((typeof code === "string" && code.length <= 64) || typeof code === "number") out["code"] = code;
  for (const k of ["reason", "syscall"]) if (typeof e[k] === "string") out[k] = e[k];
  if (typeof e["errno"] === "number") out["errno"] = e["errno"];
  const field = (e["metadata"] as Record<string, unknown> | undefined)?.["field"];
  if (typeof field === "string") out["field"] = field;
  const database = isDatabaseError(e);
  if (database) {
    for (const k of ["severity", "schema", "table", "column", "dataType", "constraint", "routine"]) if (typeof e[k] === "string") out[k] = e[k];
  }
  const message = typeof e["message"] === "string" ? scrubMessage(e["message"], database) : undefined;
  if (message !== undefined) out["message"] = message;
  if (typeof e["stack"] === "string") {
    // The stack opens with "Name: message" (the message again, unscrubbed): keep only its frames.
    const frames = e["stack"].split("\n").filter((l) => /^\s+at /.test(l));
    out["stack"] = [`${name ?? out["type"]}${message !== undefined ? `: ${message}` : ""}`, ...frames].join("\n");
  }
  if (depth < 3) {
    if (e["cause"] !== undefined) out["cause"] = serializeError(e["cause"], depth + 1);
    if (Array.isArray(e["errors"])) out["errors"] = (e["errors"] as unknown[]).slice(0, 5).map((x) => serializeError(x, depth + 1));
  }
  return out;
}
