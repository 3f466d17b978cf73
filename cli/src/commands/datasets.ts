import { createReadStream, createWriteStream } from "node:fs";
import { Command, Option } from "commander";
import { AppError, call, chatRoles, fromGrpcError } from "@lathe/kit";
import {
  Dataset,
  DatasetFormat,
  DatasetRow,
  DatasetServiceClient,
  DatasetVersion,
  QualityReport,
  UploadDatasetVersionHeader,
  type DerivationOperation,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { CheckOptions, DataCheck, Readiness } from "@lathe/proto/lathe/type/v1/data_check";
import { connect, withConnection, type ConnectionOptions } from "../connection.js";
import { datasetName, datasetVersionName } from "../names.js";
import { printJson, printTable } from "../output.js";

const formats: Record<string, DatasetFormat> = {
  auto: DatasetFormat.DATASET_FORMAT_AUTO,
  chat: DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES,
  "instruction-output": DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT,
  "prompt-completion": DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION,
};

/** Streams a file (or stdin for "-") as UploadDatasetVersion: the header, then 1 MiB chunks. */
function uploadFile(client: DatasetServiceClient, header: UploadDatasetVersionHeader, path: string): Promise<DatasetVersion> {
  return new Promise((resolve, reject) => {
    const call = client.uploadDatasetVersion((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!.datasetVersion!)));
    call.write({ header });
    const input: NodeJS.ReadableStream = path === "-" ? process.stdin : createReadStream(path, { highWaterMark: 1 << 20 });
    input.on("error", (err: Error) => {
      call.cancel();
      reject(new Error(`cannot read ${path}: ${err.message}`));
    });
    input.on("data", (chunk: Buffer) => {
      if (!call.write({ chunk })) {
        input.pause();
        call.once("drain", () => input.resume());
      }
    });
    input.on("end", () => call.end());
  });
}

const checkNames = (c: DataCheck) => DataCheck[c].replace("DATA_CHECK_", "").toLowerCase();

/** The report as a person reads it. */
export function printReport(v: DatasetVersion, r: QualityReport, out: NodeJS.WritableStream = process.stdout): void {
  out.write(`${v.name}  ${v.rowCount} rows (${v.passingRowCount} pass every check) from ${r.lineCount} lines  readiness: ${Readiness[r.readiness].replace("READINESS_", "")}\n`);
  printTable(
    r.checkResults.map((c) => ({
      check: checkNames(c.check),
      failed: c.skipped ? "skipped" : String(c.failedCount),
      lines: c.failedLines.slice(0, 12).join(",") + (c.failedCount > 12 ? ",…" : ""),
    })),
    ["check", "failed", "lines"],
    out,
  );
  if (r.exactDuplicateClusters.length > 0) out.write(`exact duplicate clusters (lines): ${r.exactDuplicateClusters.slice(0, 10).map((c) => `[${c.lines.join(",")}]`).join(" ")}\n`);
  if (r.nearDuplicateClusters.length > 0) out.write(`near duplicate clusters (lines): ${r.nearDuplicateClusters.slice(0, 10).map((c) => `[${c.lines.join(",")}]`).join(" ")}\n`);
  if (r.piiHits.length > 0) out.write(`PII: ${r.piiHits.slice(0, 10).map((h) => `line ${h.line} ${["", "email", "phone", "card", "national_id", "ip", "api_key", "iban"][h.kind] ?? h.kind} ${h.maskedText}`).join("; ")}\n`);
  const s = r.tokenStatistics;
  if (s) out.write(`tokens (${s.tokenizerModel}): min ${s.minTokens} median ${s.medianTokens} p95 ${s.p95Tokens.toFixed(1)} max ${s.maxTokens} total ${s.totalTokens}; ${s.overMaxSeqLengthCount} over max_seq_length ${s.maxSeqLength}\n`);
  for (const reason of r.readinessReasons) out.write(`${reason.severity === 2 ? "blocking" : "warning"}: ${reason.message}\n`);
}

export type CreateDatasetOptions = ConnectionOptions & { format: string; tokenizerModel?: string; maxSeqLength?: string; versionId?: string; requestId?: string };

