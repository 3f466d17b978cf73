import { baseConfigSchema, call, createClient, JetStreamBus, loadConfig, startPlatform, type AppError, type Delivery, type RunningPlatform } from "@lathe/kit";
import { createDatasetService } from "@lathe/dataset";
import { Dataset, DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { ExamplesPublished, GenerationJobSucceeded } from "@lathe/proto/lathe/events/v1/synthgen_events";
import { GenerationJob, GenerationJob_State, ReviewItem_State, SynthGenServiceClient, type ReviewItem } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { ChatRole } from "@lathe/proto/lathe/type/v1/chat";
import { createRegistryService } from "@lathe/registry";
import { startOpenAiUpstream, startTestPlatform, testKeys, waitFor, type OpenAiUpstream, type TestPlatform } from "@lathe/testing";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { plantedSecrets } from "../../../libs/kit/test/planted-secrets.js";
import { synthgenOptionsOf, synthgenService, type SynthgenOptions } from "../src/index.js";

/* Generation jobs against a stand-in for a hosted teacher: checked, deduplicated, reviewed, published; retries, budgets, restarts. */

const KEY = plantedSecrets["planted teacher API key"];
const PRICES = { teacher: { input: 2, output: 8 } };
let t: TestPlatform;
let worker: RunningPlatform;
let synth: SynthGenServiceClient;
let datasets: DatasetServiceClient;
let bus: JetStreamBus;
const seen: Delivery[] = [];

const options = (workers: number): SynthgenOptions => ({
  ...synthgenOptionsOf({} as never),
  LATHE_SYNTHGEN_WORKERS: workers,
  LATHE_SYNTHGEN_POLL_MS: 100,
  LATHE_SYNTHGEN_LEASE_MS: 1500,
  LATHE_SYNTHGEN_BACKOFF_MS: 5,
  LATHE_SYNTHGEN_ATTEMPTS: 4,
  LATHE_SYNTHGEN_PRICES: JSON.stringify(PRICES),
});

const products = ["router", "laptop", "phone", "printer", "monitor", "camera", "tablet", "speaker", "watch", "drone", "scanner", "console", "kettle", "heater", "fridge", "oven"];
/** A good example, different for each n in words, not only in a number. */
const good = (n: number) => ({
  messages: [
    { role: "user", content: `My ${products[n % products.length]} ${["beeps", "flickers", "overheats", "freezes"][n % 4]} after ${["updates", "storms", "travel", "cleaning"][Math.floor(n / 4) % 4]}. Help?` },
    { role: "assistant", content: `Unplug the ${products[n % products.length]}, wait ${n + 10} seconds, plug it back in, then ${["reset it to factory settings", "update its firmware", "call our support line", "check the power cable"][n % 4]}.` },
  ],
});
const FEW_SHOT = [good(100), good(101), good(102)];
const fewShotExamples = FEW_SHOT.map((e) => ({ messages: e.messages.map((m) => ({ role: m.role === "user" ? ChatRole.CHAT_ROLE_USER : ChatRole.CHAT_ROLE_ASSISTANT, content: m.content })) }));
const fails = (p: Promise<unknown>) => p.then(() => expect.unreachable("the call succeeded"), (e: unknown) => e as AppError);

function job(teacherUrl: string, over: Partial<GenerationJob> = {}): GenerationJob {
  return GenerationJob.fromPartial({
    teacher: { baseUrl: teacherUrl, model: "teacher", apiKeySecret: "env:LATHE_TEST_TEACHER_KEY", maxConcurrentRequests: 2 },
    taskDescription: "Answer hardware support questions with one concrete step.",
    fewShotExamples,
    targetCount: 12,
    reviewSampleFraction: 0.25,
    generationParams: { seed: 5, stop: [] },
    ...over,
  });
}

async function settled(name: string): Promise<GenerationJob> {
  return waitFor(
    async () => {
      const j = (await call(synth, "getGenerationJob", { name })).generationJob!;
      return [GenerationJob_State.STATE_SUCCEEDED, GenerationJob_State.STATE_FAILED, GenerationJob_State.STATE_CANCELLED].includes(j.state) ? j : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 50, what: `${name} to end` },
  );
}

async function items(name: string, state = ReviewItem_State.STATE_UNSPECIFIED): Promise<ReviewItem[]> {
  return (await call(synth, "listReviewItems", { parent: name, pageSize: 1000, pageToken: "", state })).reviewItems;
}

beforeAll(async () => {
  process.env["LATHE_TEST_TEACHER_KEY"] = KEY;
  // The API platform generates nothing itself: a worker platform does, so that one can be stopped midway.
  t = await startTestPlatform({ factories: [createRegistryService, createDatasetService, synthgenService(options(0))] });
  worker = await startWorker();
  synth = createClient(SynthGenServiceClient, t.address, { apiKey: testKeys.acme });
  datasets = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme });
  bus = await JetStreamBus.connect({ url: t.nats!.url, prefix: t.nats!.prefix });
  await bus.subscribe({ durable: "observer", subjects: ["lathe.synthgen.v1.>", "lathe.dataset.v1.>"], handler: async (d) => void seen.push(d) });
  await call(datasets, "createDataset", { datasetId: "synth", dataset: Dataset.fromPartial({}), requestId: "" });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  synth?.close();
  datasets?.close();
  await bus?.close();
  await t?.stop();
});

