import { createHash } from "node:crypto";
import { once } from "node:events";
import { PassThrough } from "node:stream";
import { parseName, AppError, checkLabels, checkRequestId, checkResourceId, checkSameRequest, checkText, digestHex, invalidArgument, prefixedDigest, type ArtifactStore, type CallContext, type Logger } from "@lathe/kit";
import {
  DatasetFormat,
  DatasetVersion,
  DatasetVersion_State,
  Origin,
  type UploadDatasetVersionHeader,
  type UploadDatasetVersionRequest,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { DataCheck } from "@lathe/proto/lathe/type/v1/data_check";
import { datasetValidated, datasetVersionCreated } from "../events.js";
import { checkCleanLabels, checkCleanText } from "./control-chars.js";
import { diskFull, errorFields } from "./faults.js";
import { LineSplitter } from "./lines.js";
import { resolveOptions } from "./options.js";
import { parseLine } from "./parse.js";
import { VersionBuilder, type RowInput } from "./processor.js";
import { uploadRequest, type CanonicalRequest } from "./requests.js";
import { RequestReplayed, versionName, type DatasetStore, type VersionEntry } from "./store.js";
import type { Tokenizers } from "./tokenizers.js";

export interface IngestDeps {
  store: DatasetStore;
  artifacts: ArtifactStore;
  tokenizers: Tokenizers;
  logger: Logger;
}

const maxFileBytes = 4 * 1024 ** 3;

/** The events that announce a new version and its validation. */
export function versionEvents(tenant: string, v: DatasetVersion, totalTokens: number, report: { readinessReasons: { severity: number }[] }) {
  const dataset = v.name.split("/versions/")[0]!;
  return [
    { def: datasetVersionCreated, tenant, subject: v.name, payload: { datasetVersion: v.name, dataset, parentVersion: v.parentVersion, generationJob: v.generationJob, rowCount: v.rowCount, artifactDigest: v.artifactDigest } },
    {
      def: datasetValidated,
      tenant,
      subject: v.name,
      payload: {
        datasetVersion: v.name,
        readiness: v.readiness,
        rowCount: v.rowCount,
        passingRowCount: v.passingRowCount,
        blockingReasonCount: report.readinessReasons.filter((r) => r.severity === 2).length,
        warningCount: report.readinessReasons.filter((r) => r.severity === 1).length,
        totalTokens,
      },
    },
  ];
}

/**
 * UploadDatasetVersion: the first message is the header, the rest are chunks of a JSONL file.
 * The bytes go to the artifact store as they arrive while each line is parsed, checked and
 * staged; the version appears only when everything is done. Any failure — a bad header, an
 * interrupted stream, a file with no usable line — removes what was staged.
 */
export async function uploadVersion(deps: IngestDeps, requests: AsyncIterable<UploadDatasetVersionRequest>, ctx: CallContext): Promise<DatasetVersion> {
  const it = requests[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done || !first.value.header) throw invalidArgument("header", "the first message of the stream must carry the header");
  const header: UploadDatasetVersionHeader = first.value.header;
  const dataset = await deps.store.datasetRecord(ctx.tenant, "header.parent", header.parent);
  const requestId = checkRequestId("header.request_id", header.requestId);
  if (requestId !== null) {
    const earlier = await deps.store.versionByRequestId(ctx.tenant, dataset.dataset_id, requestId);
    if (earlier) return replayUpload(requestId, earlier, header, it, ctx);
  }
  const versionId = header.versionId === "" ? undefined : checkResourceId("header.version_id", header.versionId);
  const displayName = checkCleanText("header.display_name", checkText("header.display_name", header.displayName, 200));
  const description = checkCleanText("header.description", checkText("header.description", header.description, 2000));
  const labels = checkCleanLabels("header.labels", checkLabels("header.labels", header.labels));
  if (header.contentLength < 0 || header.contentLength > maxFileBytes) throw invalidArgument("header.content_length", `must be from 0 to ${maxFileBytes}`);
  if (header.contentDigest !== "" && !/^(sha256:)?[0-9a-f]{64}$/.test(header.contentDigest)) throw invalidArgument("header.content_digest", "must be sha256:<64 lowercase hex>");
  const generationJob = header.generationJob;
  if (generationJob !== "") parseName("header.generation_job", generationJob, "generationJobs");
  const opts = resolveOptions(header.checkOptions, "header.check_options");
  const tokenizer = await deps.tokenizers.resolve("header.check_options.tokenizer_model", opts.tokenizerModel, ctx);
  let format: DatasetFormat = header.format === DatasetFormat.DATASET_FORMAT_UNSPECIFIED ? DatasetFormat.DATASET_FORMAT_AUTO : header.format;
  const forced = format !== DatasetFormat.DATASET_FORMAT_AUTO;

  const staging = await deps.store.beginStaging();
  const heartbeat = setInterval(() => void staging.heartbeat().catch(() => undefined), 10_000);
  const original = new PassThrough();
  const stored = deps.artifacts.put(original);
  // When the store fails (a full disk) it stops reading: `original` never drains again, so every
  // wait below races the store, and the upload ends at once instead of at the client's deadline.
  let storeError: unknown;
  const storeEnded = stored.then(
    () => Promise.reject(new Error("the artifact store finished before the end of the upload")),
    (err: unknown) => Promise.reject((storeError = diskFull(err, deps.logger))),
  );
  storeEnded.catch(() => undefined);
  let contentDigest: string | undefined;
  try {
    const name = versionName(dataset.dataset_id, versionId ?? "pending");
    const builder = new VersionBuilder(opts, tokenizer, staging.sink);
    const splitter = new LineSplitter(opts.maxLineBytes);
    const hash = createHash("sha256");
    let size = 0;
    let firstFormat: { line: number; format: DatasetFormat } | undefined;

    const handle = async (line: ReturnType<LineSplitter["push"]>[number]) => {
      let input: RowInput;
      if (line.overLimit) {
        input = { line: line.number, error: `${line.length} bytes long; the limit is ${opts.maxLineBytes}`, check: DataCheck.DATA_CHECK_LINE_BYTES };
      } else {
        if (line.bytes.every((b) => b === 0x20 || b === 0x09 || b === 0x0d)) return; // blank lines are skipped
        const parsed = parseLine(line.bytes, format);
        if (parsed.ok) {
          if (!forced && firstFormat === undefined) {
            // The first parsed row fixes the file's format; later rows in another format fail.
            firstFormat = { line: line.number, format: parsed.format };
            format = parsed.format;
          }
          input = { line: line.number, row: parsed.row };
        } else {
          input = { line: line.number, error: parsed.reason, check: DataCheck.DATA_CHECK_PARSE };
        }
      }
      await builder.add(input);
    };

    for (;;) {
      const next = await it.next();
      if (next.done) break;
      if (next.value.header) throw invalidArgument("header", "only the first message of the stream may carry a header");
      const chunk = next.value.chunk;
      if (!chunk || chunk.length === 0) continue;
      size += chunk.length;
      if (size > maxFileBytes) throw invalidArgument("chunk", `the file is over ${maxFileBytes} bytes`);
      if (storeError !== undefined) throw storeError;
      hash.update(chunk);
      if (!original.write(chunk)) await Promise.race([once(original, "drain"), storeEnded]);
      for (const line of splitter.push(Buffer.from(chunk))) await handle(line);
    }
    if (ctx.signal.aborted) throw new AppError("CANCELLED", "UPLOAD_INTERRUPTED", "the upload was interrupted before its end");
    const last = splitter.end();
    if (last) await handle(last);
    original.end();
    const artifact = await stored.catch(() => Promise.reject(storeError));
    const digest = hash.digest("hex");
    contentDigest = prefixedDigest(digest);
    if (header.contentLength > 0 && header.contentLength !== size) throw invalidArgument("header.content_length", `says ${header.contentLength} bytes, but ${size} arrived`);
    if (header.contentDigest !== "" && digestHex(header.contentDigest) !== digest) throw invalidArgument("header.content_digest", `says ${header.contentDigest}, but the bytes that arrived hash to sha256:${digest}`);
    if (size === 0) throw invalidArgument("chunk", "the file is empty");

    const checkOptions = header.checkOptions;
    const result = await builder.finish({ format, name, checkOptions });
    if (result.lineCount === 0) throw invalidArgument("chunk", "the file has only blank lines");
    if (result.rowCount === 0) {
      const why = result.report.readinessReasons.map((r) => r.message).join("; ");
      throw new AppError("INVALID_ARGUMENT", "NO_USABLE_ROW", `no line of the file is a usable example: ${why}`, { field: "chunk" });
    }
    const id = versionId ?? (await deps.store.nextVersionId(ctx.tenant, dataset.dataset_id));
    const fullName = versionName(dataset.dataset_id, id);
    const report = { ...result.report, name: `${fullName}/qualityReport` };
    const version = DatasetVersion.fromPartial({
      name: fullName,
      displayName: displayName || id,
      description,
      labels,
      state: DatasetVersion_State.STATE_VALIDATED,
      format,
      checkOptions,
      lineCount: result.lineCount,
      rowCount: result.rowCount,
      passingRowCount: result.passingRowCount,
      sizeBytes: size,
      sourceDigest: prefixedDigest(digest),
      artifactDigest: prefixedDigest(artifact.digest),
      readiness: report.readiness,
      // Rows a generation job made keep it in their lineage.
      origin: generationJob === "" ? Origin.ORIGIN_UPLOAD : Origin.ORIGIN_GENERATION,
      generationJob,
    });
    const request = uploadRequest(header, contentDigest);
    // A client that cancels can have its stream end (a half-close) just before the cancel
    // arrives; the checks above take long enough for it to land, so look again before the commit.
    if (ctx.signal.aborted) throw new AppError("CANCELLED", "UPLOAD_INTERRUPTED", "the upload was interrupted before its end");
    await deps.store.finalize(ctx.tenant, [{ key: staging.key, datasetId: dataset.dataset_id, versionId: id, meta: version, report, requestId, request }], () =>
      versionEvents(ctx.tenant, version, result.totalTokens, report) as never,
    );
    const entry = await deps.store.version(ctx.tenant, "name", fullName);
    return entry.version;
  } catch (err) {
    original.destroy();
    // The original bytes go too, unless another version holds the same content.
    const blob = await stored.catch(() => undefined);
    if (blob && !(await deps.store.isArtifactReferenced(prefixedDigest(blob.digest)))) await deps.artifacts.delete(blob.digest).catch(() => undefined);
    await deps.store.abortStaging(staging.key).catch((e: unknown) => deps.logger.warn(errorFields(e), "could not remove staged rows; the sweep will"));
    // A retry that raced this call made the version first: answer as a retry.
    if (err instanceof RequestReplayed && requestId !== null) return sameUpload(requestId, err.earlier, header, contentDigest);
    // When the store failed, what broke here (a write to the stream it destroyed) is only its
    // echo: the store's own error (a full disk) is the answer. `stored` has settled above.
    await storeEnded.catch(() => undefined);
    if (storeError !== undefined) throw storeError;
    throw err;
  } finally {
    clearInterval(heartbeat);
  }
}

/** The earlier version when this upload is the same request as the one that made it; else REQUEST_ID_REUSED. */
function sameUpload(requestId: string, earlier: VersionEntry, header: UploadDatasetVersionHeader, contentDigest: string | undefined): DatasetVersion {
  // A version made before requests were stored can be compared by its content only.
  const before: CanonicalRequest = earlier.request ?? { content: earlier.version.sourceDigest };
  const now = uploadRequest(header, contentDigest);
  checkSameRequest(requestId, earlier.version.name, before, earlier.request === null ? { content: now["content"] } : now);
  return earlier.version;
}

/**
 * A retried upload: its header is compared at once (a different header needs no bytes to tell),
 * then its bytes are hashed, not stored, and compared with the first upload's. Nothing is staged
 * or written, whatever the answer.
 */
async function replayUpload(requestId: string, earlier: VersionEntry, header: UploadDatasetVersionHeader, it: AsyncIterator<UploadDatasetVersionRequest>, ctx: CallContext): Promise<DatasetVersion> {
  if (earlier.request !== null) checkSameRequest(requestId, earlier.version.name, { ...earlier.request, content: undefined }, uploadRequest(header));
  const hash = createHash("sha256");
  let size = 0;
  for (;;) {
    const next = await it.next();
    if (next.done) break;
    if (next.value.header) throw invalidArgument("header", "only the first message of the stream may carry a header");
    const chunk = next.value.chunk;
    if (!chunk || chunk.length === 0) continue;
    size += chunk.length;
    if (size > maxFileBytes) throw invalidArgument("chunk", `the file is over ${maxFileBytes} bytes`);
    hash.update(chunk);
  }
  if (ctx.signal.aborted) throw new AppError("CANCELLED", "UPLOAD_INTERRUPTED", "the upload was interrupted before its end");
  return sameUpload(requestId, earlier, header, prefixedDigest(hash.digest("hex")));
}