/** `lathe datasets create`: uploads FILE as a new version of dataset NAME (made when missing) and prints the version and its report. */
export async function createDataset(name: string, file: string, o: CreateDatasetOptions): Promise<void> {
  const client = connect(DatasetServiceClient, o);
  try {
    const made = await call(client, "createDataset", { datasetId: name, dataset: Dataset.fromPartial({}), requestId: "" }).then(
      () => true,
      (err: unknown) => {
        if (!(err instanceof AppError && err.code === "ALREADY_EXISTS")) throw err;
        return false;
      },
    );
    const checkOptions = CheckOptions.fromPartial({ tokenizerModel: o.tokenizerModel ?? "", maxSeqLength: o.maxSeqLength === undefined ? undefined : Number(o.maxSeqLength) });
    const version = await uploadFile(client, UploadDatasetVersionHeader.fromPartial({ parent: datasetName(name), versionId: o.versionId ?? "", format: formats[o.format], checkOptions, requestId: o.requestId ?? "" }), file).catch(async (err: unknown) => {
      // A dataset this command made for an upload that failed is removed again, so a failed
      // upload leaves nothing behind (the server refuses to delete one that has versions).
      if (made) await call(client, "deleteDataset", { name: datasetName(name), force: false }).catch(() => undefined);
      throw err;
    });
    const { qualityReport } = await call(client, "getQualityReport", { name: version.name });
    if (o.json) printJson({ datasetVersion: DatasetVersion.toJSON(version), qualityReport: QualityReport.toJSON(qualityReport!) });
    else printReport(version, qualityReport!);
  } finally {
    client.close();
  }
}

export type DeriveDatasetOptions = ConnectionOptions & { dropFailing?: boolean; dedup?: boolean; redact?: boolean; split?: string; seed: string; versionId?: string };

