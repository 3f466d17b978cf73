import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, uploadFolder, type AppError } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, type QualityReport } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { CheckOptions, DataCheck, FormatKind } from "@lathe/proto/lathe/type/v1/data_check";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { createDatasetService } from "../src/index.js";
import { chat, jsonl, rows, upload } from "./upload-client.js";

const failedLines = (r: QualityReport, check: DataCheck) => r.checkResults.find((c) => c.check === check)?.failedLines ?? [];
const failure = (p: Promise<unknown>) => p.then(() => { throw new Error("the call succeeded"); }, (e: unknown) => e as AppError);

describe("DatasetService hardening: control characters, AIP-155 request ids, dense version ids, tokenizer sources", () => {
  let t: TestPlatform;
  let acme: DatasetServiceClient;
  let db: pg.Client;
  const roots = mkdtempSync(join(tmpdir(), "lathe-import-roots-"));
  const outside = mkdtempSync(join(tmpdir(), "lathe-outside-"));
  // Every line the service logs, to show that no row content ever reaches one.
  const logged: string[] = [];
  const write = process.stdout.write.bind(process.stdout);

  beforeAll(async () => {
    process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      const text = typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
      if (text.startsWith('{"level"')) {
        logged.push(text);
        return true;
      }
      return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
    t = await startTestPlatform({ factories: [createRegistryService, createDatasetService], env: { LATHE_IMPORT_ROOTS: roots, LATHE_LOG_LEVEL: "info" } });
    acme = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
    db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
    for (const id of ["chars", "idem", "dense", "tok"]) await call(acme, "createDataset", { datasetId: id, dataset: undefined, requestId: "" });
  });
  afterAll(async () => {
    acme?.close();
    await db?.end();
    await t?.stop();
    process.stdout.write = write;
    rmSync(roots, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it("makes NUL, other C0 controls and lone surrogates parse errors naming the line, field and character, and logs none of the row", async () => {
    const marker = "Kept-private-7f3a";
    const content = (s: string) => ({ messages: [{ role: "user", content: `Question about ${marker}, long enough to pass the check${s} ok?` }, { role: "assistant", content: "An answer that is long enough to pass the minimum answer length check, surely." }] });
    const at = `Question about ${marker}, long enough to pass the check`.length + 1;
    const nulLine = JSON.stringify(content("\u0000")); // JSON.stringify writes \u0000 as an escape
    const lines = [
      chat(1), // 1
      nulLine, // 2: escaped NUL
      nulLine.replace("\\u0000", "\u0000"), // 3: a raw NUL inside a string
      JSON.stringify(content("X")).replace("checkX", "check\\ud800"), // 4: an escaped lone surrogate
      JSON.stringify(content("\u0007")), // 5: BEL, a C0 control
      JSON.stringify(content("\t and\r\n lines")), // 6: tab, CR and LF are text
      `x${"😀".repeat(5)}${"a".repeat(60)}`, // 7: not JSON; V8's message cuts an emoji in half
      chat(8), // 8
    ];
    const v = await upload(acme, { parent: "datasets/chars" }, jsonl(lines));
    expect(v.lineCount).toBe(8);
    const r = (await call(acme, "getQualityReport", { name: v.name })).qualityReport!;
    expect(failedLines(r, DataCheck.DATA_CHECK_PARSE)).toEqual([2, 3, 4, 5, 7]);
    const parse = r.readinessReasons.find((x) => x.check === DataCheck.DATA_CHECK_PARSE)!.message;
    expect(parse).toContain(`line 2: messages[0].content contains U+0000 at character ${at}; remove control characters`);
    expect(parse).toContain("line 3: the line contains U+0000 at character");
    expect(parse).toContain(`line 4: messages[0].content contains a lone surrogate U+D800 at character ${at}`);
    expect(parse).toContain(`line 5: messages[0].content contains U+0007 at character ${at}`);
    expect(parse).toContain("line 7: not valid JSON");
    const failing = await rows(acme, v.name, true);
    expect(failing.map((x) => [x.lineNumber, x.messages.length])).toEqual([[2, 0], [3, 0], [4, 0], [5, 0], [7, 0]]);
    expect((await rows(acme, v.name)).find((x) => x.lineNumber === 6)!.messages[0]!.content).toContain("\t and\r\n lines");
    expect(logged.filter((l) => l.includes(marker))).toEqual([]);
  });

  it("refuses control characters in the fields it stores with a version or dataset, naming the field", async () => {
    const nul = "a description\u0000with a NUL";
    expect(await failure(upload(acme, { parent: "datasets/chars", description: nul }, jsonl([chat(1)])))).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.description", message: expect.stringContaining("contains U+0000 at character 14") });
    expect(await failure(upload(acme, { parent: "datasets/chars", labels: { team: "a\u0001b" } }, jsonl([chat(1)])))).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.labels.team" });
    const pattern = CheckOptions.fromPartial({ answerFormat: { kind: FormatKind.FORMAT_KIND_REGEX, pattern: "[0-9]\u0000", jsonSchema: "" } });
    expect(await failure(upload(acme, { parent: "datasets/chars", checkOptions: pattern }, jsonl([chat(1)])))).toMatchObject({ code: "INVALID_ARGUMENT", field: "header.check_options.answer_format.pattern" });
    // (A lone surrogate cannot reach a proto string field: the client's UTF-8 encoding replaces it.)
    expect(await failure(call(acme, "createDataset", { datasetId: "nul", dataset: Dataset.fromPartial({ displayName: "bad\u0002" }), requestId: "" }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "dataset.display_name", message: expect.stringContaining("contains U+0002 at character 4") });
    expect(Number((await db.query("select count(*) as n from dataset.staging")).rows[0].n)).toBe(0);
  });

  it("answers a retried CreateDataset with the first dataset, and a reused request_id with REQUEST_ID_REUSED naming the field", async () => {
    const req = { datasetId: "made-once", dataset: Dataset.fromPartial({ displayName: "Made once" }), requestId: "create-1" };
    const first = (await call(acme, "createDataset", req)).dataset!;
    expect((await call(acme, "createDataset", req)).dataset!.name).toBe(first.name);
    expect(await failure(call(acme, "createDataset", { ...req, dataset: Dataset.fromPartial({ displayName: "Another" }) }))).toMatchObject({ code: "INVALID_ARGUMENT", reason: "REQUEST_ID_REUSED", metadata: expect.objectContaining({ differing_field: "dataset.display_name" }) });
    expect(await failure(call(acme, "createDataset", { ...req, datasetId: "made-twice" }))).toMatchObject({ reason: "REQUEST_ID_REUSED", metadata: expect.objectContaining({ differing_field: "dataset_id" }) });
    expect(await failure(call(acme, "getDataset", { name: "datasets/made-twice" }))).toMatchObject({ code: "NOT_FOUND" });
  });

  it("answers a retried upload with the first version, and the same request_id with another file or header with REQUEST_ID_REUSED", async () => {
    const file = jsonl([chat(1), chat(2), chat(3)]);
    const first = await upload(acme, { parent: "datasets/idem", requestId: "up-1", description: "three rows" }, file);
    expect((await upload(acme, { parent: "datasets/idem", requestId: "up-1", description: "three rows" }, file, 100)).name).toBe(first.name);
    const otherFile = await failure(upload(acme, { parent: "datasets/idem", requestId: "up-1", description: "three rows" }, jsonl([chat(1), chat(2), chat(4)])));
    expect(otherFile).toMatchObject({ code: "INVALID_ARGUMENT", reason: "REQUEST_ID_REUSED", field: "request_id", metadata: expect.objectContaining({ differing_field: "content", name: first.name }) });
    const otherHeader = await failure(upload(acme, { parent: "datasets/idem", requestId: "up-1", description: "other", versionId: "named" }, file));
    expect(otherHeader).toMatchObject({ reason: "REQUEST_ID_REUSED", metadata: expect.objectContaining({ differing_field: "description" }) });
    const { datasetVersions } = await call(acme, "listDatasetVersions", { parent: "datasets/idem", pageSize: 0, pageToken: "", filter: "" });
    expect(datasetVersions.map((x) => x.name)).toEqual([first.name]);
    expect(Number((await db.query("select count(*) as n from dataset.staging")).rows[0].n)).toBe(0);

    const derive = { parentVersion: first.name, operation: { deduplicate: {} }, versionId: "", description: "", labels: {}, checkOptions: undefined, requestId: "derive-1" };
    const d = (await call(acme, "deriveDatasetVersion", derive)).datasetVersion!;
    expect((await call(acme, "deriveDatasetVersion", derive)).datasetVersion!.name).toBe(d.name);
    expect(await failure(call(acme, "deriveDatasetVersion", { ...derive, versionId: "other-id" }))).toMatchObject({ reason: "REQUEST_ID_REUSED", metadata: expect.objectContaining({ differing_field: "version_id" }) });
    const otherOp = await failure(call(acme, "deriveDatasetVersion", { ...derive, operation: { dropFailingRows: { checks: [] } } }));
    expect(otherOp).toMatchObject({ reason: "REQUEST_ID_REUSED", metadata: expect.objectContaining({ differing_field: expect.stringMatching(/^operation\./) }) });
    expect((await call(acme, "listDatasetVersions", { parent: "datasets/idem", pageSize: 0, pageToken: "", filter: "" })).datasetVersions).toHaveLength(2);
  });

  it("keeps version ids dense: a failed derivation takes no number, and a split takes one", async () => {
    const lines = Array.from({ length: 12 }, (_, i) => chat(i + 1, `Write to person${i}@example.com today.`));
    const v1 = await upload(acme, { parent: "datasets/dense" }, jsonl(lines));
    expect(v1.name).toBe("datasets/dense/versions/v1");
    const derive = (operation: object) => call(acme, "deriveDatasetVersion", { parentVersion: v1.name, operation, versionId: "", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    const dropAll = { dropFailingRows: { checks: [DataCheck.DATA_CHECK_PII] } };
    expect(await failure(derive(dropAll))).toMatchObject({ reason: "DERIVED_VERSION_EMPTY" });
    expect((await derive({ deduplicate: {} })).datasetVersion!.name).toBe("datasets/dense/versions/v2");
    const split = await derive({ split: { evalFraction: 0.25, seed: 3 } });
    expect([split.datasetVersion!.name, split.evalDatasetVersion!.name]).toEqual(["datasets/dense/versions/v3-train", "datasets/dense/versions/v3-eval"]);
    expect(await failure(derive(dropAll))).toMatchObject({ reason: "DERIVED_VERSION_EMPTY" });
    expect((await derive({ redactPii: { kinds: [] } })).datasetVersion!.name).toBe("datasets/dense/versions/v4");
  });

  it("refuses a tokenizer folder outside the import roots with one answer, whether it exists or not", async () => {
    await writeTinyModel(outside);
    const tokenize = (tokenizerModel: string) => upload(acme, { parent: "datasets/tok", checkOptions: CheckOptions.fromPartial({ tokenizerModel }) }, jsonl([chat(1)]));
    const existing = await failure(tokenize(outside));
    const missing = await failure(tokenize(join(outside, "no-such-model")));
    for (const e of [existing, missing]) expect(e).toMatchObject({ code: "PERMISSION_DENIED", reason: "PATH_NOT_IMPORTABLE", field: "header.check_options.tokenizer_model" });
    expect(missing.message).toBe(existing.message);
    // Through a link inside a root to a folder outside: the real path decides.
    symlinkSync(outside, join(roots, "link-out"));
    expect(await failure(tokenize(join(roots, "link-out")))).toMatchObject({ code: "PERMISSION_DENIED", reason: "PATH_NOT_IMPORTABLE" });
    // Inside a root it is read.
    const inside = join(roots, "tiny");
    mkdirSync(inside);
    await writeTinyModel(inside);
    const v = await tokenize(inside);
    expect((await call(acme, "getQualityReport", { name: v.name })).qualityReport!.tokenStatistics!.totalTokens).toBeGreaterThan(0);
  });

  it("reads a registered model's tokenizer from the artifact store, even once the folder it came from is gone", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lathe-tok-gone-"));
    await writeTinyModel(dir);
    const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    await uploadFolder((cb) => registry.uploadModel(cb), { modelId: "tiny-stored", model: Model.fromPartial({ sourceUri: dir }), requestId: "" }, dir);
    const { model } = await call(registry, "getModel", { name: "models/tiny-stored" });
    registry.close();
    rmSync(dir, { recursive: true, force: true });
    const v = await upload(acme, { parent: "datasets/tok", checkOptions: CheckOptions.fromPartial({ tokenizerModel: "models/tiny-stored", maxSeqLength: 64 }) }, jsonl([chat(1), chat(2)]));
    const s = (await call(acme, "getQualityReport", { name: v.name })).qualityReport!.tokenStatistics!;
    expect(s.tokenizerModel).toBe("models/tiny-stored");
    expect(s.totalTokens).toBeGreaterThan(0);
    // Only what the tokenizer reads was written out, keyed by the model's digest: never the weights.
    const cached = readdirSync(join(t.platform.deps.config.LATHE_DATA_DIR, "cache", "dataset-tokenizers", model!.artifactDigest.replace("sha256:", "")));
    expect(cached).toContain("tokenizer.json");
    expect(cached.some((f) => f.endsWith(".safetensors"))).toBe(false);
  });
});
