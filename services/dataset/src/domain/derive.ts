import { AppError, checkLabels, checkRequestId, checkResourceId, checkSameRequest, checkText, invalidArgument, type CallContext } from "@lathe/kit";
import {
  ContaminationScope,
  DatasetVersion,
  DatasetVersion_State,
  Origin,
  SplitPart,
  type CheckContaminationRequest,
  type CheckContaminationResponse,
  type DeriveDatasetVersionRequest,
  type DeriveDatasetVersionResponse,
  type QualityReport,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { CheckOptions, DataCheck } from "@lathe/proto/lathe/type/v1/data_check";
import { mulberry32, NearDuplicateIndex, normalizeText, redactPii, scanPii } from "@lathe/text";
import { createHash } from "node:crypto";
import { checkCleanLabels, checkCleanText } from "./control-chars.js";
import { versionEvents, type IngestDeps } from "./ingest.js";
import { piiKindNames, resolveOptions } from "./options.js";
import { conversationText, promptOf, type NormalRow } from "./parse.js";
import { VersionBuilder } from "./processor.js";
import { deriveRequest } from "./requests.js";
import { RequestReplayed, versionName, type VersionEntry } from "./store.js";

type Row = { line: number; row: NormalRow; failed: Set<DataCheck> };

/** The parsed rows of a version, in order, a page at a time. Lines that never parsed are not rows. */
async function* rowsOf(deps: IngestDeps, key: string): AsyncGenerator<Row> {
  for (let offset = 0; ; offset += 1000) {
    const page = await deps.store.rows(key, { offset, limit: 1000 });
    for (const r of page) if (r.messages.length > 0) yield { line: r.line, row: { messages: r.messages }, failed: new Set(r.failedChecks) };
    if (page.length < 1000) return;
  }
}

/** Line → the first line of its duplicate cluster (exact or near), from the parent's report. */
function clusterRoots(report: QualityReport): Map<number, number> {
  const parent = new Map<number, number>();
  const find = (x: number): number => {
    const p = parent.get(x) ?? x;
    if (p === x) return x;
    const r = find(p);
    parent.set(x, r);
    return r;
  };
  for (const c of [...report.exactDuplicateClusters, ...report.nearDuplicateClusters]) {
    const [head, ...rest] = c.lines;
    if (head === undefined) continue;
    for (const l of rest) {
      const a = find(head);
      const b = find(l);
      if (a !== b) parent.set(Math.max(a, b), Math.min(a, b));
    }
  }
  const roots = new Map<number, number>();
  for (const l of parent.keys()) roots.set(l, find(l));
  return roots;
}

/**
 * DeriveDatasetVersion: a new immutable version from a parent through one operation (drop failing
 * rows, deduplicate, redact PII, or split into train and eval), checked again, recording its
 * parent and operation. A split makes two versions at once.
 */
export async function deriveVersion(deps: IngestDeps, req: DeriveDatasetVersionRequest, ctx: CallContext): Promise<DeriveDatasetVersionResponse> {
  const parent: VersionEntry = await deps.store.version(ctx.tenant, "parent_version", req.parentVersion);
  const op = req.operation;
  if (!op || (!op.dropFailingRows && !op.deduplicate && !op.redactPii && !op.split)) throw invalidArgument("operation", "is required: drop_failing_rows, deduplicate, redact_pii or split");
  const requestId = checkRequestId("request_id", req.requestId);
  const request = deriveRequest(req);
  // A retry answers with what the first call made, once it is sure to be the same request.
  const replay = async (earlier: VersionEntry): Promise<DeriveDatasetVersionResponse> => {
    // A version made before requests were stored cannot be compared; it is answered as before.
    if (earlier.request !== null) checkSameRequest(requestId!, earlier.version.name, earlier.request, request);
    const evalVersion = earlier.version.splitPart === SplitPart.SPLIT_PART_TRAIN ? (await deps.store.versionByRequestId(ctx.tenant, parent.datasetId, `${requestId}#eval`))?.version : undefined;
    return { datasetVersion: earlier.version, evalDatasetVersion: evalVersion };
  };
  if (requestId !== null) {
    const earlier = await deps.store.versionByRequestId(ctx.tenant, parent.datasetId, requestId);
    if (earlier) return replay(earlier);
  }
  const versionId = req.versionId === "" ? undefined : checkResourceId("version_id", req.versionId);
  const description = checkCleanText("description", checkText("description", req.description, 2000));
  const labels = checkCleanLabels("labels", checkLabels("labels", req.labels));
  const checkOptions = req.checkOptions ?? parent.version.checkOptions;
  const opts = resolveOptions(checkOptions, req.checkOptions ? "check_options" : "parent_version.check_options");
  const tokenizer = await deps.tokenizers.resolve("check_options.tokenizer_model", opts.tokenizerModel, ctx);

  // Which rows go where: one output, or train and eval for a split.
  let route: (r: Row) => number | undefined; // index of the output, or undefined to drop
  let outputs: SplitPart[] = [SplitPart.SPLIT_PART_UNSPECIFIED];
  let transform = (r: Row): NormalRow => r.row;
  if (op.dropFailingRows) {
    const checks = new Set(op.dropFailingRows.checks.length > 0 ? op.dropFailingRows.checks : Object.values(DataCheck).filter((v): v is DataCheck => typeof v === "number" && v > 0));
    route = (r) => ([...r.failed].some((c) => checks.has(c)) ? undefined : 0);
  } else if (op.deduplicate) {
    const near = op.deduplicate.includeNearDuplicates ?? true;
    route = (r) => (r.failed.has(DataCheck.DATA_CHECK_EXACT_DUPLICATE) || (near && r.failed.has(DataCheck.DATA_CHECK_NEAR_DUPLICATE)) ? undefined : 0);
  } else if (op.redactPii) {
    const kinds = new Set(op.redactPii.kinds.map((k, i) => piiKindNames[k] ?? (() => { throw invalidArgument(`operation.redact_pii.kinds[${i}]`, `unknown PII kind ${k}`); })()));
    const only = kinds.size > 0 ? kinds : undefined;
    route = () => 0;
    transform = (r) => ({ messages: r.row.messages.map((m) => ({ role: m.role, content: redactPii(m.content, scanPii(m.content, only)) })) });
  } else {
    const split = op.split!;
    if (!(split.evalFraction > 0 && split.evalFraction < 1)) throw invalidArgument("operation.split.eval_fraction", `must be between 0 and 1 (exclusive), got ${split.evalFraction}`);
    outputs = [SplitPart.SPLIT_PART_TRAIN, SplitPart.SPLIT_PART_EVAL];
    const roots = split.keepClustersTogether ?? true ? clusterRoots(parent.report) : new Map<number, number>();
    // Group rows by cluster, shuffle the groups with the seed, and fill eval group by group.
    const groups = new Map<number, number>();
    for await (const r of rowsOf(deps, parent.key)) {
      const g = roots.get(r.line) ?? r.line;
      groups.set(g, (groups.get(g) ?? 0) + 1);
    }
    const total = [...groups.values()].reduce((a, b) => a + b, 0);
    const order = [...groups.keys()].sort((a, b) => a - b);
    const rand = mulberry32(Number(split.seed ?? 42));
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const evalGroups = new Set<number>();
    let evalRows = 0;
    for (const g of order) {
      if (evalRows >= Math.round(total * split.evalFraction)) break;
      evalGroups.add(g);
      evalRows += groups.get(g)!;
    }
    if (evalRows === 0 || evalRows === total) throw new AppError("FAILED_PRECONDITION", "SPLIT_EMPTY_SIDE", `a split of ${total} rows with eval_fraction ${split.evalFraction} leaves one side empty`, { field: "operation.split.eval_fraction" });
    route = (r) => (evalGroups.has(roots.get(r.line) ?? r.line) ? 1 : 0);
  }

  const stagings = await Promise.all(outputs.map(() => deps.store.beginStaging()));
  try {
    const builders = stagings.map((s) => new VersionBuilder(opts, tokenizer, s.sink));
    for await (const r of rowsOf(deps, parent.key)) {
      const out = route(r);
      if (out !== undefined) await builders[out]!.add({ line: r.line, row: transform(r) });
    }
    const baseId = versionId ?? (await deps.store.nextVersionId(ctx.tenant, parent.datasetId));
    const ids = outputs.length === 1 ? [baseId] : [`${baseId}-train`, `${baseId}-eval`];
    const made: { key: string; datasetId: string; versionId: string; meta: DatasetVersion; report: QualityReport; requestId: string | null; request: typeof request; tokens: number }[] = [];
    for (const [i, part] of outputs.entries()) {
      const name = versionName(parent.datasetId, ids[i]!);
      const result = await builders[i]!.finish({ format: parent.version.format, name, checkOptions });
      if (result.rowCount === 0) throw new AppError("FAILED_PRECONDITION", "DERIVED_VERSION_EMPTY", `the operation leaves no row in ${name}`, { field: "operation" });
      const version = DatasetVersion.fromPartial({
        name,
        displayName: ids[i]!,
        description,
        labels,
        state: DatasetVersion_State.STATE_VALIDATED,
        format: parent.version.format,
        checkOptions,
        lineCount: result.lineCount,
        rowCount: result.rowCount,
        passingRowCount: result.passingRowCount,
        sourceDigest: parent.version.sourceDigest,
        artifactDigest: parent.version.artifactDigest,
        readiness: result.report.readiness,
        origin: Origin.ORIGIN_DERIVATION,
        parentVersion: parent.version.name,
        derivation: op,
        splitPart: part,
      });
      made.push({ key: stagings[i]!.key, datasetId: parent.datasetId, versionId: ids[i]!, meta: version, report: result.report, requestId: requestId === null ? null : i === 0 ? requestId : `${requestId}#eval`, request, tokens: result.totalTokens });
    }
    await deps.store.finalize(ctx.tenant, made, () => made.flatMap((m) => versionEvents(ctx.tenant, m.meta, m.tokens, m.report)) as never);
    const [main, evalV] = await Promise.all(made.map((m) => deps.store.version(ctx.tenant, "name", m.meta.name)));
    return { datasetVersion: main!.version, evalDatasetVersion: evalV?.version };
  } catch (err) {
    for (const s of stagings) await deps.store.abortStaging(s.key).catch(() => undefined);
    // A retry that raced this call made the version first: answer as a retry.
    if (err instanceof RequestReplayed && requestId !== null) return replay(err.earlier);
    throw err;
  }
}

/** CheckContamination: rows of one version that occur, exactly or nearly, in another. */
export async function checkContamination(deps: IngestDeps, req: CheckContaminationRequest, ctx: CallContext): Promise<CheckContaminationResponse> {
  const a = await deps.store.version(ctx.tenant, "dataset_version", req.datasetVersion);
  const b = await deps.store.version(ctx.tenant, "reference_dataset_version", req.referenceDatasetVersion);
  const textOf = req.scope === ContaminationScope.CONTAMINATION_SCOPE_PROMPT ? promptOf : conversationText;
  const opts = resolveOptions(CheckOptions.fromPartial({ nearDuplicates: req.nearDuplicates, piiDisabled: true }), "");
  const nd = opts.nearDuplicates;
  const exact = new Map<string, number>();
  const index = nd.enabled ? new NearDuplicateIndex({ numPerm: nd.numPerm, shingleSize: nd.shingleSize, threshold: nd.threshold }) : undefined;
  const refLine: number[] = [];
  const key = (s: string) => createHash("sha1").update(normalizeText(s)).digest("base64");
  for await (const r of rowsOf(deps, b.key)) {
    const text = textOf(r.row);
    if (!exact.has(key(text))) exact.set(key(text), r.line);
    refLine.push(r.line);
    index?.add(refLine.length - 1, text);
  }
  let rows = 0;
  let exactCount = 0;
  let nearCount = 0;
  const matches: CheckContaminationResponse["matches"] = [];
  for await (const r of rowsOf(deps, a.key)) {
    rows++;
    const text = textOf(r.row);
    const e = exact.get(key(text));
    if (e !== undefined) {
      exactCount++;
      if (matches.length < 10_000) matches.push({ line: r.line, referenceLine: e, similarity: 1, exact: true });
      continue;
    }
    const near = index?.query(text) ?? [];
    if (near.length > 0) {
      nearCount++;
      if (matches.length < 10_000) matches.push({ line: r.line, referenceLine: refLine[near[0]!]!, similarity: nd.threshold, exact: false });
    }
  }
  return {
    rowCount: rows,
    exactMatchCount: exactCount,
    nearMatchCount: nearCount,
    contaminatedFraction: rows === 0 ? 0 : (exactCount + nearCount) / rows,
    matches,
    matchesTruncated: exactCount + nearCount > matches.length,
  };
}

