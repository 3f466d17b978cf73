import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { baseConfigSchema, call, createClient, fromGrpcError, JetStreamBus, loadConfig, startPlatform, uploadFolder, type AppError, type Delivery, type RunningPlatform } from "@lathe/kit";
import { createDatasetService } from "@lathe/dataset";
import { evalLoss } from "@lathe/engine";
import { gatewayOptionsOf, gatewayService } from "@lathe/gateway";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { EvaluationCompleted } from "@lathe/proto/lathe/events/v1/evaluator_events";
import { EvaluationRun, EvaluationRun_State, EvaluatorServiceClient, JudgeVerdict, type EvaluationExample, type WatchEvaluationRunResponse } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { AdapterVersion, Model, RegistryServiceClient, type CreateAdapterVersionRequest, type UploadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";
import { FormatKind } from "@lathe/proto/lathe/type/v1/data_check";
import { Metric } from "@lathe/proto/lathe/type/v1/metric";
import { createRegistryService } from "@lathe/registry";
import { startOpenAiUpstream, startTestPlatform, testKeys, waitFor, type TestPlatform } from "@lathe/testing";
import { rougeScore } from "@lathe/text";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { evaluatorOptionsOf, evaluatorService, type EvaluatorOptions } from "../src/index.js";

/* Evaluation runs end to end: answers generated through the gateway, scored, compared, resumed after a restart. */

let t: TestPlatform;
let dir: string;
let gatewayUrl = "";
let evaluator: EvaluatorServiceClient;
let trainSet: string;
let evalSet: string;
let bus: JetStreamBus;
const seen: Delivery[] = [];
const PRICES = { tiny: { input: 0.5, output: 2 } };

const options = (workers: number): EvaluatorOptions => ({
  ...evaluatorOptionsOf({} as never),
  LATHE_EVALUATOR_WORKERS: workers,
  LATHE_EVALUATOR_CONCURRENCY: 2,
  LATHE_EVALUATOR_POLL_MS: 100,
  LATHE_EVALUATOR_LEASE_MS: 1500,
  LATHE_EVALUATOR_THREADS: 1,
  LATHE_EVALUATOR_PRICES: JSON.stringify(PRICES),
});

const fails = (p: Promise<unknown>) => p.then(() => expect.unreachable("the call succeeded"), (e: unknown) => e as AppError);

/** A support-desk set in chat form, the same every time. */
function supportRows(n: number): string {
  const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet"];
  const issues = ["does not turn on", "keeps restarting", "is very slow", "shows an error code", "loses its connection", "makes a strange noise"];
  return Array.from({ length: n }, (_, i) => {
    const p = products[i % products.length]!;
    const issue = issues[i % issues.length]!;
    return JSON.stringify({
      messages: [
        { role: "system", content: "You are a support agent." },
        { role: "user", content: `My ${p} ${issue} (ticket ${1000 + i}). What should I do?` },
        { role: "assistant", content: `Unplug the ${p} for thirty seconds and start it again. If it still ${issue}, reply to ticket ${1000 + i}.` },
      ],
    });
  }).join("\n");
}

const run = (over: Parameters<typeof EvaluationRun.fromPartial>[0]) =>
  EvaluationRun.fromPartial({
    candidate: { model: "models/tiny", adapterVersion: "models/tiny/adapters/support/versions/1" },
    baseline: { model: "models/tiny", adapterVersion: "" },
    evalDatasetVersion: evalSet,
    metrics: [Metric.METRIC_ROUGE_L, Metric.METRIC_EXACT_MATCH, Metric.METRIC_FORMAT_COMPLIANCE, Metric.METRIC_BERTSCORE],
    formatCheck: { kind: FormatKind.FORMAT_KIND_REGEX, pattern: "[^\\n]*", jsonSchema: "" },
    generationParams: { temperature: 0, maxTokens: 8, stop: [] },
    bertscoreModel: "models/tiny",
    ...over,
  });

async function settled(name: string): Promise<EvaluationRun> {
  let r: EvaluationRun | undefined;
  await waitFor(async () => {
    r = (await call(evaluator, "getEvaluationRun", { name })).evaluationRun!;
    return r.state === EvaluationRun_State.STATE_SUCCEEDED || r.state === EvaluationRun_State.STATE_FAILED || r.state === EvaluationRun_State.STATE_CANCELLED;
  }, { timeoutMs: 120_000, intervalMs: 100 });
  return r!;
}

async function predictions(name: string): Promise<EvaluationExample[]> {
  const out: EvaluationExample[] = [];
  let pageToken = "";
  do {
    const page = await call(evaluator, "listEvaluationPredictions", { parent: name, pageSize: 4, pageToken });
    out.push(...page.examples);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return out;
}

/** The gateway's answer to a chat, asked directly. */
async function direct(model: string, messages: { role: string; content: string }[]): Promise<string> {
  const res = await fetch(`${gatewayUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${testKeys.acme}` },
    body: JSON.stringify({ model, messages, temperature: 0, max_tokens: 8, seed: 42, top_p: 1 }),
  });
  return ((await res.json()) as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-evaluator-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  await writeTinyAdapter(join(dir, "support"), join(dir, "tiny"), { r: 8, alpha: 64, seed: 3, targetModules: ["q_proj", "v_proj", "down_proj", "lm_head"] });
  // The API platform evaluates nothing itself (0 workers): worker platforms do, so one can be stopped midway.
  t = await startTestPlatform({
    env: { LATHE_IMPORT_ROOTS: dir },
    factories: [
      createRegistryService,
      createDatasetService,
      gatewayService({ ...gatewayOptionsOf({} as never), LATHE_GATEWAY_HTTP_PORT: 0, LATHE_GATEWAY_THREADS: 1, LATHE_GATEWAY_CONTEXT_SIZE: 512 }, { onHttpListening: (u) => (gatewayUrl = u) }),
      evaluatorService(options(0)),
    ],
  });
  evaluator = createClient(EvaluatorServiceClient, t.address, { apiKey: testKeys.acme });
  bus = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
  await bus.subscribe({ durable: "observer", subjects: ["lathe.evaluator.v1.>"], handler: async (d) => void seen.push(d) });
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
    await uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>(
      (cb) => registry.uploadAdapterVersion(cb),
      { parent: "models/tiny/adapters/support", adapterVersion: AdapterVersion.fromPartial({ description: "test" }), allowMissing: true, requestId: "" },
      join(dir, "support"),
    );
  } finally {
    registry.close();
  }
  const datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(datasets, "createDataset", { datasetId: "support", dataset: Dataset.fromPartial({ displayName: "Support" }), requestId: "" });
    const raw = await new Promise<string>((resolve, reject) => {
      const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
      c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/support" }) });
      c.write({ chunk: Buffer.from(supportRows(30)) });
      c.end();
    });
    const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
    trainSet = split.datasetVersion!.name;
    evalSet = split.evalDatasetVersion!.name;
  } finally {
    datasets.close();
  }
}, 120_000);

