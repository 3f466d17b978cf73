// The pipeline as ARCHITECTURE.md tells it, with every service its own process (each service's
// main.js) on real Postgres and NATS: a job that asks for registration, evaluation, promotion and
// deployment gets them with no one calling the next step, while the evaluator is down during the
// job and only started after fine_tuning_job_succeeded (it catches up from its durable consumer);
// no step is done twice; and every service's spans share the job's trace id.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { call, createClient, readStoredTrace, spanStoreDir } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { EvaluationRun_State, EvaluatorServiceClient } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { Deployment, Deployment_State, GatewayServiceClient } from "@lathe/proto/lathe/gateway/v1/gateway_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FineTuningJob, FineTuningJob_State, TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import { freePort, testNats, testPostgres, waitFor, type TestPostgres } from "@lathe/testing";
import { afterAll, beforeAll, expect, test } from "vitest";
import { checkHealth } from "../src/commands/health.js";

const repo = fileURLToPath(new URL("../..", import.meta.url));
const KEY = "pipeline-key";
const SERVICES = ["registry", "dataset", "trainer", "gateway", "evaluator"] as const;
type Service = (typeof SERVICES)[number];

let pg: TestPostgres;
let dir: string;
let env: Record<string, string>;
const ports = {} as Record<Service, number>;
let httpPort = 0;
const running = new Map<Service, { child: ChildProcess; out: () => string }>();

async function start(name: Service): Promise<void> {
  const child = spawn(process.execPath, [join(repo, "services", name, "dist", "main.js")], { env: { ...process.env, ...env, LATHE_GRPC_PORT: String(ports[name]) }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  running.set(name, { child, out: () => out });
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`${name} exited ${child.exitCode}:\n${out}`);
      return Object.values(await checkHealth(`127.0.0.1:${ports[name]}`).catch(() => ({}))).includes("SERVING");
    },
    { timeoutMs: 60_000, intervalMs: 200, what: `${name} to serve` },
  );
}

async function stop(name: Service): Promise<void> {
  const r = running.get(name);
  if (!r) return;
  running.delete(name);
  const exited = once(r.child, "exit");
  r.child.kill("SIGTERM");
  const [code] = await exited;
  expect(code, r.out()).toBe(0);
}

beforeAll(async () => {
  pg = await testPostgres();
  const nats = await testNats();
  dir = mkdtempSync(join(tmpdir(), "lathe-pipeline-"));
  await writeTinyModel(join(dir, "models", "tiny"), { seed: 1 });
  for (const s of SERVICES) ports[s] = await freePort();
  httpPort = await freePort();
  env = {
    LATHE_GRPC_HOST: "127.0.0.1",
    LATHE_PG_URL: pg.url,
    LATHE_NATS_URL: nats.url,
    LATHE_EVENTS_PREFIX: nats.prefix,
    LATHE_API_KEYS: `${KEY}=acme`,
    // One data dir: the artifact store the services share (a volume in a cluster) and the span store.
    LATHE_DATA_DIR: join(dir, "data"),
    LATHE_IMPORT_ROOTS: join(dir, "models"),
    LATHE_LOG_LEVEL: "warn",
    LATHE_OUTBOX_POLL_MS: "100",
    ...Object.fromEntries(SERVICES.map((s) => [`LATHE_${s.toUpperCase()}_ADDR`, `127.0.0.1:${ports[s]}`])),
    LATHE_TRAINER_THREADS: "1",
    LATHE_TRAINER_POLL_MS: "100",
    LATHE_GATEWAY_HTTP_PORT: String(httpPort),
    LATHE_GATEWAY_THREADS: "1",
    LATHE_GATEWAY_CONTEXT_SIZE: "256",
    LATHE_EVALUATOR_GATEWAY_URL: `http://127.0.0.1:${httpPort}/v1`,
    LATHE_EVALUATOR_POLL_MS: "100",
    LATHE_EVALUATOR_THREADS: "1",
  };
  // Everyone but the evaluator: it starts after the job.
  await Promise.all(SERVICES.filter((s) => s !== "evaluator").map(start));
}, 120_000);