/** `lathe datasets derive`: a new version of VERSION by exactly one operation; prints what it made. */
export async function deriveDatasetVersion(version: string, o: DeriveDatasetOptions): Promise<void> {
  const ops: DerivationOperation[] = [];
  if (o.dropFailing) ops.push({ dropFailingRows: { checks: [] } });
  if (o.dedup) ops.push({ deduplicate: {} });
  if (o.redact) ops.push({ redactPii: { kinds: [] } });
  if (o.split !== undefined) ops.push({ split: { evalFraction: Number(o.split), seed: Number(o.seed) } });
  if (ops.length !== 1) throw new Error("give exactly one of --drop-failing, --dedup, --redact, --split");
  const client = connect(DatasetServiceClient, o);
  try {
    const res = await call(client, "deriveDatasetVersion", { parentVersion: datasetVersionName(version), operation: ops[0], versionId: o.versionId ?? "", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    const made = [res.datasetVersion!, ...(res.evalDatasetVersion ? [res.evalDatasetVersion] : [])];
    if (o.json) printJson({ datasetVersions: made.map((v) => DatasetVersion.toJSON(v)) });
    else for (const v of made) process.stdout.write(`created ${v.name}: ${v.rowCount} rows (${v.passingRowCount} pass every check), readiness ${Readiness[v.readiness].replace("READINESS_", "")}\n`);
  } finally {
    client.close();
  }
}

/** `lathe datasets …`: upload, inspect and derive dataset versions. */
export function datasetsCommand(): Command {
  const datasets = new Command("datasets").description("upload JSONL datasets, read their quality reports, derive cleaned versions");

  withConnection(
    datasets
      .command("create <name> <file>")
      .description("upload FILE (JSONL, or - for stdin) as a new version of dataset NAME (created when missing); prints the version and its report")
      .addOption(new Option("--format <format>", "the file's format").choices(Object.keys(formats)).default("auto"))
      .option("--tokenizer-model <model>", "token statistics with this model's tokenizer: models/{id}, or a model folder inside the server's import roots (LATHE_IMPORT_ROOTS)")
      .option("--max-seq-length <n>", "rows over this many tokens are flagged")
      .option("--version-id <id>", "the version's id (default v1, v2, …)")
      .option("--request-id <id>", "idempotency key: a retry with the same id returns the same version"),
  ).action(createDataset);

  withConnection(datasets.command("list").description("list your datasets")).action(async (o: ConnectionOptions) => {
    const client = connect(DatasetServiceClient, o);
    try {
      const all: Dataset[] = [];
      let pageToken = "";
      do {
        const page = await call(client, "listDatasets", { pageSize: 500, pageToken, filter: "" });
        all.push(...page.datasets);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");
      if (o.json) printJson({ datasets: all.map((d) => Dataset.toJSON(d)) });
      else printTable(all.map((d) => ({ name: d.name, versions: String(d.versionCount), latest: d.latestVersion })), ["name", "versions", "latest"]);
    } finally {
      client.close();
    }
  });

  withConnection(datasets.command("report <version>").description("show a version's quality report (VERSION: datasets/D/versions/V or D@V)")).action(async (version: string, o: ConnectionOptions) => {
    const client = connect(DatasetServiceClient, o);
    try {
      const { datasetVersion } = await call(client, "getDatasetVersion", { name: datasetVersionName(version) });
      const { qualityReport } = await call(client, "getQualityReport", { name: datasetVersionName(version) });
      if (o.json) printJson(QualityReport.toJSON(qualityReport!));
      else printReport(datasetVersion!, qualityReport!);
    } finally {
      client.close();
    }
  });

  withConnection(
    datasets
      .command("derive <version>")
      .description("derive a new version: exactly one of --drop-failing, --dedup, --redact, --split")
      .option("--drop-failing", "drop the rows that fail any check")
      .option("--dedup", "keep one row per exact or near duplicate cluster")
      .option("--redact", "replace PII with typed placeholders such as [EMAIL]")
      .option("--split <fraction>", "split into train and eval, this fraction to eval (no duplicate cluster spans both)")
      .option("--seed <n>", "seed of the split", "42")
      .option("--version-id <id>", "the new version's id"),
  ).action(deriveDatasetVersion);

  withConnection(
    datasets
      .command("rows <version>")
      .description("print a version's rows in the normalised form")
      .option("--limit <n>", "at most this many rows", "20")
      .option("--offset <n>", "skip this many rows", "0")
      .option("--failing", "only rows that fail a check"),
  ).action(async (version: string, o: ConnectionOptions & { limit: string; offset: string; failing?: boolean }) => {
    const client = connect(DatasetServiceClient, o);
    try {
      const rows: DatasetRow[] = await new Promise((resolve, reject) => {
        const out: DatasetRow[] = [];
        const stream = client.streamDatasetRows({ name: datasetVersionName(version), offset: Number(o.offset), limit: Number(o.limit), failingOnly: Boolean(o.failing) });
        stream.on("data", (r: { rows: DatasetRow[] }) => out.push(...r.rows));
        stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
        stream.on("end", () => resolve(out));
      });
      if (o.json) printJson({ rows: rows.map((r) => DatasetRow.toJSON(r)) });
      else
        for (const r of rows) {
          const failed = r.failedChecks.length > 0 ? `  [fails: ${r.failedChecks.map(checkNames).join(", ")}]` : "";
          process.stdout.write(`line ${r.lineNumber}${failed}\n`);
          for (const m of r.messages) process.stdout.write(`  ${chatRoles.name(m.role) ?? `role ${m.role}`}: ${m.content.replace(/\s+/g, " ").slice(0, 200)}\n`);
        }
    } finally {
      client.close();
    }
  });

  withConnection(
    datasets
      .command("export <version>")
      .description("write a version's rows as chat JSONL ({\"messages\": [...]} per line), e.g. for lathe train")
      .requiredOption("--out <file>", "the JSONL file to write"),
  ).action(async (version: string, o: ConnectionOptions & { out: string }) => {
    const client = connect(DatasetServiceClient, o);
    try {
      const out = createWriteStream(o.out);
      let count = 0;
      await new Promise<void>((resolve, reject) => {
        const stream = client.streamDatasetRows({ name: datasetVersionName(version), offset: 0, limit: 0, failingOnly: false });
        stream.on("data", (r: { rows: DatasetRow[] }) => {
          for (const row of r.rows) {
            if (row.messages.length === 0) continue; // a line that never parsed
            count++;
            if (!out.write(`${JSON.stringify({ messages: row.messages.map((m) => ({ role: chatRoles.name(m.role), content: m.content })) })}\n`)) {
              stream.pause();
              out.once("drain", () => stream.resume());
            }
          }
        });
        stream.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
        stream.on("end", () => out.end(() => resolve()));
      });
      if (o.json) printJson({ file: o.out, rows: count });
      else process.stdout.write(`wrote ${count} rows of ${datasetVersionName(version)} to ${o.out}\n`);
    } finally {
      client.close();
    }
  });

  return datasets;
}
