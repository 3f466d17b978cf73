import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient } from "@lathe/kit";
import { createDatasetService } from "@lathe/dataset";
import { gatewayOptionsOf, gatewayService } from "@lathe/gateway";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { EvaluationRun_State, EvaluatorServiceClient, type EvaluationRun } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { Deployment, Deployment_State, GatewayServiceClient } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { Adapter, AliasMoveTrigger, Model, PromotionRule, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FineTuningJob, FineTuningJob_State, TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { trainerService } from "@lathe/trainer";
import { afterAll, beforeAll, expect, test } from "vitest";
import { evaluatorOptionsOf, evaluatorService } from "../src/index.js";

/* Choreography: a job that asks for an evaluation is evaluated once its adapter is registered, and the registry's promotion rule moves the alias on the result. */

let t: TestPlatform;
let dir: string;
let gatewayUrl = "";

function rows(n: number): string {
  const products = ["router", "laptop", "phone", "printer"];
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: "user", content: `My ${products[i % 4]} is broken (ticket ${100 + i}).` },
        { role: "assistant", content: `Restart the ${products[i % 4]}.` },
      ],
    }),
  ).join("\n");
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-evaluator-follow-up-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  t = await startTestPlatform({
    env: { LATHE_IMPORT_ROOTS: dir },
    factories: [
      createRegistryService,
      createDatasetService,
      trainerService({ LATHE_TRAINER_WORKERS: 1, LATHE_TRAINER_THREADS: 1, LATHE_TRAINER_POLL_MS: 100, LATHE_TRAINER_LEASE_MS: 5000 }),
      gatewayService({ ...gatewayOptionsOf({} as never), LATHE_GATEWAY_HTTP_PORT: 0, LATHE_GATEWAY_THREADS: 1, LATHE_GATEWAY_CONTEXT_SIZE: 256 }, { onHttpListening: (u) => (gatewayUrl = u) }),
      evaluatorService({ ...evaluatorOptionsOf({} as never), LATHE_EVALUATOR_POLL_MS: 100 }, { gatewayUrl: () => (gatewayUrl === "" ? undefined : `${gatewayUrl}/v1`) }),
    ],
  });
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

