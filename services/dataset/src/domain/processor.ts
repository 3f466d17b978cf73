import { createHash } from "node:crypto";
import { DataCheck, Readiness } from "@lathe/proto/lathe/type/v1/data_check";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import type {
  DatasetFormat,
  PiiHit} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import {
  CheckResult,
  DuplicateCluster,
  QualityReport,
  ReadinessReason,
  Severity,
  TokenStatistics,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import type { ModelTokenizer } from "@lathe/models";
import { chatRoles } from "@lathe/kit";
import { NearDuplicateIndex, normalizeText, scanPii } from "@lathe/text";
import type { ResolvedOptions } from "./options.js";
import { piiKindEnum } from "./options.js";
import { answerOf, conversationText, promptOf, type NormalRow } from "./parse.js";

/** One line as the processor gets it: parsed, or why it could not be. */
export type RowInput = { line: number; row: NormalRow } | { line: number; error: string; check: DataCheck };

/** A row as stored: the line it came from, its conversation, the checks it failed. */
export interface StoredRow {
  idx: number;
  line: number;
  messages: NormalRow["messages"];
  failedChecks: DataCheck[];
  tokenCount: number;
}

/** Where rows go (a staging table); duplicates found at the end are marked afterwards. */
export interface RowSink {
  write(rows: readonly StoredRow[]): Promise<void>;
  markFailed(idx: readonly number[], check: DataCheck): Promise<void>;
}

const listCap = 10_000;
const blocking = new Set([DataCheck.DATA_CHECK_PARSE, DataCheck.DATA_CHECK_LINE_BYTES, DataCheck.DATA_CHECK_PII]);

class UnionFind {
  private readonly parent = new Map<number, number>();
  find(x: number): number {
    let p = this.parent.get(x) ?? x;
    if (p !== x) {
      p = this.find(p);
      this.parent.set(x, p);
    }
    return p;
  }
  union(a: number, b: number): void {
    const ra = this.find(a);
    const rb = this.find(b);
    if (ra !== rb) this.parent.set(Math.max(ra, rb), Math.min(ra, rb));
  }
  groups(): number[][] {
    const g = new Map<number, number[]>();
    for (const x of this.parent.keys()) {
      const r = this.find(x);
      if (!g.has(r)) g.set(r, [r]);
      if (x !== r) g.get(r)!.push(x);
    }
    return [...g.values()].map((v) => [...new Set(v)].sort((a, b) => a - b)).sort((a, b) => a[0]! - b[0]!);
  }
}

/**
 * Runs every check over a stream of rows and builds the quality report, holding per row only
 * what the checks need (a hash, a MinHash signature in the LSH index, a token count), never the
 * text. Rows go to the sink in batches as they come.
 */
export class VersionBuilder {
  private readonly failed = new Map<DataCheck, number[]>();
  private readonly failedCount = new Map<DataCheck, number>();
  private readonly piiHits: PiiHit[] = [];
  private piiHitCount = 0;
  private readonly parseErrors: string[] = [];
  private readonly exact = new Map<string, number>();
  private readonly exactUnion = new UnionFind();
  private readonly nearUnion = new UnionFind();
  private readonly near: NearDuplicateIndex | undefined;
  private readonly lineOf: number[] = [];
  private readonly tokens: number[] = [];
  private answerTokens = 0;
  private batch: StoredRow[] = [];
  private idx = 0;
  private rows = 0;
  private lines = 0;
  private failingRows = new Set<number>();

  constructor(
    private readonly opts: ResolvedOptions,
    private readonly tokenizer: ModelTokenizer | undefined,
    private readonly sink: RowSink,
  ) {
    const nd = opts.nearDuplicates;
    this.near = nd.enabled ? new NearDuplicateIndex({ numPerm: nd.numPerm, shingleSize: nd.shingleSize, threshold: nd.threshold }) : undefined;
  }

  private fail(check: DataCheck, idx: number, line: number, failed: DataCheck[]): void {
    failed.push(check);
    this.failingRows.add(idx);
    this.failedCount.set(check, (this.failedCount.get(check) ?? 0) + 1);
    const lines = this.failed.get(check) ?? [];
    if (lines.length < listCap) lines.push(line);
    this.failed.set(check, lines);
  }

  async add(input: RowInput): Promise<void> {
    this.lines++;
    const idx = this.idx++;
    this.lineOf.push(input.line);
    const failed: DataCheck[] = [];
    if ("error" in input) {
      this.fail(input.check, idx, input.line, failed);
      if (this.parseErrors.length < 20) this.parseErrors.push(`line ${input.line}: ${input.error}`);
      this.tokens.push(-1);
      await this.push({ idx, line: input.line, messages: [], failedChecks: failed, tokenCount: 0 });
      return;
    }
    this.rows++;
    const { row } = input;
    const o = this.opts;
    const prompt = promptOf(row);
    const answer = answerOf(row);
    if (o.promptMinChars > 0 && [...prompt].length <= o.promptMinChars) this.fail(DataCheck.DATA_CHECK_PROMPT_LENGTH, idx, input.line, failed);
    if (o.answerMinChars > 0 && [...answer].length <= o.answerMinChars) this.fail(DataCheck.DATA_CHECK_ANSWER_LENGTH, idx, input.line, failed);

    if (o.pii.enabled) {
      let found = false;
      for (const [mi, m] of row.messages.entries()) {
        for (const hit of scanPii(m.content, o.pii.kinds)) {
          found = true;
          this.piiHitCount++;
          if (this.piiHits.length < listCap) {
            const text = m.content.slice(hit.start, hit.end);
            this.piiHits.push({ line: input.line, kind: piiKindEnum[hit.kind], messageIndex: mi, start: hit.start, end: hit.end, maskedText: mask(text) });
          }
        }
      }
      if (found) this.fail(DataCheck.DATA_CHECK_PII, idx, input.line, failed);
    }

    const format = o.answerFormat;
    if (format.kind !== "none") {
      const answers = row.messages.filter((m) => m.role === ChatRole.CHAT_ROLE_ASSISTANT).map((m) => m.content);
      const ok = answers.every((a) => {
        if (format.kind === "regex") return format.regex.test(a);
        let v: unknown;
        try {
          v = JSON.parse(a);
        } catch {
          return false;
        }
        return format.kind === "json" || format.validate(v) === true;
      });
      if (!ok) this.fail(DataCheck.DATA_CHECK_ANSWER_FORMAT, idx, input.line, failed);
    }

    let tokenCount = 0;
    if (this.tokenizer) {
      const counted = this.tokenizer.countChat(row.messages.map((m) => ({ role: chatRoles.name(m.role) ?? "user", content: m.content })));
      tokenCount = counted.total;
      this.answerTokens += counted.answer;
      if (tokenCount > o.maxSeqLength) this.fail(DataCheck.DATA_CHECK_TOKEN_LIMIT, idx, input.line, failed);
    }
    this.tokens.push(this.tokenizer ? tokenCount : -1);

    const text = conversationText(row);
    const key = createHash("sha1").update(normalizeText(text)).digest("base64");
    const first = this.exact.get(key);
    if (first === undefined) {
      this.exact.set(key, idx);
      // Near duplicates: only rows that are not exact copies enter the index.
      if (this.near) for (const other of this.near.add(idx, text)) this.nearUnion.union(other, idx);
    } else {
      this.exactUnion.union(first, idx);
    }
    await this.push({ idx, line: input.line, messages: row.messages, failedChecks: failed, tokenCount });
  }

  private async push(row: StoredRow): Promise<void> {
    this.batch.push(row);
    if (this.batch.length >= 500) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.batch.length === 0) return;
    const b = this.batch;
    this.batch = [];
    await this.sink.write(b);
  }

  /** Finds duplicate clusters, marks their extra rows, and returns the report. */
  async finish(meta: { format: DatasetFormat; name: string; checkOptions: QualityReport["checkOptions"] }): Promise<{ report: QualityReport; rowCount: number; lineCount: number; passingRowCount: number; totalTokens: number }> {
    await this.flush();
    const exactClusters = this.exactUnion.groups();
    const nearClusters = this.nearUnion.groups();
    const dupes = async (clusters: number[][], check: DataCheck) => {
      const extra = clusters.flatMap((c) => c.slice(1));
      const failed: DataCheck[] = [];
      for (const i of extra) this.fail(check, i, this.lineOf[i]!, failed);
      for (let i = 0; i < extra.length; i += 1000) await this.sink.markFailed(extra.slice(i, i + 1000), check);
    };
    await dupes(exactClusters, DataCheck.DATA_CHECK_EXACT_DUPLICATE);
    await dupes(nearClusters, DataCheck.DATA_CHECK_NEAR_DUPLICATE);
    for (const lines of this.failed.values()) lines.sort((a, b) => a - b);

    const o = this.opts;
    const checks: [DataCheck, boolean][] = [
      [DataCheck.DATA_CHECK_PARSE, false],
      [DataCheck.DATA_CHECK_LINE_BYTES, false],
      [DataCheck.DATA_CHECK_PROMPT_LENGTH, o.promptMinChars === 0],
      [DataCheck.DATA_CHECK_ANSWER_LENGTH, o.answerMinChars === 0],
      [DataCheck.DATA_CHECK_EXACT_DUPLICATE, false],
      [DataCheck.DATA_CHECK_NEAR_DUPLICATE, !o.nearDuplicates.enabled],
      [DataCheck.DATA_CHECK_PII, !o.pii.enabled],
      [DataCheck.DATA_CHECK_ANSWER_FORMAT, o.answerFormat.kind === "none"],
      [DataCheck.DATA_CHECK_TOKEN_LIMIT, !this.tokenizer],
    ];
    const checkResults = checks.map(([check, skipped]) =>
      CheckResult.fromPartial({
        check,
        severity: blocking.has(check) ? Severity.SEVERITY_BLOCKING : Severity.SEVERITY_WARNING,
        failedCount: this.failedCount.get(check) ?? 0,
        failedLines: this.failed.get(check) ?? [],
        failedLinesTruncated: (this.failedCount.get(check) ?? 0) > listCap,
        skipped,
      }),
    );
    const toLines = (c: number[]) => DuplicateCluster.fromPartial({ lines: c.map((i) => this.lineOf[i]!), minSimilarity: 0 });
    const passing = this.lines - this.failingRows.size;
    const counted = this.tokens.filter((t) => t >= 0).sort((a, b) => a - b);
    const tokenStatistics = this.tokenizer && counted.length > 0 ? tokenStats(counted, o, this.answerTokens) : undefined;
    const { readiness, reasons } = decideReadiness(checkResults, passing, o, this.rows, this.parseErrors, nearClusters.length);
    const report = QualityReport.fromPartial({
      name: `${meta.name}/qualityReport`,
      createTime: new Date(),
      checkOptions: meta.checkOptions,
      format: meta.format,
      lineCount: this.lines,
      rowCount: this.rows,
      passingRowCount: passing,
      checkResults,
      exactDuplicateClusters: exactClusters.slice(0, listCap).map((c) => ({ ...toLines(c), minSimilarity: 1 })),
      nearDuplicateClusters: nearClusters.slice(0, listCap).map((c) => ({ ...toLines(c), minSimilarity: o.nearDuplicates.threshold })),
      duplicateClustersTruncated: exactClusters.length > listCap || nearClusters.length > listCap,
      piiHits: this.piiHits,
      piiHitsTruncated: this.piiHitCount > listCap,
      tokenStatistics,
      readiness,
      readinessReasons: reasons,
    });
    return { report, rowCount: this.rows, lineCount: this.lines, passingRowCount: passing, totalTokens: tokenStatistics?.totalTokens ?? 0 };
  }
}