describe("generation jobs", () => {
  let teacher: OpenAiUpstream;
  afterAll(async () => {
    await teacher?.close();
  });

  test("what cannot be generated is refused when asked for, naming the field; the key is never taken in clear", async () => {
    const create = (g: GenerationJob) => fails(call(synth, "createGenerationJob", { generationJobId: "", generationJob: g, requestId: "" }));
    expect(await create(job("not a url"))).toMatchObject({ field: "generation_job.teacher.base_url" });
    expect(await create(job("http://127.0.0.1:1/v1", { teacher: { baseUrl: "http://127.0.0.1:1/v1", model: "m", apiKeySecret: KEY, maxConcurrentRequests: 0, requestsPerMinute: 0 } }))).toMatchObject({ field: "generation_job.teacher.api_key_secret" });
    expect(await create(job("http://127.0.0.1:1/v1", { fewShotExamples: [] }))).toMatchObject({ field: "generation_job.few_shot_examples" });
    expect(await create(job("http://127.0.0.1:1/v1", { targetCount: 0 }))).toMatchObject({ field: "generation_job.target_count" });
    expect(await create(job("http://127.0.0.1:1/v1", { reviewSampleFraction: 1.5 }))).toMatchObject({ field: "generation_job.review_sample_fraction" });
    expect(await create(job("http://127.0.0.1:1/v1", { maxCost: 1, teacher: { baseUrl: "http://127.0.0.1:1/v1", model: "unpriced", apiKeySecret: "", maxConcurrentRequests: 0, requestsPerMinute: 0 } }))).toMatchObject({ field: "generation_job.max_cost" });
  });

  test("12 examples: malformed, failing and duplicate answers dropped by reason, 429s retried, a sample reviewed, the rest published with lineage to the job", async () => {
    // The teacher answers: malformed JSON, a copy of a few-shot example, one with personal data, a
    // repeat of an earlier answer, then good examples.
    const script = (n: number) => {
      if (n === 0) return "Sure! Here is an example: {messages: [";
      if (n === 1) return JSON.stringify(FEW_SHOT[0]);
      if (n === 2) return JSON.stringify({ messages: [{ role: "user", content: "Email me at jordan.planted.leak@example.com about my router" }, { role: "assistant", content: "I will write to you today with the steps to reset your router safely." }] });
      if (n === 4) return JSON.stringify(good(3));
      return JSON.stringify(good(n));
    };
    teacher = await startOpenAiUpstream({ models: ["teacher"], apiKey: KEY, answer: script });
    teacher.failNext(429, 2, 0);
    const { generationJob } = await call(synth, "createGenerationJob", { generationJobId: "support", generationJob: job(teacher.url, { labels: { team: "support" } }), requestId: "g1" });
    expect(generationJob!.state).toBe(GenerationJob_State.STATE_QUEUED);
    const j = await settled(generationJob!.name);
    expect(j.error).toBeUndefined();
    expect(j.state).toBe(GenerationJob_State.STATE_SUCCEEDED);
    const p = j.progress!;
    // Exactly the target: requests in flight count towards it.
    expect(p.acceptedCount).toBe(12);
    expect(Object.fromEntries(p.rejections.map((r) => [r.reason, r.count]))).toMatchObject({ malformed: 1, duplicate_few_shot: 1, pii: 1, duplicate_generated: 1 });
    expect(p.failedCheckCount).toBe(2);
    expect(p.duplicateCount).toBe(2);
    expect(p.generatedCount).toBe(p.acceptedCount + 4);
    expect(p.teacherRequestCount).toBe(p.generatedCount);
    // Tokens as the teacher reported them (its usage), and their cost at the configured prices.
    const answered = teacher.requests.filter((r) => r.path === "/v1/chat/completions");
    // Two 429s were retried: the teacher saw them and every answered request.
    expect(answered.length).toBe(p.teacherRequestCount + 2);
    expect(p.cost).toBeCloseTo((Number(p.promptTokens) * 2 + Number(p.completionTokens) * 8) / 1e6, 12);
    // Every request asked for one example as JSON, with up to three few-shot examples, under the key.
    const body = answered[0]!.body as { response_format: { type: string }; messages: { content: string }[]; temperature: number };
    expect(body.response_format.type).toBe("json_schema");
    expect(body.temperature).toBe(0.9);
    expect(answered.every((r) => r.headers.authorization === `Bearer ${KEY}`)).toBe(true);
    expect(JSON.stringify(j)).not.toContain(KEY);

    // The review sample: 25% of the accepted, all pending.
    const review = await items(j.name);
    expect(review.length).toBe(p.reviewCount);
    expect(review.length).toBeGreaterThan(0);
    expect(review.every((i) => i.state === ReviewItem_State.STATE_PENDING)).toBe(true);
    expect(await fails(call(synth, "publishGenerationJob", { name: j.name, dataset: "datasets/synth", versionId: "", skipPendingReview: false, includeSeedRows: false, requestId: "" }))).toMatchObject({ code: "FAILED_PRECONDITION", reason: "REVIEW_PENDING" });
    // Reject the first with a note; approve the rest, one with a correction.
    const [first, second, ...rest] = review;
    await call(synth, "rejectReviewItem", { name: first!.name, reason: "too generic" });
    if (second) {
      const corrected = { messages: [{ role: ChatRole.CHAT_ROLE_USER, content: "My router blinks red after a storm. Help?" }, { role: ChatRole.CHAT_ROLE_ASSISTANT, content: "Unplug the router for thirty seconds, plug it back in and wait for the green light." }] };
      const approved = (await call(synth, "approveReviewItem", { name: second.name, correctedExample: corrected, note: "clearer" })).reviewItem!;
      expect(approved.state).toBe(ReviewItem_State.STATE_APPROVED);
      expect(approved.originalExample).toBeDefined();
      expect(approved.reviewer).toBe("tenant:acme");
    }
    for (const i of rest) await call(synth, "approveReviewItem", { name: i.name, correctedExample: undefined, note: "" });
    expect(await items(j.name, ReviewItem_State.STATE_PENDING)).toEqual([]);

    const published = await call(synth, "publishGenerationJob", { name: j.name, dataset: "datasets/synth", versionId: "gen1", skipPendingReview: false, includeSeedRows: false, requestId: "p1" });
    expect(published.datasetVersion).toBe("datasets/synth/versions/gen1");
    // The accepted (two requests in flight may both land past the target) less the rejected review item, at most the target.
    const expected = Math.min(p.acceptedCount - 1, 12);
    expect(published.exampleCount).toBe(expected);
    expect(published.generationJob!.publishedDatasetVersion).toBe("datasets/synth/versions/gen1");
    const again = await call(synth, "publishGenerationJob", { name: j.name, dataset: "datasets/synth", versionId: "gen1", skipPendingReview: false, includeSeedRows: false, requestId: "p1" });
    expect(again.datasetVersion).toBe(published.datasetVersion);
    const { datasetVersion } = await call(datasets, "getDatasetVersion", { name: "datasets/synth/versions/gen1" });
    expect(datasetVersion).toMatchObject({ rowCount: expected, generationJob: j.name });
    // Decisions close once published.
    expect(await fails(call(synth, "approveReviewItem", { name: first!.name, correctedExample: undefined, note: "" }))).toMatchObject({ reason: "GENERATION_JOB_PUBLISHED" });

    await waitFor(() => seen.some((d) => d.subject.endsWith("examples_published")), { timeoutMs: 10_000 });
    expect(GenerationJobSucceeded.decode(seen.find((d) => d.subject.endsWith("generation_job_succeeded"))!.data)).toMatchObject({ generationJob: j.name, reviewCount: p.reviewCount });
    expect(ExamplesPublished.decode(seen.find((d) => d.subject.endsWith("examples_published"))!.data)).toMatchObject({ generationJob: j.name, datasetVersion: "datasets/synth/versions/gen1", exampleCount: expected });
    for (const d of seen) expect(Buffer.from(d.data).toString("latin1")).not.toContain(KEY);
  }, 120_000);

  test("500s are retried; a token budget stops the job; with nothing accepted it fails saying which budget", async () => {
    const bad = await startOpenAiUpstream({ models: ["teacher"], apiKey: KEY, answer: () => "not json at all" });
    bad.failNext(500, 2);
    try {
      const { generationJob } = await call(synth, "createGenerationJob", { generationJobId: "", generationJob: job(bad.url, { maxTotalTokens: 200 }), requestId: "" });
      const j = await settled(generationJob!.name);
      expect(j.state).toBe(GenerationJob_State.STATE_FAILED);
      expect(j.error).toMatchObject({ reason: "TOKEN_BUDGET_SPENT" });
      expect(Number(j.progress!.promptTokens) + Number(j.progress!.completionTokens)).toBeGreaterThanOrEqual(200);
      expect(j.progress!.rejections).toEqual([{ reason: "malformed", count: j.progress!.generatedCount }]);
      expect(bad.requests.filter((r) => r.path === "/v1/chat/completions")).toHaveLength(j.progress!.teacherRequestCount + 2);
    } finally {
      await bad.close();
    }
  }, 60_000);

  test("a teacher that stays unreachable fails the job, saying so", async () => {
    const { generationJob } = await call(synth, "createGenerationJob", { generationJobId: "", generationJob: job("http://127.0.0.1:1/v1"), requestId: "" });
    const j = await settled(generationJob!.name);
    expect(j.state).toBe(GenerationJob_State.STATE_FAILED);
    expect(j.error).toMatchObject({ code: "UNAVAILABLE", reason: "TEACHER_UNREACHABLE" });
    expect(j.error!.message).toMatch(/127\.0\.0\.1:1.* does not answer.*after 4 attempts/);
  }, 60_000);

  test("a worker stopped midway: the next one goes on without asking the teacher again for what it answered", async () => {
    const slow = await startOpenAiUpstream({ models: ["teacher"], apiKey: KEY, answer: (n) => JSON.stringify(good(n + 200)) });
    await call(synth, "createGenerationJob", { generationJobId: "resumed", generationJob: job(slow.url, { targetCount: 40, reviewSampleFraction: 0, teacher: { baseUrl: slow.url, model: "teacher", apiKeySecret: "env:LATHE_TEST_TEACHER_KEY", maxConcurrentRequests: 1, requestsPerMinute: 1200 } }), requestId: "" });
    const db = new pg.Pool({ connectionString: t.pgUrl, max: 1 });
    const count = async (sql: string) => Number((await db.query<{ n: string }>(sql)).rows[0]!.n);
    const askedOf = () => slow.requests.filter((r) => r.path === "/v1/chat/completions").length;
    try {
      await waitFor(async () => (await count("select count(*) as n from synthgen.requests where job_id = 'resumed'")) >= 3, { timeoutMs: 30_000 });
      await worker.stop();
      const before = await count("select count(*) as n from synthgen.requests where job_id = 'resumed'");
      // At most the request in flight when it stopped was asked and not kept.
      expect(askedOf() - before).toBeLessThanOrEqual(1);
      const askedBefore = askedOf();
      worker = await startWorker();
      await waitFor(async () => (await db.query<{ state: string }>("select state from synthgen.jobs where job_id = 'resumed'")).rows[0]!.state === "SUCCEEDED", { timeoutMs: 60_000, what: "the resumed job to succeed" });
      const total = await count("select count(*) as n from synthgen.requests where job_id = 'resumed'");
      // The new worker asked only for what was not stored: every request it sent is a new row.
      expect(askedOf() - askedBefore).toBe(total - before);
      expect(await count("select count(*) as n from synthgen.examples where job_id = 'resumed' and rejection is null")).toBeGreaterThanOrEqual(40);
      expect(await count("select count(*) as n from synthgen.examples where job_id = 'resumed'")).toBe(total);
    } finally {
      await db.end();
      await slow.close();
    }
  }, 120_000);
});

/** A worker platform: only synthgen, on the test's database and bus, asking the API platform's dataset service. */
function startWorker(): Promise<RunningPlatform> {
  const config = loadConfig(baseConfigSchema, {
    LATHE_GRPC_HOST: "127.0.0.1",
    LATHE_GRPC_PORT: "0",
    LATHE_PG_URL: t.pgUrl,
    LATHE_NATS_URL: t.nats?.url,
    LATHE_EVENTS_PREFIX: t.nats?.prefix ?? "",
    LATHE_API_KEYS: `${testKeys.acme}=acme`,
    LATHE_LOG_LEVEL: process.env["LATHE_TEST_LOG_LEVEL"] ?? "silent",
    LATHE_OUTBOX_POLL_MS: "100",
    LATHE_SHUTDOWN_GRACE_MS: "2000",
    LATHE_DATA_DIR: t.platform.deps.config.LATHE_DATA_DIR,
    LATHE_DATASET_ADDR: t.address,
  });
  return startPlatform({ name: "synthgen-worker", config, factories: [synthgenService(options(1))] });
}