afterAll(async () => {
  evaluator?.close();
  await bus?.close();
  await t?.stop();
});

/** A worker platform: only the evaluator, on the API platform's database, bus and artifacts, generating through its gateway. */
function startWorker(): Promise<RunningPlatform> {
  const base = t.platform.deps.config;
  const config = loadConfig(baseConfigSchema, {
    LATHE_GRPC_HOST: "127.0.0.1",
    LATHE_GRPC_PORT: "0",
    LATHE_PG_URL: t.pgUrl,
    LATHE_NATS_URL: t.nats?.url,
    LATHE_EVENTS_PREFIX: t.nats?.prefix ?? "",
    LATHE_API_KEYS: `${testKeys.acme}=acme,${testKeys.globex}=globex`,
    LATHE_LOG_LEVEL: process.env["LATHE_TEST_LOG_LEVEL"] ?? "silent",
    LATHE_OUTBOX_POLL_MS: "100",
    LATHE_SHUTDOWN_GRACE_MS: "2000",
    LATHE_DATA_DIR: base.LATHE_DATA_DIR,
    LATHE_ARTIFACTS_DIR: base.LATHE_ARTIFACTS_DIR ?? join(base.LATHE_DATA_DIR, "artifacts"),
    LATHE_REGISTRY_ADDR: t.address,
    LATHE_DATASET_ADDR: t.address,
  });
  return startPlatform({ name: "evaluator-worker", config, factories: [evaluatorService({ ...options(1), LATHE_EVALUATOR_GATEWAY_URL: `${gatewayUrl}/v1` })] });
}