function mask(text: string): string {
  if (text.length <= 4) return "*".repeat(text.length);
  return `${text.slice(0, 2)}${"*".repeat(Math.min(text.length - 4, 40))}${text.slice(-2)}`;
}

function tokenStats(sorted: number[], o: ResolvedOptions, answerTokens: number): TokenStatistics {
  const q = (p: number) => {
    const pos = (sorted.length - 1) * p;
    const lo = Math.floor(pos);
    const hi = Math.ceil(pos);
    return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
  };
  const total = sorted.reduce((a, b) => a + b, 0);
  const over = sorted.filter((t) => t > o.maxSeqLength);
  return TokenStatistics.fromPartial({
    tokenizerModel: o.tokenizerModel,
    maxSeqLength: o.maxSeqLength,
    minTokens: sorted[0]!,
    medianTokens: q(0.5),
    p95Tokens: q(0.95),
    maxTokens: sorted[sorted.length - 1]!,
    meanTokens: total / sorted.length,
    totalTokens: total,
    answerTokens,
    overMaxSeqLengthCount: over.length,
    truncatedTokens: over.reduce((a, t) => a + t - o.maxSeqLength, 0),
  });
}

const checkLabels: Record<number, string> = {
  [DataCheck.DATA_CHECK_PARSE]: "lines that do not parse",
  [DataCheck.DATA_CHECK_LINE_BYTES]: "lines over the size limit",
  [DataCheck.DATA_CHECK_PROMPT_LENGTH]: "prompts too short",
  [DataCheck.DATA_CHECK_ANSWER_LENGTH]: "answers too short",
  [DataCheck.DATA_CHECK_EXACT_DUPLICATE]: "exact duplicates",
  [DataCheck.DATA_CHECK_NEAR_DUPLICATE]: "near duplicates",
  [DataCheck.DATA_CHECK_PII]: "rows with personal data or secrets",
  [DataCheck.DATA_CHECK_ANSWER_FORMAT]: "answers not in the required format",
  [DataCheck.DATA_CHECK_TOKEN_LIMIT]: "rows over max_seq_length (they would be truncated)",
};

