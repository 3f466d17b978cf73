import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AppError} from "@lathe/kit";
import { call, createClient, JetStreamBus, uploadFolder, type Delivery } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import {
  ContaminationScope,
  DatasetFormat,
  DatasetServiceClient,
  DatasetVersion_State,
  Origin,
  Severity,
  SplitPart,
  type QualityReport,
} from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { DatasetValidated, DatasetVersionCreated } from "@lathe/proto/lathe/events/v1/dataset_events";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { CheckOptions, DataCheck, FormatKind, PiiKind, Readiness } from "@lathe/proto/lathe/type/v1/data_check";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { createDatasetService } from "../src/index.js";
import { chat, jsonl, rows, upload } from "./upload-client.js";

const failedLines = (r: QualityReport, check: DataCheck) => r.checkResults.find((c) => c.check === check)?.failedLines ?? [];

describe("DatasetService over gRPC, Postgres and NATS", () => {
  let t: TestPlatform;
  let acme: DatasetServiceClient;
  let globex: DatasetServiceClient;
  let db: pg.Client;
  let observer: JetStreamBus;
  const seen: Delivery[] = [];

  beforeAll(async () => {
    t = await startTestPlatform({ factories: [createRegistryService, createDatasetService] });
    acme = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.globex });
    db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
    observer = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
    await observer.subscribe({ durable: "observer", subjects: ["lathe.dataset.v1.>"], handler: async (d) => void seen.push(d) });
    for (const id of ["formats", "planted", "derive", "atomic", "bad", "tokens"]) await call(acme, "createDataset", { datasetId: id, dataset: undefined, requestId: "" });
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await db?.end();
    await observer?.close();
    await t?.stop();
  });

  it("normalises each of the three formats into conversations", async () => {
    const cases: [unknown, DatasetFormat][] = [
      [chat(1), DatasetFormat.DATASET_FORMAT_CHAT_MESSAGES],
      [{ system: "Be terse.", instruction: "Summarise the following report about quarterly sales figures.", input: "Sales rose 4%.", output: "Quarterly sales rose by four percent compared with the previous quarter, driven by retail." }, DatasetFormat.DATASET_FORMAT_INSTRUCTION_OUTPUT],
      [{ prompt: "Translate to French: the weather is lovely today in Paris.", completion: "Il fait un temps magnifique aujourd'hui à Paris, avec un ciel bleu et du soleil." }, DatasetFormat.DATASET_FORMAT_PROMPT_COMPLETION],
    ];
    for (const [i, [obj, format]] of cases.entries()) {
      const v = await upload(acme, { parent: "datasets/formats", versionId: `f${i}` }, jsonl([obj]));
      expect(v.format).toBe(format);
      expect(v.state).toBe(DatasetVersion_State.STATE_VALIDATED);
      const [row] = await rows(acme, v.name);
      expect(row!.messages.at(-1)!.role).toBe(ChatRole.CHAT_ROLE_ASSISTANT);
      expect(row!.messages.some((m) => m.role === ChatRole.CHAT_ROLE_USER)).toBe(true);
    }
    const [io] = await rows(acme, "datasets/formats/versions/f1");
    expect(io!.messages.map((m) => m.content)).toEqual(["Be terse.", "Summarise the following report about quarterly sales figures.\n\nSales rose 4%.", expect.stringContaining("Quarterly sales")]);
  });

  it("reports every planted problem at its line, with a readiness verdict", async () => {
    const base = chat(2);
    const near = JSON.parse(JSON.stringify(chat(4))) as { messages: { content: string }[] };
    near.messages[2]!.content = near.messages[2]!.content.replace("restocks", "restock");
    const lines = [
      chat(1), // 1
      base, // 2
      "{not json", // 3
      chat(4), // 4
      { messages: [{ role: "user", content: "Hello there, a question that is long enough." }, { role: "user", content: "again" }] }, // 5
      chat(6), // 6
      { prompt: "Too short", completion: "This completion is long enough to pass the minimum answer length check." }, // 7: mixed format too
      { messages: [{ role: "user", content: "A prompt that is certainly long enough to pass." }, { role: "assistant", content: "Too short." }] }, // 8
      chat(9), // 9
      base, // 10: exact duplicate of 2
      chat(11, "Reach me at jane.doe@example.com please."), // 11: PII
      near, // 12: near duplicate of 4
      { messages: [{ role: "user", content: "What is the answer as JSON, with the count of items?" }, { role: "assistant", content: "Certainly: the answer has been computed and it is forty-two, as requested earlier." }] }, // 13
    ];
    const v = await upload(acme, { parent: "datasets/planted", checkOptions: CheckOptions.fromPartial({ answerFormat: { kind: FormatKind.FORMAT_KIND_REGEX, pattern: "[0-9]", jsonSchema: "" } }) }, jsonl(lines));
    const { qualityReport: r } = await call(acme, "getQualityReport", { name: `${v.name}/qualityReport` });
    expect(r!.lineCount).toBe(13);
    expect(failedLines(r!, DataCheck.DATA_CHECK_PARSE)).toEqual([3, 5, 7]);
    expect(failedLines(r!, DataCheck.DATA_CHECK_ANSWER_LENGTH)).toEqual([8]);
    expect(failedLines(r!, DataCheck.DATA_CHECK_EXACT_DUPLICATE)).toEqual([10]);
    expect(r!.exactDuplicateClusters.map((c) => c.lines)).toEqual([[2, 10]]);
    expect(r!.nearDuplicateClusters.map((c) => c.lines)).toEqual([[4, 12]]);
    expect(failedLines(r!, DataCheck.DATA_CHECK_NEAR_DUPLICATE)).toEqual([12]);
    expect(failedLines(r!, DataCheck.DATA_CHECK_PII)).toEqual([11]);
    expect(r!.piiHits).toEqual([expect.objectContaining({ line: 11, kind: PiiKind.PII_KIND_EMAIL, messageIndex: 1 })]);
    expect(failedLines(r!, DataCheck.DATA_CHECK_ANSWER_FORMAT)).toEqual([8, 13]);
    expect(r!.readiness).toBe(Readiness.READINESS_NOT_READY);
    const parse = r!.readinessReasons.find((x) => x.check === DataCheck.DATA_CHECK_PARSE)!;
    expect(parse.severity).toBe(Severity.SEVERITY_BLOCKING);
    expect(parse.message).toContain("line 3: not valid JSON");
    expect(parse.message).toContain("line 5: messages[1] is a second user message in a row");
    expect(parse.message).toContain("line 7: in prompt/completion format, but the file is in chat messages format");
    expect(r!.readinessReasons.map((x) => x.code)).toContain("FEW_ROWS");
    expect(v.passingRowCount).toBe(13 - 3 - 1 - 1 - 1 - 1 - 1);
    const failing = await rows(acme, v.name, true);
    expect(failing.map((x) => x.lineNumber)).toEqual([3, 5, 7, 8, 10, 11, 12, 13]);
  });

  it("counts tokens with a registered model's tokenizer and chat template", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lathe-tok-"));
    await writeTinyModel(dir);
    const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    await uploadFolder((cb) => registry.uploadModel(cb), { modelId: "tiny", model: Model.fromPartial({ sourceUri: dir }), requestId: "" }, dir);
    registry.close();
    const v = await upload(acme, { parent: "datasets/tokens", checkOptions: CheckOptions.fromPartial({ tokenizerModel: "models/tiny", maxSeqLength: 64 }) }, jsonl([chat(1), chat(2), chat(3, "and a much longer question ".repeat(10))]));
    const { qualityReport: r } = await call(acme, "getQualityReport", { name: v.name });
    const s = r!.tokenStatistics!;
    const stored = await rows(acme, v.name);
    const counts = stored.map((x) => x.tokenCount).sort((a, b) => a - b);
    expect(s.totalTokens).toBe(counts.reduce((a, b) => a + b, 0));
    expect(s.minTokens).toBe(counts[0]);
    expect(s.maxTokens).toBe(counts[2]);
    expect(s.medianTokens).toBe(counts[1]);
    expect(s.answerTokens).toBeGreaterThan(0);
    expect(s.answerTokens).toBeLessThan(s.totalTokens);
    expect(s.overMaxSeqLengthCount).toBe(counts.filter((c) => c > 64).length);
    expect(failedLines(r!, DataCheck.DATA_CHECK_TOKEN_LIMIT)).toEqual(stored.filter((x) => x.tokenCount > 64).map((x) => x.lineNumber));
    expect(stored[2]!.tokenCount).toBeGreaterThan(stored[0]!.tokenCount);
    const bad = await upload(acme, { parent: "datasets/tokens", checkOptions: CheckOptions.fromPartial({ tokenizerModel: "models/nope" }) }, jsonl([chat(1)])).catch((e: unknown) => e as AppError);
    expect(bad).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.check_options.tokenizer_model" });
  });

  it("derives versions: drop failing, dedup, redact, and a split that keeps clusters together", async () => {
    const near = JSON.parse(JSON.stringify(chat(4))) as { messages: { content: string }[] };
    near.messages[2]!.content = near.messages[2]!.content.replace("restocks", "restock");
    const lines = [...Array.from({ length: 30 }, (_, i) => chat(i + 1)), chat(2), near, chat(40, "Mail bob@example.org now.")];
    const parent = await upload(acme, { parent: "datasets/derive", versionId: "raw" }, jsonl(lines));
    expect(parent.rowCount).toBe(33);

    const { datasetVersion: clean } = await call(acme, "deriveDatasetVersion", { parentVersion: parent.name, operation: { dropFailingRows: { checks: [] } }, versionId: "clean", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    expect(clean).toMatchObject({ rowCount: 30, origin: Origin.ORIGIN_DERIVATION, parentVersion: parent.name });
    expect(clean!.derivation?.dropFailingRows).toBeDefined();

    const { datasetVersion: dedup } = await call(acme, "deriveDatasetVersion", { parentVersion: parent.name, operation: { deduplicate: {} }, versionId: "dedup", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    expect(dedup!.rowCount).toBe(31);

    const { datasetVersion: redacted } = await call(acme, "deriveDatasetVersion", { parentVersion: parent.name, operation: { redactPii: { kinds: [] } }, versionId: "redacted", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    const rr = await rows(acme, redacted!.name);
    expect(rr.find((r) => r.lineNumber === 33)!.messages[1]!.content).toContain("Mail [EMAIL] now.");
    expect((await call(acme, "getQualityReport", { name: redacted!.name })).qualityReport!.piiHits).toEqual([]);

    const split = await call(acme, "deriveDatasetVersion", { parentVersion: parent.name, operation: { split: { evalFraction: 0.3, seed: 7 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    const train = split.datasetVersion!;
    const ev = split.evalDatasetVersion!;
    expect([train.splitPart, ev.splitPart]).toEqual([SplitPart.SPLIT_PART_TRAIN, SplitPart.SPLIT_PART_EVAL]);
    expect(train.rowCount + ev.rowCount).toBe(33);
    expect(ev.rowCount).toBeGreaterThanOrEqual(9);
    const trainLines = new Set((await rows(acme, train.name)).map((r) => r.lineNumber));
    const evalLines = new Set((await rows(acme, ev.name)).map((r) => r.lineNumber));
    for (const [a, b] of [[2, 31], [4, 32]] as const) expect(trainLines.has(a)).toBe(trainLines.has(b));
    // The same seed gives the same split.
    const again = await call(acme, "deriveDatasetVersion", { parentVersion: parent.name, operation: { split: { evalFraction: 0.3, seed: 7 } }, versionId: "s2", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    expect(new Set((await rows(acme, again.evalDatasetVersion!.name)).map((r) => r.lineNumber))).toEqual(evalLines);

    const c = await call(acme, "checkContamination", { datasetVersion: ev.name, referenceDatasetVersion: train.name, scope: ContaminationScope.CONTAMINATION_SCOPE_CONVERSATION, nearDuplicates: undefined });
    expect(c.exactMatchCount + c.nearMatchCount).toBe(0);
    const self = await call(acme, "checkContamination", { datasetVersion: ev.name, referenceDatasetVersion: parent.name, scope: ContaminationScope.CONTAMINATION_SCOPE_CONVERSATION, nearDuplicates: undefined });
    expect(self.contaminatedFraction).toBe(1);
  });

  it("makes a version visible only when its upload completes", async () => {
    const rowsBefore = Number((await db.query("select count(*) as n from dataset.rows")).rows[0].n);
    // Half a file arrives, then the client goes away before the end of the stream.
    const c = acme.uploadDatasetVersion(() => undefined);
    c.write({ header: { parent: "datasets/atomic", versionId: "", displayName: "", description: "", labels: {}, format: 0, checkOptions: undefined, contentLength: 0, contentDigest: "", requestId: "", generationJob: "" } });
    c.write({ chunk: Buffer.from(jsonl(Array.from({ length: 1200 }, (_, i) => chat(i)))) });
    await waitFor(async () => Number((await db.query("select count(*) as n from dataset.rows")).rows[0].n) > rowsBefore, { what: "rows to be staged" });
    c.cancel();
    await waitFor(async () => Number((await db.query("select count(*) as n from dataset.staging")).rows[0].n) === 0, { what: "the interrupted upload to be cleaned up" });
    const { datasetVersions } = await call(acme, "listDatasetVersions", { parent: "datasets/atomic", pageSize: 0, pageToken: "", filter: "" });
    expect(datasetVersions).toEqual([]);
    expect(Number((await db.query("select count(*) as n from dataset.rows")).rows[0].n)).toBe(rowsBefore);
    // A bad content_length fails the upload the same way.
    const err = await upload(acme, { parent: "datasets/atomic", contentLength: 5 }, jsonl([chat(1)])).catch((e: unknown) => e as AppError);
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.content_length" });
    expect((await call(acme, "listDatasetVersions", { parent: "datasets/atomic", pageSize: 0, pageToken: "", filter: "" })).datasetVersions).toEqual([]);
  });

  it("gives bad files a clear error naming the line, and stays up", async () => {
    const fail = (content: Buffer | string, opts = {}) => upload(acme, { parent: "datasets/bad", ...opts }, content).then(() => { throw new Error("the upload succeeded"); }, (e: unknown) => e as AppError);
    expect(await fail("")).toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("empty") });
    const garbage = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) % 256));
    const g = await fail(garbage);
    expect(g).toMatchObject({ code: "INVALID_ARGUMENT", reason: "NO_USABLE_ROW" });
    expect(g.message).toMatch(/line 1: not valid (UTF-8|JSON)/);
    const invalidUtf8 = Buffer.concat([Buffer.from(jsonl([chat(1)])), Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d, 0x0a]), Buffer.from(jsonl([chat(3)]))]);
    const v = await upload(acme, { parent: "datasets/bad" }, invalidUtf8);
    const r = (await call(acme, "getQualityReport", { name: v.name })).qualityReport!;
    expect(failedLines(r, DataCheck.DATA_CHECK_PARSE)).toEqual([2]);
    expect(r.readinessReasons.find((x) => x.check === DataCheck.DATA_CHECK_PARSE)!.message).toContain("line 2: not valid UTF-8");
    // A 50 MB line streams through and fails its own check; the lines around it are kept.
    const big = Buffer.concat([Buffer.from(jsonl([chat(1)])), Buffer.alloc(50 * 1024 * 1024, 0x61), Buffer.from("\n" + jsonl([chat(2)]))]);
    const vb = await upload(acme, { parent: "datasets/bad" }, big, 1024 * 1024);
    const rb = (await call(acme, "getQualityReport", { name: vb.name })).qualityReport!;
    expect(failedLines(rb, DataCheck.DATA_CHECK_LINE_BYTES)).toEqual([2]);
    expect(vb.rowCount).toBe(2);
    const badOpt = await fail(jsonl([chat(1)]), { checkOptions: CheckOptions.fromPartial({ answerFormat: { kind: FormatKind.FORMAT_KIND_REGEX, pattern: "(", jsonSchema: "" } }) });
    expect(badOpt).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.check_options.answer_format.pattern" });
    expect((await call(acme, "getDataset", { name: "datasets/bad" })).dataset!.name).toBe("datasets/bad");
  });

  it("keeps tenants apart", async () => {
    expect(await call(globex, "getDataset", { name: "datasets/formats" }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect(await call(globex, "getDatasetVersion", { name: "datasets/formats/versions/f0" }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect(await upload(globex, { parent: "datasets/formats" }, jsonl([chat(1)])).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect((await call(globex, "listDatasets", { pageSize: 0, pageToken: "", filter: "" })).datasets).toEqual([]);
  });

  it("announces each version with dataset_version_created and dataset_validated", async () => {
    await waitFor(() => seen.some((d) => d.subject === "lathe.dataset.v1.dataset_validated" && DatasetValidated.decode(d.data).datasetVersion === "datasets/formats/versions/f0"), { what: "dataset_validated" });
    const created = seen.filter((d) => d.subject === "lathe.dataset.v1.dataset_version_created").map((d) => DatasetVersionCreated.decode(d.data));
    expect(created.find((e) => e.datasetVersion === "datasets/formats/versions/f0")).toMatchObject({ dataset: "datasets/formats", rowCount: 1, meta: expect.objectContaining({ tenant: "acme" }) });
  });
});
