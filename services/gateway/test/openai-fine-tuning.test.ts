import { mkdtempSync, writeFileSync, createReadStream } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { call, createClient } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
// The gateway's package does not depend on these two (yet): they are taken from their builds.
import { createDatasetService } from "@lathe/dataset";
import { trainerService } from "@lathe/trainer";
import { gatewayOptionsOf, gatewayService } from "../src/index.js";

/*
 * OpenAI's fine-tuning API on the gateway, driven by the official `openai` client as a script
 * written for OpenAI would drive it (only the base URL and the key differ), on a platform with
 * the registry, the dataset service, the trainer (one worker) and the gateway.
 */

let t: TestPlatform;
let dir: string;
let client: OpenAI;
let globex: OpenAI;

/** A small support-desk set in OpenAI's chat format. */
function chatJsonl(n: number, from = 0): string {
  const products = ["router", "laptop", "phone", "printer", "monitor"];
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const p = products[i % products.length]!;
    return JSON.stringify({
      messages: [
        { role: "system", content: "You are the support desk of Lathe Hardware." },
        { role: "user", content: `My ${p} stopped working this morning (case ${200 + i}). What should I do?` },
        { role: "assistant", content: `Unplug the ${p}, wait thirty seconds and plug it in again. If case ${200 + i} is not solved, reply here.` },
      ],
    });
  }).join("\n");
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lathe-gateway-ft-"));
  await writeTinyModel(join(dir, "tiny"), { seed: 1 });
  let url = "";
  t = await startTestPlatform({
    env: { LATHE_IMPORT_ROOTS: dir },
    factories: [
      createRegistryService,
      createDatasetService,
      trainerService({ LATHE_TRAINER_WORKERS: 1, LATHE_TRAINER_THREADS: 1, LATHE_TRAINER_POLL_MS: 100, LATHE_TRAINER_LEASE_MS: 5000 }),
      gatewayService({ ...gatewayOptionsOf({} as never), LATHE_GATEWAY_HTTP_PORT: 0, LATHE_GATEWAY_THREADS: 1, LATHE_GATEWAY_CONTEXT_SIZE: 256 }, { onHttpListening: (u) => (url = u) }),
    ],
  });
  const registry = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
  try {
    await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
  } finally {
    registry.close();
  }
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.acme, maxRetries: 0 });
  globex = new OpenAI({ baseURL: `${url}/v1`, apiKey: testKeys.globex, maxRetries: 0 });
  writeFileSync(join(dir, "train.jsonl"), chatJsonl(10));
  writeFileSync(join(dir, "valid.jsonl"), chatJsonl(3, 10));
  writeFileSync(join(dir, "broken.jsonl"), [chatJsonl(1), '{"messages": [{"role": "user", "content": "no answer"}', chatJsonl(1, 1), '{"prompt": 3}'].join("\n"));
}, 120_000);

afterAll(async () => {
  await t?.stop();
});

const terminal = ["succeeded", "failed", "cancelled"];

