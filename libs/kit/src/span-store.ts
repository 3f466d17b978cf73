import { appendFileSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { ExportResultCode, hrTimeToMilliseconds, type ExportResult } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";

/** One finished span as the local store keeps it. */
export interface StoredSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** The Lathe service that made it (trainer, registry, …), else the process's service name. */
  service: string;
  /** Start, in milliseconds since the epoch. */
  startMs: number;
  durationMs: number;
  /** "error" when the span's status is ERROR, else "ok". */
  status: "ok" | "error";
  /** The span's `lathe.*` attributes and a few standard ones (rpc, messaging, http). */
  attributes: Record<string, string | number | boolean>;
}

const KEPT = /^(lathe\.|rpc\.|messaging\.|http\.)/;
/** Files of earlier processes kept in the folder (each bounded), newest first. */
const KEEP_FILES = 16;

/**
 * The local span store of the embedded default: every finished span appended as a JSON line to
 * `spans-{pid}.jsonl` in a folder of the data dir, so `lathe trace` can draw a trace without an
 * OpenTelemetry backend. Bounded: past `maxBytes / 2` a file becomes `spans-{pid}.old.jsonl`
 * (replacing the previous one), so a process keeps at most `maxBytes`; at start only the newest
 * files of earlier processes are kept. Writes are synchronous appends of whole lines, so several
 * processes sharing the folder never interleave within a line.
 */
export class FileSpanExporter implements SpanExporter {
  private readonly file: string;
  private readonly old: string;
  private size = 0;

  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly processService: string,
  ) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, `spans-${process.pid}.jsonl`);
    this.old = join(dir, `spans-${process.pid}.old.jsonl`);
    sweep(dir);
    try {
      this.size = statSync(this.file).size;
    } catch {
      this.size = 0;
    }
  }

  export(spans: ReadableSpan[], done: (r: ExportResult) => void): void {
    try {
      const text = spans.map((s) => `${JSON.stringify(this.stored(s))}\n`).join("");
      if (this.size + text.length > this.maxBytes / 2) {
        renameSync(this.file, this.old);
        this.size = 0;
      }
      appendFileSync(this.file, text);
      this.size += Buffer.byteLength(text);
      done({ code: ExportResultCode.SUCCESS });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        // The file was not there to rename (a first write): write it now.
        try {
          const text = spans.map((s) => `${JSON.stringify(this.stored(s))}\n`).join("");
          appendFileSync(this.file, text);
          this.size = Buffer.byteLength(text);
          done({ code: ExportResultCode.SUCCESS });
          return;
        } catch (again) {
          done({ code: ExportResultCode.FAILED, error: again as Error });
          return;
        }
      }
      done({ code: ExportResultCode.FAILED, error: err as Error });
    }
  }

  async shutdown(): Promise<void> {}

  async forceFlush(): Promise<void> {}

  private stored(s: ReadableSpan): StoredSpan {
    const attributes: StoredSpan["attributes"] = {};
    for (const [k, v] of Object.entries(s.attributes)) if (KEPT.test(k) && (typeof v === "string" || typeof v === "number" || typeof v === "boolean")) attributes[k] = v;
    const service = typeof s.attributes["lathe.service"] === "string" ? s.attributes["lathe.service"] : this.processService;
    return {
      traceId: s.spanContext().traceId,
      spanId: s.spanContext().spanId,
      parentSpanId: s.parentSpanContext?.spanId ?? "",
      name: s.name,
      service,
      startMs: hrTimeToMilliseconds(s.startTime),
      durationMs: hrTimeToMilliseconds(s.duration),
      status: s.status.code === 2 ? "error" : "ok",
      attributes,
    };
  }
}

/** Keeps the newest files of the span folder, removing the rest. */
function sweep(dir: string): void {
  const files = readdirSync(dir)
    .filter((f) => /^spans-\d+(\.old)?\.jsonl$/.test(f))
    .map((f) => ({ f, t: statSync(join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of files.slice(KEEP_FILES)) rmSync(join(dir, f), { force: true });
}

/** The spans of one trace in a span folder (every process's files), oldest first; [] when none. */
export function readStoredTrace(dir: string, traceId: string): StoredSpan[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => /^spans-\d+(\.old)?\.jsonl$/.test(f));
  } catch {
    return [];
  }
  const out: StoredSpan[] = [];
  const seen = new Set<string>();
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(join(dir, f), "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      if (!line.includes(traceId)) continue;
      try {
        const s = JSON.parse(line) as StoredSpan;
        if (s.traceId === traceId && !seen.has(s.spanId)) {
          seen.add(s.spanId);
          out.push(s);
        }
      } catch {
        // a line cut by a crash: skipped
      }
    }
  }
  return out.sort((a, b) => a.startMs - b.startMs);
}

/** The folder of the local span store in a data dir. */
export const spanStoreDir = (dataDir: string): string => join(dataDir, "traces");