afterAll(async () => {
  await Promise.all([...running.keys()].map((s) => stop(s).catch(() => undefined)));
  await pg?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const client = <C>(ctor: new (address: string, credentials: never) => C, s: Service): C => createClient(ctor as never, `127.0.0.1:${ports[s]}`, { apiKey: KEY }) as C;

test("a job's follow-up goes all the way with every service its own process; a late evaluator catches up; nothing is done twice; one trace", async () => {
  const registry = client(RegistryServiceClient, "registry");
  const datasets = client(DatasetServiceClient, "dataset");
  const trainer = client(TrainerServiceClient, "trainer");
  const gateway = client(GatewayServiceClient, "gateway");
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "models", "tiny") }), requestId: "" });
    await call(datasets, "createDataset", { datasetId: "d", dataset: Dataset.fromPartial({}), requestId: "" });
    const products = ["router", "laptop", "phone", "printer"];
    const rows = Array.from({ length: 20 }, (_, i) => JSON.stringify({ messages: [{ role: "user", content: `My ${products[i % 4]} is broken (ticket ${100 + i}).` }, { role: "assistant", content: `Restart the ${products[i % 4]}.` }] })).join("\n");
    const raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/d" }) });
      c.write({ chunk: Buffer.from(rows) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    await call(gateway, "createDeployment", { deploymentId: "help", deployment: Deployment.fromPartial({ baseModel: "models/tiny", servedModelName: "help" }), requestId: "" });

    const { fineTuningJob } = await call(trainer, "createFineTuningJob", {
      fineTuningJobId: "j1",
      fineTuningJob: FineTuningJob.fromPartial({
        baseModel: "models/tiny",
        trainDatasetVersion: split.datasetVersion!.name,
        evalDatasetVersion: split.evalDatasetVersion!.name,
        loraConfig: { r: 4, loraAlpha: 8, loraDropout: 0, targetModules: ["q_proj", "v_proj"], useRslora: false },
        trainingArguments: { numTrainEpochs: 1, perDeviceTrainBatchSize: 4, gradientAccumulationSteps: 1, learningRate: 1e-2, maxSeqLength: 64, packing: false, warmupRatio: 0 },
        followUp: {
          registration: { adapter: "models/tiny/adapters/support", description: "", labels: {} },
          evaluation: { evalDatasetVersion: "", metrics: [Metric.METRIC_ROUGE_L], baseline: "", generationParams: { temperature: 0, maxTokens: 6, stop: [] }, maxExamples: 0 },
          // Any candidate passes (not worse by more than a whole point): the test is about the choreography.
          promotion: { alias: "prod", conditions: [{ metric: Metric.METRIC_ROUGE_L, minDelta: -1, requireCiAboveZero: false }] },
          deployment: { deployment: "deployments/help" },
        },
      }),
      requestId: "",
    });
    const job = await waitFor(
      async () => {
        const j = (await call(trainer, "getFineTuningJob", { name: fineTuningJob!.name })).fineTuningJob!;
        return j.state === FineTuningJob_State.STATE_SUCCEEDED && j.adapterVersion !== "" ? j : j.state === FineTuningJob_State.STATE_FAILED ? j : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 200, what: "the job to succeed and its adapter to be registered" },
    );
    expect(job.error).toBeUndefined();
    expect(job.adapterVersion).toBe("models/tiny/adapters/support/versions/1");
    expect(job.traceId).toMatch(/^[0-9a-f]{32}$/);
    // The evaluator was down: nothing evaluated yet, the alias points nowhere.
    expect(await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" }).then(() => "found", (e: { code?: string }) => e.code)).toBe("NOT_FOUND");

    await start("evaluator");
    const evaluator = client(EvaluatorServiceClient, "evaluator");
    try {
      const alias = await waitFor(
        async () => (await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" }).catch(() => undefined))?.alias,
        { timeoutMs: 180_000, intervalMs: 200, what: "the promotion once the evaluator caught up" },
      );
      expect(alias.adapterVersion).toBe("models/tiny/adapters/support/versions/1");
      const served = await waitFor(
        async () => {
          const d = (await call(gateway, "getDeployment", { name: "deployments/help" })).deployment!;
          return d.state === Deployment_State.STATE_READY && d.adapters[0]?.adapterVersion ? d : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 200, what: "the deployment to serve the alias" },
      );
      expect(served.adapters[0]).toMatchObject({ source: "models/tiny/adapters/support/aliases/prod", adapterVersion: "models/tiny/adapters/support/versions/1" });
      const res = await fetch(`http://127.0.0.1:${httpPort}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` }, body: JSON.stringify({ model: "help:support", messages: [{ role: "user", content: "My router is broken (ticket 100)." }], max_tokens: 4, temperature: 0 }) });
      expect(res.status).toBe(200);

      // Each step once: one version, one evaluation run (succeeded), one move and one decision.
      const { adapterVersions } = await call(registry, "listAdapterVersions", { parent: "models/tiny/adapters/support", pageSize: 100, pageToken: "", filter: "" });
      expect(adapterVersions).toHaveLength(1);
      const runs = (await call(evaluator, "listEvaluationRuns", { pageSize: 100, pageToken: "", filter: "" })).evaluationRuns;
      expect(runs).toHaveLength(1);
      expect(runs[0]!.state).toBe(EvaluationRun_State.STATE_SUCCEEDED);
      const final = (await call(registry, "getAlias", { name: "models/tiny/adapters/support/aliases/prod" })).alias!;
      expect(final.history).toHaveLength(1);
      expect(final.decisions).toHaveLength(1);

      // One trace: the create call, the worker, the registration, the evaluation and its calls to
      // the gateway, the promotion and the deployment's consumer all carry the job's trace id.
      const services = await waitFor(
        async () => {
          const spans = readStoredTrace(spanStoreDir(join(dir, "data")), job.traceId);
          const seen = new Set(spans.map((s) => s.service));
          return ["trainer", "registry", "evaluator", "gateway"].every((s) => seen.has(s)) && spans.some((s) => s.name.startsWith("consume lathe.registry.v1.alias_moved") && s.service === "gateway") ? { seen, spans } : undefined;
        },
        { timeoutMs: 15_000, intervalMs: 200, what: "every service's spans in the job's trace" },
      );
      const names = services.spans.map((s) => s.name);
      expect(names).toContain("lathe.trainer.v1.TrainerService/CreateFineTuningJob");
      expect(names).toContain("trainer.train_job");
      expect(names).toContain("registry.register_adapter");
      expect(names).toContain("evaluator.evaluate");
      expect(names).toContain("POST /v1/chat/completions");
      expect(names.some((n) => n.startsWith("consume lathe.evaluator.v1.evaluation_completed"))).toBe(true);
    } finally {
      evaluator.close();
    }
  } finally {
    registry.close();
    datasets.close();
    trainer.close();
    gateway.close();
  }
}, 420_000);