/** The verdict: NOT_READY on blocking findings or no usable row, WARNINGS on the rest, else READY. */
function decideReadiness(results: CheckResult[], passing: number, o: ResolvedOptions, rows: number, parseErrors: string[], nearClusters: number): { readiness: Readiness; reasons: ReadinessReason[] } {
  const reasons: ReadinessReason[] = [];
  for (const r of results) {
    if (r.failedCount === 0) continue;
    const first = r.failedLines.slice(0, 10).join(", ");
    let message = `${r.failedCount} ${checkLabels[r.check]} (lines ${first}${r.failedCount > 10 ? ", …" : ""})`;
    if (r.check === DataCheck.DATA_CHECK_PARSE && parseErrors.length > 0) message += `: ${parseErrors.slice(0, 5).join("; ")}`;
    reasons.push(ReadinessReason.fromPartial({ severity: r.severity, check: r.check, code: DataCheck[r.check].replace("DATA_CHECK_", ""), message, affectedRowCount: r.failedCount }));
  }
  if (rows === 0) reasons.push(ReadinessReason.fromPartial({ severity: Severity.SEVERITY_BLOCKING, code: "NO_USABLE_ROW", message: "no line is a usable example" }));
  if (passing < o.minRowCount) {
    reasons.push(ReadinessReason.fromPartial({ severity: Severity.SEVERITY_WARNING, code: "FEW_ROWS", message: `${passing} rows pass every check; under ${o.minRowCount}, fine-tuning tends to overfit`, affectedRowCount: passing }));
  }
  if (rows > 0 && nearClusters / rows > 0.05) {
    reasons.push(ReadinessReason.fromPartial({ severity: Severity.SEVERITY_WARNING, check: DataCheck.DATA_CHECK_NEAR_DUPLICATE, code: "HIGH_NEAR_DUPLICATE_RATE", message: `${nearClusters} near-duplicate clusters among ${rows} rows` }));
  }
  const readiness = reasons.some((r) => r.severity === Severity.SEVERITY_BLOCKING)
    ? Readiness.READINESS_NOT_READY
    : reasons.length > 0
      ? Readiness.READINESS_WARNINGS
      : Readiness.READINESS_READY;
  return { readiness, reasons };
}
