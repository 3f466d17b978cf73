import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient } from "@lathe/kit";
import { createDatasetService } from "@lathe/dataset";
import { gatewayOptionsOf, gatewayService } from "@lathe/gateway";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { GenerationJob, GenerationJob_State, SynthGenServiceClient } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { synthgenOptionsOf, synthgenService } from "../src/index.js";

/* Lathe's own gateway as the teacher: a tiny model answers with JSON-schema output; the examples are checked, reviewed and published with lineage to the job. */

let t: TestPlatform;
let gatewayUrl = "";

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "lathe-synth-gateway-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  process.env["LATHE_TEST_GATEWAY_KEY"] = testKeys.acme;
  t = await startTestPlatform({
    env: { LATHE_IMPORT_ROOTS: dir },
    factories: [
      createRegistryService,
      createDatasetService,
      gatewayService({ ...gatewayOptionsOf({} as never), LATHE_GATEWAY_HTTP_PORT: 0, LATHE_GATEWAY_THREADS: 1, LATHE_GATEWAY_CONTEXT_SIZE: 2048, LATHE_GATEWAY_SEQUENCES: 2 }, { onHttpListening: (u) => (gatewayUrl = u) }),
      synthgenService({ ...synthgenOptionsOf({} as never), LATHE_SYNTHGEN_POLL_MS: 100 }),
    ],
  });
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
  } finally {
    registry.close();
  }
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

test("12 schema-valid examples from a tiny model behind the gateway, reviewed and published, the version's lineage reaching the job", async () => {
  const synth = createClient(SynthGenServiceClient, t.address, { apiKey: testKeys.acme });
  const datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    const shot = (q: string, a: string) => ({ messages: [{ role: ChatRole.CHAT_ROLE_USER, content: q }, { role: ChatRole.CHAT_ROLE_ASSISTANT, content: a }] });
    // A seed set: generated examples must not copy it, and the job's lineage starts from it.
    await call(datasets, "createDataset", { datasetId: "seed", dataset: Dataset.fromPartial({}), requestId: "" });
    const seed = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/seed" }) });
      c.write({ chunk: Buffer.from(JSON.stringify({ messages: [{ role: "user", content: "How do I restart my wireless access point?" }, { role: "assistant", content: "Unplug the access point, wait thirty seconds, plug it back in and wait for the light." }] }) + "\n") });
      c.end();
    });
    const { generationJob } = await call(synth, "createGenerationJob", {
      generationJobId: "from-gateway",
      generationJob: GenerationJob.fromPartial({
        teacher: { baseUrl: `${gatewayUrl}/v1`, model: "tiny", apiKeySecret: "env:LATHE_TEST_GATEWAY_KEY", maxConcurrentRequests: 2 },
        taskDescription: "Answer questions about resetting home network devices.",
        fewShotExamples: [
          shot("How do I reset my router to factory settings?", "Hold the reset button on the back of the router for ten seconds until the lights blink."),
          shot("My modem keeps dropping the connection. What can I try?", "Restart the modem, check the cable to the wall socket, and call your provider if it keeps happening."),
        ],
        targetCount: 12,
        maxTeacherRequests: 200,
        seedDatasetVersion: seed,
        reviewSampleFraction: 0.2,
        generationParams: { temperature: 0.9, maxTokens: 256, seed: 3, stop: [] },
      }),
      requestId: "",
    });
    const j = await waitFor(
      async () => {
        const g = (await call(synth, "getGenerationJob", { name: generationJob!.name })).generationJob!;
        return g.state === GenerationJob_State.STATE_SUCCEEDED || g.state === GenerationJob_State.STATE_FAILED ? g : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 200, what: "the job to end" },
    );
    expect(j.error).toBeUndefined();
    expect(j.progress!.acceptedCount).toBe(12);
    // An answer the gateway could not validate against the schema (a random tiny model's invalid
    // UTF-8 decodes longer than llama.cpp's grammar counted it) is counted as malformed, never accepted.
    expect(j.progress!.generatedCount).toBe(12 + j.progress!.rejections.reduce((s, r) => s + r.count, 0));
    expect(Number(j.progress!.completionTokens)).toBeGreaterThan(0);

    const { reviewItems } = await call(synth, "listReviewItems", { parent: j.name, pageSize: 100, pageToken: "", state: 0 });
    expect(reviewItems.length).toBe(j.progress!.reviewCount);
    for (const item of reviewItems) {
      expect(item.example!.messages.map((m) => m.role)).toEqual([ChatRole.CHAT_ROLE_USER, ChatRole.CHAT_ROLE_ASSISTANT]);
      await call(synth, "approveReviewItem", { name: item.name, correctedExample: undefined, note: "" });
    }
    await call(datasets, "createDataset", { datasetId: "generated", dataset: Dataset.fromPartial({}), requestId: "" });
    const published = await call(synth, "publishGenerationJob", { name: j.name, dataset: "datasets/generated", versionId: "v1", skipPendingReview: false, includeSeedRows: false, requestId: "" });
    expect(published.exampleCount).toBe(12);
    const { datasetVersion } = await call(datasets, "getDatasetVersion", { name: published.datasetVersion });
    expect(datasetVersion).toMatchObject({ rowCount: 12, generationJob: j.name });
    // The registry's lineage of the version reaches the job.
    const lineage = await waitFor(
      async () => {
        const l = await call(registry, "getLineage", { name: published.datasetVersion, direction: 0, depth: 0 }).catch(() => undefined);
        return l?.nodes.some((n) => n.name === j.name) ? l : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: "the version's lineage to reach the job" },
    );
    expect(lineage.edges.some((e) => e.source === j.name && e.target === published.datasetVersion)).toBe(true);
    // …and the job's own inputs: its seed set, and the teacher it names.
    const up = await waitFor(async () => {
      const l = await call(registry, "getLineage", { name: j.name, direction: 0, depth: 0 }).catch(() => undefined);
      return l?.edges.some((e) => e.source === seed && e.target === j.name) ? l : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200, what: "the job's lineage to reach its seed set" });
    expect(up.nodes.find((n) => n.name === j.name)!.displayName).toBe(`generated with tiny at ${gatewayUrl}/v1`);
  } finally {
    synth.close();
    datasets.close();
    registry.close();
  }
}, 300_000);