describe("evaluation runs", () => {
  test("what cannot be evaluated is refused when it is asked for, naming the field", async () => {
    const create = (r: EvaluationRun, id = "") => fails(call(evaluator, "createEvaluationRun", { evaluationRunId: id, evaluationRun: r, requestId: "" }));
    expect(await create(run({ candidate: undefined }))).toMatchObject({ code: "INVALID_ARGUMENT", field: "evaluation_run.candidate" });
    expect(await create(run({ candidate: { model: "models/tiny", adapterVersion: "models/other/adapters/a/versions/1" } }))).toMatchObject({ field: "evaluation_run.candidate.adapter_version" });
    expect(await create(run({ evalDatasetVersion: "nope" }))).toMatchObject({ field: "evaluation_run.eval_dataset_version" });
    expect(await create(run({ formatCheck: { kind: FormatKind.FORMAT_KIND_REGEX, pattern: "(", jsonSchema: "" } }))).toMatchObject({ field: "evaluation_run.format_check.pattern" });
    expect(await create(run({ formatCheck: undefined }))).toMatchObject({ field: "evaluation_run.format_check" });
    expect(await create(run({ generationParams: { temperature: 3, stop: [] } }))).toMatchObject({ field: "evaluation_run.generation_params.temperature" });
    expect(await create(run({ baseline: { model: "models/tiny", adapterVersion: "", fewShot: { datasetVersion: trainSet, shots: 40 } } }))).toMatchObject({ field: "evaluation_run.baseline.few_shot.shots" });
    expect(await create(run({}), "Bad_Id")).toMatchObject({ field: "evaluation_run_id" });
    // BERTScore with no encoder named and none configured.
    expect(await create(run({ bertscoreModel: "" }))).toMatchObject({ code: "FAILED_PRECONDITION", field: "evaluation_run.bertscore_model" });
    // The same request_id with another request names the field that differs, as the API spells it.
    await call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({ maxExamples: 1 }), requestId: "reuse" }).then((r) => call(evaluator, "cancelEvaluationRun", { name: r.evaluationRun!.name }));
    const reused = await fails(call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({ maxExamples: 2 }), requestId: "reuse" }));
    expect(reused).toMatchObject({ reason: "REQUEST_ID_REUSED" });
    expect(reused.message).toContain("evaluation_run.max_examples differs");
  });

  test("an adapter against its base: every example answered through the gateway and scored, means with CIs, paired differences, tokens, latency and cost", async () => {
    const worker = await startWorker();
    try {
      const { evaluationRun: created } = await call(evaluator, "createEvaluationRun", { evaluationRunId: "adapter-vs-base", evaluationRun: run({ labels: { kind: "ab" } }), requestId: "r1" });
      expect(created!.state).toBe(EvaluationRun_State.STATE_QUEUED);
      const watched = new Promise<EvaluationRun[]>((resolve, reject) => {
        const out: EvaluationRun[] = [];
        const s = evaluator.watchEvaluationRun({ name: created!.name });
        s.on("data", (m: WatchEvaluationRunResponse) => out.push(m.evaluationRun!));
        s.on("error", (e: Parameters<typeof fromGrpcError>[0]) => reject(fromGrpcError(e)));
        s.on("end", () => resolve(out));
      });
      const r = await settled(created!.name);
      expect(r.error).toBeUndefined();
      expect(r.state).toBe(EvaluationRun_State.STATE_SUCCEEDED);
      const states = (await watched).map((x) => x.state);
      expect(states.at(-1)).toBe(EvaluationRun_State.STATE_SUCCEEDED);
      // The API process sees the worker's changes by polling, so a short QUEUED or RUNNING spell
      // may fall between two reads: what the stream promises is order (queued → running → succeeded)
      // and one terminal state, last.
      expect(states).toEqual([...states].sort((a, b) => a - b));
      expect(states.filter((s) => s === EvaluationRun_State.STATE_SUCCEEDED)).toHaveLength(1);

      expect(r.totalExampleCount).toBe(6);
      expect(r.completedExampleCount).toBe(6);
      expect(r.failedExampleCount).toBe(0);
      expect(r.exampleScoreCount).toBe(6 * 4 * 2);
      expect(r.candidateResults.map((v) => v.metric).sort()).toEqual([1, 2, 3, 4]);
      for (const v of [...r.candidateResults, ...r.baselineResults]) {
        expect(v.exampleCount).toBe(6);
        expect(v.confidenceInterval!.lower).toBeLessThanOrEqual(v.value + 1e-12);
        expect(v.confidenceInterval!.upper).toBeGreaterThanOrEqual(v.value - 1e-12);
        expect(v.confidenceInterval!.level).toBe(0.95);
      }
      expect(r.differences).toHaveLength(4);
      for (const d of r.differences) {
        expect(d.exampleCount).toBe(6);
        expect(d.winCount + d.lossCount + d.tieCount).toBe(6);
        expect(d.meanDifference).toBeCloseTo(d.candidateValue - d.baselineValue, 12);
      }
      expect(r.bertscoreModelDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(r.bertscoreLayer).toBe(1);

      // Each stored answer is the gateway's answer to that prompt, and its ROUGE-L is rouge_score's.
      const examples = await predictions(r.name);
      expect(examples.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5]);
      const e0 = examples[0]!;
      const turns = e0.prompt.split("\n").map((l) => ({ role: l.slice(0, l.indexOf(":")), content: l.slice(l.indexOf(":") + 2) }));
      expect(e0.candidate!.text).toBe(await direct("tiny:support@1", turns));
      expect(e0.baseline!.text).toBe(await direct("tiny", turns));
      for (const e of examples) {
        const rouge = e.candidate!.scores.find((s) => s.metric === Metric.METRIC_ROUGE_L)!.value;
        expect(rouge).toBeCloseTo(rougeScore(e.reference, e.candidate!.text, { types: ["rougeL"], useStemmer: true }).rougeL.fmeasure, 12);
        expect(e.candidate!.scores.find((s) => s.metric === Metric.METRIC_FORMAT_COMPLIANCE)!.value).toBe(e.candidate!.text.includes("\n") ? 0 : 1);
      }

      // Tokens as the gateway counted them, latency percentiles, and cost at the configured prices.
      const c = r.candidateServing!;
      expect(c.answerCount).toBe(6);
      expect(c.promptTokens).toBe(examples.reduce((s, e) => s + e.candidate!.promptTokens, 0));
      expect(c.completionTokens).toBe(examples.reduce((s, e) => s + e.candidate!.completionTokens, 0));
      expect(c.latencyP95Ms).toBeGreaterThanOrEqual(c.latencyP50Ms);
      expect(c.latencyP50Ms).toBeGreaterThan(0);
      expect(c.costPer1000Answers).toBeCloseTo(((c.promptTokens * 0.5 + c.completionTokens * 2) / 1e6) * (1000 / 6), 9);

      // The same request_id returns the same run.
      expect((await call(evaluator, "createEvaluationRun", { evaluationRunId: "adapter-vs-base", evaluationRun: run({ labels: { kind: "ab" } }), requestId: "r1" })).evaluationRun!.name).toBe(r.name);
      await waitFor(() => seen.some((d) => d.subject.endsWith("evaluation_completed")), { timeoutMs: 10_000 });
      const completed = EvaluationCompleted.decode(seen.find((d) => d.subject.endsWith("evaluation_completed"))!.data);
      expect(completed).toMatchObject({ evaluationRun: r.name, candidateAdapterVersion: "models/tiny/adapters/support/versions/1", baselineModel: "models/tiny", exampleCount: 6 });
      expect(completed.differences).toHaveLength(4);
      expect((await call(evaluator, "listEvaluationRuns", { pageSize: 0, pageToken: "", filter: 'labels.kind = "ab"' })).evaluationRuns.map((x) => x.name)).toEqual([r.name]);
    } finally {
      await worker.stop();
    }
  }, 180_000);

  test("a few-shot baseline shows three training examples, none from the eval set; its cost is set beside the candidate's", async () => {
    const worker = await startWorker();
    try {
      const { evaluationRun } = await call(evaluator, "createEvaluationRun", {
        evaluationRunId: "few-shot",
        evaluationRun: run({ metrics: [Metric.METRIC_ROUGE_L], formatCheck: undefined, bertscoreModel: "", baseline: { model: "models/tiny", adapterVersion: "", fewShot: { datasetVersion: trainSet, shots: 3, seed: 7 } } }),
        requestId: "",
      });
      const r = await settled(evaluationRun!.name);
      expect(r.state).toBe(EvaluationRun_State.STATE_SUCCEEDED);
      const examples = await predictions(r.name);
      const evalQuestions = new Set(examples.map((e) => e.prompt.split("\n").find((l) => l.startsWith("user: "))));
      // The baseline's prompt: the system turn, three solved examples, then the question.
      const fewShotPrompt = (e: EvaluationExample) => e.baseline!.promptTokens;
      for (const e of examples) expect(fewShotPrompt(e)).toBeGreaterThan(e.candidate!.promptTokens);
      expect(r.baselineServing!.promptTokens).toBeGreaterThan(r.candidateServing!.promptTokens * 2);
      expect(r.baselineServing!.costPer1000Answers).toBeGreaterThan(r.candidateServing!.costPer1000Answers!);
      // The shots are training rows: none of their questions is an eval question.
      const db = new pg.Pool({ connectionString: t.pgUrl, max: 1 });
      const { rows } = await db.query<{ prompt: { baseline: { role: string; content: string }[] } }>("select prompt from evaluator.examples where run_id = 'few-shot' order by idx").finally(() => db.end());
      for (const row of rows) {
        const users = row.prompt.baseline.filter((x) => x.role === "user").map((x) => `user: ${x.content}`);
        expect(users).toHaveLength(4);
        expect(row.prompt.baseline[0]!.role).toBe("system");
        for (const shot of users.slice(0, 3)) expect(evalQuestions.has(shot)).toBe(false);
        expect(evalQuestions.has(users[3]!)).toBe(true);
      }
    } finally {
      await worker.stop();
    }
  }, 180_000);

  test("mean token accuracy: eval loss, perplexity and accuracy of the references by teacher forcing, equal to the engine's evalLoss; a few-shot prompt's shots are not scored", async () => {
    const worker = await startWorker();
    try {
      const { evaluationRun } = await call(evaluator, "createEvaluationRun", {
        evaluationRunId: "teacher-forcing",
        evaluationRun: run({ metrics: [Metric.METRIC_MEAN_TOKEN_ACCURACY], formatCheck: undefined, bertscoreModel: "", baseline: { model: "models/tiny", adapterVersion: "", fewShot: { datasetVersion: trainSet, shots: 2, seed: 5 } } }),
        requestId: "",
      });
      const r = await settled(evaluationRun!.name);
      expect(r.error).toBeUndefined();
      expect(r.state).toBe(EvaluationRun_State.STATE_SUCCEEDED);
      const examples = await predictions(r.name);
      // The same examples as JSONL rows (system, user, reference answer), scored by the engine's evalLoss with the adapter.
      const file = join(dir, "teacher-forcing.jsonl");
      writeFileSync(file, examples.map((e) => JSON.stringify({ messages: [...e.prompt.split("\n").map((l) => ({ role: l.slice(0, l.indexOf(":")), content: l.slice(l.indexOf(":") + 2) })), { role: "assistant", content: e.reference }] })).join("\n") + "\n");
      const direct = await evalLoss(join(dir, "tiny"), file, { numThreads: 1, adapterDir: join(dir, "support"), maxSeqLength: 512 });
      const c = r.candidateLikelihood!;
      expect(c.exampleCount).toBe(6);
      expect(c.tokenCount).toBe(direct.tokens);
      expect(c.evalLoss).toBeCloseTo(direct.loss, 4);
      expect(c.perplexity).toBeCloseTo(Math.exp(c.evalLoss), 9);
      expect(c.meanTokenAccuracy).toBeCloseTo(direct.meanTokenAccuracy, 9);
      expect(c.truncatedExampleCount).toBe(0);
      // Per example: the metric is that example's share; its loss and tokens are stored with the answer.
      const perExample = examples.map((e) => e.candidate!);
      expect(perExample.reduce((n, p) => n + p.referenceTokenCount, 0)).toBe(direct.tokens);
      expect(perExample.reduce((n, p) => n + p.referenceLoss!, 0) / direct.tokens).toBeCloseTo(direct.loss, 4);
      expect(r.candidateResults.map((v) => v.metric)).toEqual([Metric.METRIC_MEAN_TOKEN_ACCURACY]);
      // The few-shot baseline scores the same reference tokens: its shots' answers are prompt.
      expect(r.baselineLikelihood!.tokenCount).toBe(direct.tokens);
      expect(r.differences.map((d) => d.metric)).toEqual([Metric.METRIC_MEAN_TOKEN_ACCURACY]);
    } finally {
      await worker.stop();
    }
  }, 180_000);

  test("an LLM judge asked in both orders: wins only when both orders agree, verdicts and replies kept per example", async () => {
    // A hosted judge (outside this machine) stands in as a small OpenAI-compatible server: it prefers the longer answer, in varied reply formats.
    const replies = ["A", "**B**", "Tie.", "[[A]]"];
    const judge = await startOpenAiUpstream({
      models: ["judge-1"],
      apiKey: "judge-key",
      answer: (n, body) => {
        const user = String((body["messages"] as { content: string }[])[1]!.content);
        const a = user.slice(user.indexOf("# Answer A\n") + 11, user.indexOf("\n\n# Answer B\n"));
        const b = user.slice(user.indexOf("# Answer B\n") + 11, user.lastIndexOf("\n\nWhich answer"));
        const pick = a.length > b.length ? 0 : a.length < b.length ? 1 : 2;
        return replies[pick === 0 ? (n % 2 === 0 ? 0 : 3) : pick]!;
      },
    });
    process.env["LATHE_TEST_JUDGE_KEY"] = "judge-key";
    const worker = await startWorker();
    try {
      const refused = await fails(call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({ baseline: undefined, judge: { model: "judge-1", baseUrl: judge.url, apiKeySecret: "", criteria: "" } }), requestId: "" }));
      expect(refused).toMatchObject({ code: "INVALID_ARGUMENT", field: "evaluation_run.judge" });
      expect(await fails(call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({ judge: { model: "judge-1", baseUrl: "ftp://x", apiKeySecret: "", criteria: "" } }), requestId: "" }))).toMatchObject({ field: "evaluation_run.judge.base_url" });
      expect(await fails(call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({ judge: { model: "judge-1", baseUrl: judge.url, apiKeySecret: "judge-key", criteria: "" } }), requestId: "" }))).toMatchObject({ field: "evaluation_run.judge.api_key_secret" });

      const { evaluationRun } = await call(evaluator, "createEvaluationRun", {
        evaluationRunId: "judged",
        evaluationRun: run({ metrics: [Metric.METRIC_ROUGE_L], formatCheck: undefined, bertscoreModel: "", judge: { model: "judge-1", baseUrl: `${judge.url}/`, apiKeySecret: "env:LATHE_TEST_JUDGE_KEY", criteria: "Prefer the longer answer." } }),
        requestId: "",
      });
      const r = await settled(evaluationRun!.name);
      expect(r.error).toBeUndefined();
      const examples = await predictions(r.name);
      const expected = examples.map((e) => Math.sign(e.candidate!.text.length - e.baseline!.text.length));
      const jr = r.judgeResult!;
      expect(jr.model).toBe("judge-1");
      expect(jr.exampleCount).toBe(6);
      expect([jr.winCount, jr.lossCount, jr.tieCount]).toEqual([expected.filter((x) => x > 0).length, expected.filter((x) => x < 0).length, expected.filter((x) => x === 0).length]);
      expect(jr.disagreementCount).toBe(0);
      expect(jr.unreadableCount).toBe(0);
      expect(jr.winRate).toBeCloseTo((jr.winCount + jr.tieCount / 2) / 6, 12);
      expect(jr.confidenceInterval!.lower).toBeLessThanOrEqual(jr.winRate);
      for (const [i, e] of examples.entries()) {
        expect(e.judgeVerdict).toBe(expected[i]! > 0 ? JudgeVerdict.JUDGE_VERDICT_CANDIDATE : expected[i]! < 0 ? JudgeVerdict.JUDGE_VERDICT_BASELINE : JudgeVerdict.JUDGE_VERDICT_TIE);
        expect(e.judgeReplies).toHaveLength(2);
      }
      // Two askings per example, with the key read from the environment, the criteria in the instructions, the answers in both orders.
      const asked = judge.requests.filter((q) => q.path === "/v1/chat/completions");
      expect(asked).toHaveLength(12);
      for (const q of asked) expect(q.headers.authorization).toBe("Bearer judge-key");
      const bodies = asked.map((q) => q.body as { messages: { content: string }[]; temperature: number });
      expect(bodies[0]!.messages[0]!.content).toContain("Prefer the longer answer.");
      expect(bodies.every((b) => b.temperature === 0)).toBe(true);
      const e0 = examples[0]!;
      const orders = bodies.filter((b) => b.messages[1]!.content.includes(e0.reference) && b.messages[1]!.content.includes(e0.prompt.split("\n").at(-1)!.slice(6)));
      expect(orders.map((b) => b.messages[1]!.content.indexOf(`# Answer A\n${e0.candidate!.text}\n`) >= 0).sort()).toEqual([false, true]);
    } finally {
      await worker.stop();
      await judge.close();
      delete process.env["LATHE_TEST_JUDGE_KEY"];
    }
  }, 180_000);

  test("a worker stopped midway: the next one resumes the run without generating or scoring a stored answer again", async () => {
    const first = await startWorker();
    const { evaluationRun } = await call(evaluator, "createEvaluationRun", {
      evaluationRunId: "resumed",
      evaluationRun: run({ metrics: [Metric.METRIC_ROUGE_L], formatCheck: undefined, bertscoreModel: "", generationParams: { temperature: 0, maxTokens: 48, stop: [] } }),
      requestId: "",
    });
    const name = evaluationRun!.name;
    await waitFor(async () => (await call(evaluator, "getEvaluationRun", { name })).evaluationRun!.exampleScoreCount >= 2, { timeoutMs: 120_000, intervalMs: 50 });
    await first.stop();
    const db = new pg.Pool({ connectionString: t.pgUrl, max: 1 });
    try {
      const before = (await db.query<{ side: string; idx: number; create_time: Date }>("select side, idx, create_time from evaluator.predictions where run_id = 'resumed'")).rows;
      expect(before.length).toBeGreaterThanOrEqual(2);
      expect(before.length).toBeLessThan(12);
      expect((await call(evaluator, "getEvaluationRun", { name })).evaluationRun!.state).toBe(EvaluationRun_State.STATE_RUNNING);
      const second = await startWorker();
      try {
        const r = await settled(name);
        expect(r.state).toBe(EvaluationRun_State.STATE_SUCCEEDED);
        expect(r.completedExampleCount).toBe(6);
      } finally {
        await second.stop();
      }
      const after = (await db.query<{ side: string; idx: number; create_time: Date }>("select side, idx, create_time from evaluator.predictions where run_id = 'resumed'")).rows;
      expect(after).toHaveLength(12);
      for (const b of before) expect(after.find((a) => a.side === b.side && a.idx === b.idx)!.create_time.getTime()).toBe(b.create_time.getTime());
    } finally {
      await db.end();
    }
  }, 240_000);

  test("compare two runs on the same examples; cancel; another tenant sees none of it", async () => {
    const cmp = await call(evaluator, "compareEvaluationRuns", { candidateRun: "evaluationRuns/adapter-vs-base", baselineRun: "evaluationRuns/resumed", metrics: [Metric.METRIC_ROUGE_L], bootstrapSamples: 500, confidenceLevel: 0.9, seed: 3 });
    expect(cmp.pairedExampleCount).toBe(6);
    expect(cmp.differences).toHaveLength(1);
    expect(cmp.differences[0]!.confidenceInterval!.level).toBe(0.9);
    expect(cmp.differences[0]!.bootstrapSamples).toBe(500);

    const { evaluationRun } = await call(evaluator, "createEvaluationRun", { evaluationRunId: "", evaluationRun: run({}), requestId: "" });
    const cancelled = await call(evaluator, "cancelEvaluationRun", { name: evaluationRun!.name });
    expect(cancelled.evaluationRun!.state).toBe(EvaluationRun_State.STATE_CANCELLED);
    expect(await fails(call(evaluator, "cancelEvaluationRun", { name: evaluationRun!.name }))).toMatchObject({ code: "FAILED_PRECONDITION" });

    const globex = createClient(EvaluatorServiceClient, t.address, { apiKey: testKeys.globex });
    try {
      expect(await fails(call(globex, "getEvaluationRun", { name: "evaluationRuns/adapter-vs-base" }))).toMatchObject({ code: "NOT_FOUND" });
      expect((await call(evaluator, "listEvaluationRuns", { pageSize: 0, pageToken: "", filter: 'candidate.model = "models/tiny"' })).evaluationRuns[0]!.name).toBe(evaluationRun!.name);
    expect((await call(globex, "listEvaluationRuns", { pageSize: 0, pageToken: "", filter: "" })).evaluationRuns).toEqual([]);
    } finally {
      globex.close();
    }
  });
});
