import { mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError, call, createClient, encodeEvent, JetStreamBus, LocalArtifactStore, putFolder, type Delivery } from "@lathe/kit";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { AliasMoved } from "@lathe/proto/lathe/events/v1/registry_events";
import {
  AdapterVersion,
  AliasMoveTrigger,
  ArtifactFormat,
  LineageDirection,
  LineageRelation,
  Model,
  PromotionRule,
  RegistryServiceClient,
} from "@lathe/proto/lathe/registry/v1/registry_service";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import { FineTuningMethod } from "@lathe/proto/lathe/type/v1/lora";
import { createDatasetService } from "@lathe/dataset";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";
import { download, fails } from "./support.js";
import { evaluationCompleted, fineTuningJobQueued, fineTuningJobSucceeded } from "../src/events.js";

const A = "models/tiny/adapters/support";


describe("RegistryService: import, adapters, aliases, promotion, lineage, downloads", () => {
  let t: TestPlatform;
  let acme: RegistryServiceClient;
  let globex: RegistryServiceClient;
  let bus: JetStreamBus;
  const seen: Delivery[] = [];
  const dir = mkdtempSync(join(tmpdir(), "lathe-registry-"));
  const baseDir = join(dir, "tiny");
  const adapterDirs = [1, 2, 3].map((i) => join(dir, `adapter-${i}`));

  /** Publishes an event as the service that owns it would (the trainer and evaluator come later). */
  const publish = async (e: Parameters<typeof encodeEvent>[1], id?: string) => {
    const enc = encodeEvent("test", e);
    await bus.publish({ ...enc, id: id ?? enc.id });
    return enc;
  };

  beforeAll(async () => {
    await writeTinyModel(baseDir, { seed: 1 });
    for (const [i, d] of adapterDirs.entries()) await writeTinyAdapter(d, baseDir, { r: 4, alpha: 8, seed: i + 1 });
    t = await startTestPlatform({ factories: [createRegistryService, createDatasetService], env: { LATHE_IMPORT_ROOTS: dir } });
    acme = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.globex });
    bus = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
    await bus.subscribe({ durable: "observer", subjects: ["lathe.registry.v1.>"], handler: async (d) => void seen.push(d) });
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await bus?.close();
    await t?.stop();
  });

  it("imports a model folder with what libs/models learns of it, and refuses one it cannot load", async () => {
    const { model } = await call(acme, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: baseDir }), requestId: "" });
    expect(model).toMatchObject({ architecture: "LlamaForCausalLM", vocabSize: 512, state: 2 });
    expect(model!.parameterCount).toBeGreaterThan(10_000);
    expect(model!.chatTemplateFingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(model!.artifactDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const empty = mkdtempSync(join(dir, "lathe-empty-"));
    const err = await fails(call(acme, "createModel", { modelId: "broken", model: Model.fromPartial({ sourceUri: empty }), requestId: "" }));
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", field: "model.source_uri" });
    expect(err.message).toContain("config.json");
  });

  it("registers PEFT folders as immutable numbered versions and refuses an adapter that does not fit", async () => {
    const v1 = (await call(acme, "createAdapterVersion", { parent: A, adapterVersion: AdapterVersion.fromPartial({ artifactUri: adapterDirs[0]!, description: "first" }), allowMissing: true, requestId: "" })).adapterVersion!;
    expect(v1).toMatchObject({ name: `${A}/versions/1`, loraConfig: expect.objectContaining({ r: 4, loraAlpha: 8 }), method: FineTuningMethod.FINE_TUNING_METHOD_LORA, creator: "tenant:acme" });
    expect(v1.artifactDigest).toMatch(/^sha256:/);
    const v2 = (await call(acme, "createAdapterVersion", { parent: A, adapterVersion: AdapterVersion.fromPartial({ artifactUri: adapterDirs[1]! }), allowMissing: false, requestId: "" })).adapterVersion!;
    expect(v2.name).toBe(`${A}/versions/2`);
    const other = join(dir, "other-base");
    await writeTinyModel(other, { hidden: 48, heads: 4, kvHeads: 2, seed: 9 });
    const misfit = join(dir, "misfit");
    await writeTinyAdapter(misfit, other, { r: 4 });
    const err = await fails(call(acme, "createAdapterVersion", { parent: A, adapterVersion: AdapterVersion.fromPartial({ artifactUri: misfit }), allowMissing: false, requestId: "" }));
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", field: "adapter_version.artifact_uri" });
    expect(err.message).toContain("does not fit");
    const del = await fails(call(acme, "deleteModel", { name: "models/tiny" }));
    expect(del).toMatchObject({ code: "FAILED_PRECONDITION", reason: "MODEL_HAS_ADAPTERS" });
    expect(del.message).toContain(A);
  });

  it("moves aliases, records every move, and rolls back", async () => {
    await call(acme, "setAlias", { name: `${A}/aliases/production`, adapterVersion: `${A}/versions/1`, reason: "first release", expectedAdapterVersion: "" });
    await call(acme, "setAlias", { name: `${A}/aliases/production`, adapterVersion: `${A}/versions/2`, reason: "better answers", expectedAdapterVersion: `${A}/versions/1` });
    const stale = await fails(call(acme, "setAlias", { name: `${A}/aliases/production`, adapterVersion: `${A}/versions/1`, reason: "", expectedAdapterVersion: `${A}/versions/1` }));
    expect(stale.code).toBe("ABORTED");
    const { alias } = await call(acme, "rollbackAlias", { name: `${A}/aliases/production`, adapterVersion: "", reason: "regression in support tickets" });
    expect(alias!.adapterVersion).toBe(`${A}/versions/1`);
    expect(alias!.history.map((h) => [h.fromVersion, h.toVersion, h.trigger])).toEqual([
      ["", `${A}/versions/1`, AliasMoveTrigger.ALIAS_MOVE_TRIGGER_MANUAL],
      [`${A}/versions/1`, `${A}/versions/2`, AliasMoveTrigger.ALIAS_MOVE_TRIGGER_MANUAL],
      [`${A}/versions/2`, `${A}/versions/1`, AliasMoveTrigger.ALIAS_MOVE_TRIGGER_ROLLBACK],
    ]);
    expect(alias!.history[2]).toMatchObject({ reason: "regression in support tickets", actor: "tenant:acme" });
    await waitFor(() => seen.filter((d) => d.subject === "lathe.registry.v1.alias_moved").length >= 3, { what: "alias_moved events" });
    expect(seen.filter((d) => d.subject === "lathe.registry.v1.alias_moved").map((d) => AliasMoved.decode(d.data).trigger)).toEqual(["manual", "manual", "rollback"]);
  });

  it("promotes on evaluation_completed only when the rule holds, recording the numbers, and applies a replayed event once", async () => {
    await call(acme, "setPromotionRule", {
      promotionRule: PromotionRule.fromPartial({ name: `${A}/aliases/staging/promotionRule`, conditions: [{ metric: Metric.METRIC_ROUGE_L, minDelta: 0.02, requireCiAboveZero: true }], minExampleCount: 50 }),
    });
    const diff = (lower: number, upper: number) => [{ metric: Metric.METRIC_ROUGE_L, candidateValue: 0.45, baselineValue: 0.4, meanDifference: 0.05, confidenceInterval: { lower, upper, level: 0.95 }, pValue: 0.01, bootstrapSamples: 1000, exampleCount: 200, winCount: 120, lossCount: 60, tieCount: 20 }];
    const passing = { def: evaluationCompleted, tenant: "acme", subject: "evaluationRuns/e1", payload: { evaluationRun: "evaluationRuns/e1", candidateAdapterVersion: `${A}/versions/2`, differences: diff(0.01, 0.09), candidateResults: [{ metric: Metric.METRIC_ROUGE_L, value: 0.45, exampleCount: 200 }], exampleCount: 200 } };
    const enc = await publish(passing);
    await waitFor(async () => (await call(acme, "getAlias", { name: `${A}/aliases/staging` }).catch(() => undefined))?.alias?.adapterVersion === `${A}/versions/2`, { what: "the promotion" });
    const { alias } = await call(acme, "getAlias", { name: `${A}/aliases/staging` });
    expect(alias!.history).toHaveLength(1);
    expect(alias!.history[0]).toMatchObject({ trigger: AliasMoveTrigger.ALIAS_MOVE_TRIGGER_PROMOTION, evaluationRun: "evaluationRuns/e1" });
    expect(alias!.history[0]!.decidingMetrics[0]).toMatchObject({ satisfied: true, difference: expect.objectContaining({ meanDifference: 0.05 }) });

    // The same event again (redelivered under another bus id) changes nothing.
    await bus.publish({ ...enc, id: `${enc.id}-replay` });
    // A candidate whose confidence interval crosses zero is not promoted.
    await publish({ ...passing, subject: "evaluationRuns/e2", payload: { ...passing.payload, evaluationRun: "evaluationRuns/e2", candidateAdapterVersion: `${A}/versions/1`, differences: diff(-0.01, 0.11) } });
    await waitFor(async () => (await call(acme, "getAdapterVersion", { name: `${A}/versions/1` })).adapterVersion!.evaluationRuns.includes("evaluationRuns/e2"), { what: "the second evaluation" });
    const after = (await call(acme, "getAlias", { name: `${A}/aliases/staging` })).alias!;
    expect(after.adapterVersion).toBe(`${A}/versions/2`);
    expect(after.history).toHaveLength(1);
    const v2 = (await call(acme, "getAdapterVersion", { name: `${A}/versions/2` })).adapterVersion!;
    expect(v2.evaluationRuns).toEqual(["evaluationRuns/e1"]);
    expect(v2.headlineMetrics[0]).toMatchObject({ metric: Metric.METRIC_ROUGE_L, value: 0.45 });
    expect(v2.aliases).toEqual([`${A}/aliases/staging`]);
  });

  it("traces an adapter version back to its dataset versions, and registers what a finished job asked for", async () => {
    const datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
    await call(datasets, "createDataset", { datasetId: "support", dataset: undefined, requestId: "" });
    const rows = Array.from({ length: 12 }, (_, i) => JSON.stringify({ prompt: `How do I reset the router model ${i} after a firmware update?`, completion: `Hold the reset button of model ${i} for ten seconds, wait for the lights to blink, then log in again with the default password.` })).join("\n");
    const raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/support" }) });
      c.write({ chunk: Buffer.from(rows) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.25, seed: 1 } }, versionId: "", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    datasets.close();
    const train = split.datasetVersion!.name;
    const evalV = split.evalDatasetVersion!.name;
    const job = "fineTuningJobs/j1";
    // The trainer stores the adapter in the shared artifact store and names it by digest.
    const stored = await putFolder(new LocalArtifactStore(join(`/tmp/lathe-test-${new URL(t.pgUrl).pathname.slice(1)}`, "artifacts")), adapterDirs[2]!);
    await publish({ def: fineTuningJobQueued, tenant: "acme", subject: job, payload: { fineTuningJob: job, baseModel: "models/tiny", trainDatasetVersion: train, evalDatasetVersion: evalV } });
    await publish({
      def: fineTuningJobSucceeded,
      tenant: "acme",
      subject: job,
      payload: { fineTuningJob: job, baseModel: "models/tiny", trainDatasetVersion: train, evalDatasetVersion: evalV, adapterArtifactUri: `artifact:sha256:${stored.digest}`, adapterArtifactDigest: `sha256:${stored.digest}`, followUp: { registration: { adapter: A, description: "from j1", labels: {} } } },
    });
    const registered = await waitFor(async () => (await call(acme, "listAdapterVersions", { parent: A, pageSize: 0, pageToken: "", filter: "" })).adapterVersions.find((v) => v.fineTuningJob === job), { timeoutMs: 20_000, what: "the job's adapter to be registered" });
    expect(registered).toMatchObject({ name: `${A}/versions/3`, trainDatasetVersion: train, creator: `fine-tuning job ${job}` });

    const up = await call(acme, "getLineage", { name: registered.name, direction: LineageDirection.LINEAGE_DIRECTION_UPSTREAM, depth: 5 });
    const names = up.nodes.map((n) => n.name);
    expect(names).toEqual(expect.arrayContaining([job, "models/tiny", train, evalV, raw]));
    expect(up.edges).toEqual(expect.arrayContaining([
      { source: raw, target: train, relation: LineageRelation.LINEAGE_RELATION_DERIVED },
      { source: train, target: job, relation: LineageRelation.LINEAGE_RELATION_INPUT },
      { source: job, target: registered.name, relation: LineageRelation.LINEAGE_RELATION_OUTPUT },
      { source: "models/tiny", target: registered.name, relation: LineageRelation.LINEAGE_RELATION_BASE_MODEL },
    ]));
    const down = await call(acme, "getLineage", { name: raw, direction: LineageDirection.LINEAGE_DIRECTION_DOWNSTREAM, depth: 5 });
    expect(down.nodes.map((n) => n.name)).toContain(registered.name);
    const theirs = await call(globex, "getLineage", { name: raw, direction: LineageDirection.LINEAGE_DIRECTION_BOTH, depth: 5 });
    expect(theirs.edges).toEqual([]);
  });

  it("writes a model card from the lineage, settings and metrics", async () => {
    const { modelCard } = await call(acme, "getModelCard", { name: `${A}/versions/2` });
    expect(modelCard!.markdown).toContain("base_model: models/tiny");
    expect(modelCard!.markdown).toContain("r=4, alpha=8");
    expect(modelCard!.markdown).toContain("| ROUGE-L | 0.4500 |");
    expect(modelCard!.markdown).toContain("Promoted to `models/tiny/adapters/support/aliases/staging` by `evaluationRuns/e1`");
  });

  it("downloads PEFT, merged and GGUF artifacts, and refuses to serve a corrupted one", async () => {
    const peft = await download(acme, `${A}/versions/1`, ArtifactFormat.ARTIFACT_FORMAT_PEFT);
    expect(peft.map((f) => f.path).sort()).toEqual(readdirSync(adapterDirs[0]!).sort());
    const merged = await download(acme, `${A}/versions/1`, ArtifactFormat.ARTIFACT_FORMAT_MERGED);
    expect(merged.map((f) => f.path)).toEqual(expect.arrayContaining(["config.json", "model.safetensors", "tokenizer.json"]));
    const gguf = await download(acme, `${A}/versions/1`, ArtifactFormat.ARTIFACT_FORMAT_GGUF);
    expect(gguf[0]!.bytes.subarray(0, 4).toString("latin1")).toBe("GGUF");

    // Corrupt one stored blob of version 2's adapter on disk.
    const v2 = (await call(acme, "getAdapterVersion", { name: `${A}/versions/2` })).adapterVersion!;
    const files = await download(acme, v2.name, ArtifactFormat.ARTIFACT_FORMAT_PEFT);
    const weights = files.find((f) => f.path.endsWith(".safetensors"))!;
    const hex = weights.digest.replace("sha256:", "");
    writeFileSync(join(`/tmp/lathe-test-${new URL(t.pgUrl).pathname.slice(1)}`, "artifacts", "sha256", hex.slice(0, 2), hex), Buffer.from("not the weights"));
    const err = await download(acme, v2.name, ArtifactFormat.ARTIFACT_FORMAT_PEFT).catch((e: unknown) => e as AppError);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).reason).toBe("ARTIFACT_CORRUPTED");
  });

  it("keeps tenants apart; models/- lists every model's adapters of the caller", async () => {
    expect((await call(acme, "listAdapters", { parent: "models/-", pageSize: 0, pageToken: "", filter: "" })).adapters.map((a) => a.name)).toContain(A);
    expect((await call(globex, "listAdapters", { parent: "models/-", pageSize: 0, pageToken: "", filter: "" })).adapters).toEqual([]);
    expect(await call(acme, "listAdapters", { parent: "models/none", pageSize: 0, pageToken: "", filter: "" }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect(await call(globex, "getAdapter", { name: A }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect(await call(globex, "getAlias", { name: `${A}/aliases/production` }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
    expect(await call(globex, "createAdapterVersion", { parent: A, adapterVersion: AdapterVersion.fromPartial({ artifactUri: adapterDirs[0]! }), allowMissing: true, requestId: "" }).catch((e: unknown) => (e as AppError).code)).toBe("NOT_FOUND");
  });
});