test("job → registered version → evaluation against the base → promotion by the alias's rule → served by the deployment it names, with no one calling the next step; a second job whose conditions do not hold is recorded as not promoted, saying why", async () => {
  const gateway = createClient(GatewayServiceClient, t.address, { apiKey: testKeys.acme });
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  const datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
  const trainer = createClient(TrainerServiceClient, t.address, { apiKey: testKeys.acme });
  const evaluator = createClient(EvaluatorServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
    await call(datasets, "createDataset", { datasetId: "d", dataset: Dataset.fromPartial({}), requestId: "" });
    const raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/d" }) });
      c.write({ chunk: Buffer.from(rows(20)) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    // The adapter the job registers into, and its alias's rule: it moves when the candidate is not
    // worse than its baseline on ROUGE-L by more than a whole point (any candidate, on a tiny model).
    await call(registry, "createAdapter", { parent: "models/tiny", adapterId: "support", adapter: Adapter.fromPartial({}), requestId: "" });
    await call(registry, "setPromotionRule", {
      promotionRule: PromotionRule.fromPartial({ name: "models/tiny/adapters/support/aliases/prod/promotionRule", conditions: [{ metric: Metric.METRIC_ROUGE_L, minDelta: -1, requireCiAboveZero: false }], minExampleCount: 1 }),
    });
    // A deployment of the base alone, which the job's follow-up asks to serve the promoted alias.
    await call(gateway, "createDeployment", { deploymentId: "help", deployment: Deployment.fromPartial({ baseModel: "models/tiny", servedModelName: "help" }), requestId: "" });
    const job = (id: string, promotion: NonNullable<Parameters<typeof FineTuningJob.fromPartial>[0]["followUp"]>["promotion"]) =>
      FineTuningJob.fromPartial({
        baseModel: "models/tiny",
        trainDatasetVersion: split.datasetVersion!.name,
        evalDatasetVersion: split.evalDatasetVersion!.name,
        loraConfig: { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ["q_proj", "v_proj"], useRslora: false },
        trainingArguments: { numTrainEpochs: 1, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, maxSeqLength: 64, packing: false, warmupRatio: 0 },
        followUp: {
          registration: { adapter: "models/tiny/adapters/support", description: id, labels: {} },
          evaluation: { evalDatasetVersion: "", metrics: [Metric.METRIC_ROUGE_L], baseline: "", generationParams: { temperature: 0, maxTokens: 6, stop: [] }, maxExamples: 0 },
          promotion,
          deployment: { deployment: "deployments/help" },
        },
      });
    const { fineTuningJob } = await call(trainer, "createFineTuningJob", { fineTuningJobId: "j1", fineTuningJob: job("j1", { alias: "prod", conditions: [] }), requestId: "" });
    const ended = await waitFor(
      async () => {
        const j = (await call(trainer, "getFineTuningJob", { name: fineTuningJob!.name })).fineTuningJob!;
        return [FineTuningJob_State.STATE_SUCCEEDED, FineTuningJob_State.STATE_FAILED, FineTuningJob_State.STATE_CANCELLED].includes(j.state) ? j : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 200, what: "the job to end" },
    );
    expect(ended.error).toBeUndefined();
    expect(ended.state).toBe(FineTuningJob_State.STATE_SUCCEEDED);

    let run: EvaluationRun | undefined;
    await waitFor(
      async () => {
        run = (await call(evaluator, "listEvaluationRuns", { pageSize: 0, pageToken: "", filter: `fine_tuning_job = "${fineTuningJob!.name}"` })).evaluationRuns[0];
        return run?.state === EvaluationRun_State.STATE_SUCCEEDED || run?.state === EvaluationRun_State.STATE_FAILED;
      },
      { timeoutMs: 120_000, intervalMs: 200, what: "the job's evaluation run to end" },
    );
    expect(run!.error).toBeUndefined();
    expect(run).toMatchObject({ state: EvaluationRun_State.STATE_SUCCEEDED, evalDatasetVersion: split.evalDatasetVersion!.name, fineTuningJob: fineTuningJob!.name });
    expect(run!.candidate).toMatchObject({ model: "models/tiny", adapterVersion: "models/tiny/adapters/support/versions/1" });
    // No alias pointed anywhere yet: the base model is the baseline.
    expect(run!.baseline).toMatchObject({ model: "models/tiny", adapterVersion: "" });
    expect(run!.differences.map((d) => d.metric)).toEqual([Metric.METRIC_ROUGE_L]);

    // evaluation_completed reached the registry: the alias moved by promotion, naming the run.
    await waitFor(async () => (await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" }).catch(() => undefined))?.alias, { timeoutMs: 30_000, intervalMs: 100, what: "the promotion" });
    const { alias } = await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" });
    expect(alias!.adapterVersion).toBe("models/tiny/adapters/support/versions/1");
    expect(alias!.history.at(-1)).toMatchObject({ trigger: AliasMoveTrigger.ALIAS_MOVE_TRIGGER_PROMOTION, evaluationRun: run!.name });
    expect(alias!.decisions).toHaveLength(1);
    expect(alias!.decisions[0]).toMatchObject({ evaluationRun: run!.name, candidateVersion: "models/tiny/adapters/support/versions/1", promoted: true, source: "promotion_rule", fineTuningJob: fineTuningJob!.name });
    expect(alias!.decisions[0]!.reason).toMatch(/^promotion rule held on evaluationRuns\/.+: metric 1 Δ=/);
    // One run per version, however often the event is delivered.
    expect((await call(evaluator, "listEvaluationRuns", { pageSize: 0, pageToken: "", filter: "" })).evaluationRuns).toHaveLength(1);

    // The deployment the job named now serves the alias, and the adapter answers through it.
    const served = await waitFor(
      async () => {
        const d = (await call(gateway, "getDeployment", { name: "deployments/help" })).deployment!;
        return d.state === Deployment_State.STATE_READY && d.adapters.length === 1 && d.adapters[0]!.adapterVersion !== "" ? d : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: "the deployment to serve the promoted alias" },
    );
    expect(served.adapters[0]).toMatchObject({ source: "models/tiny/adapters/support/aliases/prod", servedName: "support", adapterVersion: "models/tiny/adapters/support/versions/1" });
    const chat = async (model: string) => {
      const res = await fetch(`${gatewayUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${testKeys.acme}` }, body: JSON.stringify({ model, messages: [{ role: "user", content: "My router is broken (ticket 100)." }], temperature: 0, max_tokens: 6, seed: 1 }) });
      expect(res.status).toBe(200);
      return ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    };
    expect(await chat("help:support")).toBe(await chat("tiny:support@1"));

    // A second job whose own conditions cannot hold (ROUGE-L at least a whole point better): evaluated, not promoted, and the decision says why.
    const second = await call(trainer, "createFineTuningJob", { fineTuningJobId: "j2", fineTuningJob: job("j2", { alias: "prod", conditions: [{ metric: Metric.METRIC_ROUGE_L, minDelta: 1, requireCiAboveZero: true }] }), requestId: "" });
    const decided = await waitFor(
      async () => {
        const a = (await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" })).alias!;
        return a.decisions.length === 2 ? a : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 200, what: "the second job's promotion decision" },
    );
    expect(decided.adapterVersion).toBe("models/tiny/adapters/support/versions/1");
    expect(decided.decisions[1]).toMatchObject({ candidateVersion: "models/tiny/adapters/support/versions/2", promoted: false, source: "follow_up", fineTuningJob: second.fineTuningJob!.name });
    expect(decided.decisions[1]!.reason).toMatch(/^not promoted on evaluationRuns\/.+: metric 1 Δ=.*\(min Δ 1, CI above 0\): did not hold$/);
    expect(decided.history).toHaveLength(1);
  } finally {
    gateway.close();
    registry.close();
    datasets.close();
    trainer.close();
    evaluator.close();
  }
}, 300_000);