describe("OpenAI's fine-tuning API through the openai client", () => {
  let jobId = "";
  let trainingFile = "";

  test("a script written for OpenAI: upload, create, poll to succeeded, events, checkpoints, results file, chat with the fine-tuned model", async () => {
    // --- the script, as OpenAI's docs write it ---
    const training = await client.files.create({ file: createReadStream(join(dir, "train.jsonl")), purpose: "fine-tune" });
    const validation = await client.files.create({ file: createReadStream(join(dir, "valid.jsonl")), purpose: "fine-tune" });
    let job = await client.fineTuning.jobs.create({
      model: "tiny",
      training_file: training.id,
      validation_file: validation.id,
      suffix: "support",
      seed: 7,
      metadata: { team: "support", "lathe.lora_r": "4", "lathe.lora_alpha": "8", "lathe.target_modules": "q_proj,v_proj,down_proj,lm_head" },
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 50 } } },
    });
    while (!terminal.includes(job.status)) {
      await new Promise((r) => setTimeout(r, 250));
      job = await client.fineTuning.jobs.retrieve(job.id);
    }
    const events = [];
    for await (const e of client.fineTuning.jobs.listEvents(job.id, { limit: 100 })) events.push(e);
    const checkpoints = (await client.fineTuning.jobs.checkpoints.list(job.id)).data;
    const results = await (await client.files.content(job.result_files[0]!)).text();
    const answer = await client.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: "user", content: "My router stopped working this morning. What should I do?" }], max_tokens: 8, temperature: 0 });
    // --- end of the script ---

    jobId = job.id;
    trainingFile = training.id;
    expect(training).toMatchObject({ object: "file", purpose: "fine-tune", filename: "train.jsonl", status: "processed" });
    expect(training.bytes).toBe(chatJsonl(10).length);
    expect(job.error).toBeNull();
    expect(job).toMatchObject({
      object: "fine_tuning.job",
      status: "succeeded",
      model: "tiny",
      training_file: training.id,
      validation_file: validation.id,
      user_provided_suffix: "support",
      seed: 7,
      organization_id: "acme",
      metadata: { team: "support" },
      hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 50 },
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 50 } } },
    });
    expect(job.id).toMatch(/^ftjob-[0-9a-f]{24}$/);
    expect(job.fine_tuned_model).toBe(`ft:tiny:acme:support:${job.id.slice("ftjob-".length)}`);
    expect(job.trained_tokens).toBeGreaterThan(0);
    expect(job.finished_at).toBeGreaterThanOrEqual(job.created_at);

    // Events, newest first: the lifecycle and a metrics event per step (3 steps an epoch, 2 epochs).
    const messages = events.map((e) => e.message).reverse();
    expect(messages[0]).toBe(`Validating training file: ${training.id} and validation file: ${validation.id}`);
    expect(messages).toContain("Files validated, moving job to queued state");
    expect(messages).toContain("Fine-tuning job started");
    expect(messages.at(-1)).toBe("The job has successfully completed");
    expect(messages).toContain(`New fine-tuned model created: ${job.fine_tuned_model}`);
    const metrics = events.filter((e) => e.type === "metrics").reverse();
    expect(metrics.map((e) => (e.data as { step: number }).step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const m of metrics) expect(m.data).toMatchObject({ total_steps: 6, train_loss: expect.any(Number) });

    // Checkpoints, newest first, with the losses the trainer measured (no token accuracy: omitted).
    expect(checkpoints.map((c) => c.step_number)).toEqual([6, 3]);
    expect(checkpoints[0]).toMatchObject({ object: "fine_tuning.job.checkpoint", fine_tuning_job_id: job.id, fine_tuned_model_checkpoint: `${job.fine_tuned_model}:ckpt-step-6` });
    expect(checkpoints[0]!.metrics.train_loss).toEqual(expect.any(Number));
    expect(checkpoints[0]!.metrics.valid_loss).toEqual(expect.any(Number));
    expect(checkpoints[0]!.metrics).not.toHaveProperty("train_mean_token_accuracy");

    // The results file: base64 of the step metrics as CSV, as OpenAI serves it.
    const csv = Buffer.from(results, "base64").toString("utf8").trim().split("\n");
    expect(csv[0]).toBe("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy");
    expect(csv.slice(1).map((l) => Number(l.split(",")[0]))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Number(csv[1]!.split(",")[1])).toBe((metrics[0]!.data as { train_loss: number }).train_loss);
    const resultFile = await client.files.retrieve(job.result_files[0]!);
    expect(resultFile).toMatchObject({ purpose: "fine-tune-results", status: "processed" });

    // The fine-tuned model answers, and is listed.
    expect(answer.model).toBe(job.fine_tuned_model);
    expect(answer.choices[0]!.message.content).toEqual(expect.any(String));
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    expect(models).toContain(job.fine_tuned_model);

    // The uploaded bytes come back as they were sent.
    expect(await (await client.files.content(training.id)).text()).toBe(chatJsonl(10));
  }, 90_000);

  test("a job can be listed (metadata filter, after) and a queued one cancelled", async () => {
    const other = await client.fineTuning.jobs.create({ model: "tiny", training_file: trainingFile, hyperparameters: { n_epochs: 1, batch_size: 2 }, metadata: { team: "billing" } });
    expect(["validating_files", "queued", "running"]).toContain(other.status);
    const cancelled = await client.fineTuning.jobs.cancel(other.id);
    expect(cancelled.status).toBe("cancelled");
    const again = await client.fineTuning.jobs.cancel(other.id).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(OpenAI.BadRequestError);

    const all = (await client.fineTuning.jobs.list()).data.map((j) => j.id);
    expect(all).toEqual([other.id, jobId]);
    const support = (await client.fineTuning.jobs.list({ metadata: { team: "support" } })).data.map((j) => j.id);
    expect(support).toEqual([jobId]);
    const page = await client.fineTuning.jobs.list({ limit: 1 });
    expect(page.data.map((j) => j.id)).toEqual([other.id]);
    expect(page.has_more).toBe(true);
    expect((await client.fineTuning.jobs.list({ after: other.id })).data.map((j) => j.id)).toEqual([jobId]);
  }, 60_000);

  test("a file that fails the checks is refused as OpenAI refuses one, naming its lines", async () => {
    const err = await client.files.create({ file: createReadStream(join(dir, "broken.jsonl")), purpose: "fine-tune" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const e = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(e.status).toBe(400);
    expect(e.type).toBe("invalid_request_error");
    expect(e.code).toBe("invalid_file_format");
    expect(e.param).toBe("file");
    expect(e.message).toMatch(/lines 2, 4/);
    // Nothing is left of it.
    expect((await client.files.list()).data.map((f) => f.filename)).not.toContain("broken.jsonl");

    const notJsonl = await client.files.create({ file: await OpenAI.toFile(Buffer.from(chatJsonl(2)), "train.csv"), purpose: "fine-tune" }).catch((x: unknown) => x);
    expect(notJsonl).toMatchObject({ status: 400, code: "invalid_file_format", param: "file" });
  });

  test("a bad hyperparameter, an unknown Lathe metadata key and a missing file are OpenAI-shaped 400s naming the field", async () => {
    const create = (body: Record<string, unknown>) => client.fineTuning.jobs.create({ model: "tiny", training_file: trainingFile, ...body } as never).catch((e: unknown) => e);
    expect(await create({ method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 0 } } } })).toMatchObject({
      status: 400,
      type: "invalid_request_error",
      code: "invalid_hyperparameter",
      param: "method.supervised.hyperparameters.n_epochs",
    });
    expect(await create({ hyperparameters: { learning_rate_multiplier: -1 } })).toMatchObject({ status: 400, param: "hyperparameters.learning_rate_multiplier" });
    expect(await create({ hyperparameters: { batch_size: "big" } })).toMatchObject({ status: 400, param: "hyperparameters.batch_size" });
    expect(await create({ metadata: { "lathe.lora_rank": "8" } })).toMatchObject({ status: 400, code: "invalid_metadata", param: "metadata.lathe.lora_rank" });
    expect(await create({ training_file: "file-nope" })).toMatchObject({ status: 400, param: "training_file" });
    expect(await create({ model: "no-such-model" })).toMatchObject({ status: 400, code: "model_not_available", param: "model" });
    expect(await create({ method: { type: "dpo" } })).toMatchObject({ status: 400, param: "method.type" });
    // None of them made a job.
    expect((await client.fineTuning.jobs.list()).data).toHaveLength(2);
  });

  test("tenant B sees none of tenant A's files, jobs, events or fine-tuned models", async () => {
    const job = await client.fineTuning.jobs.retrieve(jobId);
    expect((await globex.files.list()).data).toEqual([]);
    expect((await globex.fineTuning.jobs.list()).data).toEqual([]);
    expect(await globex.files.retrieve(trainingFile).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.files.content(trainingFile).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.files.delete(trainingFile).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.fineTuning.jobs.retrieve(jobId).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.fineTuning.jobs.cancel(jobId).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.fineTuning.jobs.listEvents(jobId).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.fineTuning.jobs.checkpoints.list(jobId).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
    expect(await globex.fineTuning.jobs.create({ model: "tiny", training_file: trainingFile }).catch((e: unknown) => e)).toMatchObject({ status: 400, param: "training_file" });
    const chat = await globex.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: "user", content: "hi" }], max_tokens: 2 }).catch((e: unknown) => e);
    expect(chat).toMatchObject({ status: 404, code: "model_not_found" });
  });

  test("deleting a file removes it and its dataset", async () => {
    const f = await client.files.create({ file: await OpenAI.toFile(Buffer.from(chatJsonl(3)), "extra.jsonl"), purpose: "fine-tune" });
    expect(await client.files.delete(f.id)).toMatchObject({ id: f.id, object: "file", deleted: true });
    expect(await client.files.retrieve(f.id).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
  });
});
