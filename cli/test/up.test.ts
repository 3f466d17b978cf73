import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, type AppError } from "@lathe/kit";
import { SynthGenServiceClient } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import { EvaluatorServiceClient, ListEvaluationRunsRequest } from "@lathe/proto/lathe/evaluator/v1/evaluator_service";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { freePort, testNats, testPostgres, type TestPostgres } from "@lathe/testing";
import { checkHealth, serviceNames } from "../src/commands/health.js";
import { runCli, startUp } from "./cli-process.js";
import { ReflectionClient } from "./reflection-client.js";

describe("lathe up (embedded default)", () => {
  let dataDir: string;
  let up: Awaited<ReturnType<typeof startUp>>;
  let conn: string[];
  let modelDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lathe-up-"));
    modelDir = join(dataDir, "tiny-model");
    await writeTinyModel(modelDir);
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())]);
    conn = ["--server", up.address, "--data-dir", dataDir];
  });
  afterAll(() => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("serves all six services, each SERVING on the standard health check", async () => {
    const health = await checkHealth(up.address);
    expect(Object.keys(health)).toHaveLength(6);
    for (const name of serviceNames) expect(health[name], name).toBe("SERVING");
  });

  it("lists every service through server reflection", async () => {
    const r = new ReflectionClient(up.address);
    try {
      expect(await r.listServices()).toEqual(expect.arrayContaining(serviceNames));
    } finally {
      r.close();
    }
  });

  it("lets a client that knows only reflection call RegistryService.ListModels", async () => {
    const created = await runCli(["models", "create", "reflected", "--path", modelDir, ...conn]);
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);

    const r = new ReflectionClient(up.address);
    try {
      const pkg = (await r.packageFor("lathe.registry.v1.RegistryService")) as unknown as {
        lathe: { registry: { v1: { RegistryService: grpc.ServiceClientConstructor } } };
      };
      const client = new pkg.lathe.registry.v1.RegistryService(up.address, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      md.set("authorization", `Bearer ${readFileSync(join(dataDir, "api-key"), "utf8").trim()}`);
      const res = await new Promise<{ models: { name: string; source_uri: string }[] }>((resolve, reject) =>
        (client as unknown as Record<string, (...a: unknown[]) => void>)["ListModels"]!({ page_size: 10 }, md, (err: Error | null, out: never) => (err ? reject(err) : resolve(out))),
      );
      client.close();
      expect(res.models.map((m) => m.name)).toContain("models/reflected");
    } finally {
      r.close();
    }
  });

  it("runs client commands with --json, and errors name what was wrong", async () => {
    const list = await runCli(["models", "list", "--json", ...conn]);
    expect(list.code).toBe(0);
    const parsed = JSON.parse(list.stdout) as { models: { name: string }[] };
    expect(parsed.models.map((m) => m.name)).toContain("models/reflected");

    const got = await runCli(["models", "get", "reflected", "--json", ...conn]);
    expect(JSON.parse(got.stdout)).toMatchObject({ name: "models/reflected" });

    const bad = await runCli(["models", "create", "Not Valid", "--path", modelDir, ...conn]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("model_id");
    expect(bad.stderr).toContain("INVALID_ARGUMENT");

    const missing = await runCli(["models", "get", "nope", ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("models/nope was not found");

    const wrongKey = await runCli(["models", "list", "--server", up.address, "--api-key", "wrong"]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("UNAUTHENTICATED");

    const deleted = await runCli(["models", "delete", "reflected", ...conn]);
    expect(deleted.code).toBe(0);
    expect(deleted.stdout).toContain("deleted models/reflected");
  });

  it("serves every service's API, the evaluator's and the synthetic-data service's included", async () => {
    const apiKey = readFileSync(join(dataDir, "api-key"), "utf8").trim();
    const evaluator = createClient(EvaluatorServiceClient, up.address, { apiKey });
    const synth = createClient(SynthGenServiceClient, up.address, { apiKey });
    try {
      expect((await call(evaluator, "listEvaluationRuns", ListEvaluationRunsRequest.fromPartial({}))).evaluationRuns).toEqual([]);
      expect((await call(synth, "listGenerationJobs", { pageSize: 0, pageToken: "", filter: "" })).generationJobs).toEqual([]);
      const err = await call(synth, "getGenerationJob", { name: "generationJobs/nope" }).catch((e: unknown) => e as AppError);
      expect((err as AppError).code).toBe("NOT_FOUND");
    } finally {
      evaluator.close();
      synth.close();
    }
  });

  it("uploads a dataset, prints its report as JSON, derives a split and lists rows", async () => {
    const file = join(dataDir, "qa.jsonl");
    const row = (i: number) => JSON.stringify({ instruction: `Explain concept number ${i} of the onboarding guide to a new hire, please.`, output: `Concept ${i} is about ${["billing", "support", "shipping", "returns"][i % 4]}: read section ${i} of the guide, then ask your mentor about case ${i * 3}.` });
    writeFileSync(file, [row(1), row(2), row(3), row(4), row(5), "not json", row(6)].join("\n") + "\n");
    const created = await runCli(["datasets", "create", "qa", file, "--json", ...conn]);
    expect(created.stderr).toBe("");
    const out = JSON.parse(created.stdout) as { datasetVersion: { name: string; rowCount: number }; qualityReport: { checkResults: { check: string; failedLines?: number[] }[] } };
    expect(out.datasetVersion).toMatchObject({ name: "datasets/qa/versions/v1", rowCount: 6 });
    expect(out.qualityReport.checkResults.find((c) => c.check === "DATA_CHECK_PARSE")!.failedLines).toEqual([6]);

    const text = await runCli(["datasets", "report", "qa@v1", ...conn]);
    expect(text.stdout).toMatch(/parse\s+1\s+6/);

    const split = await runCli(["datasets", "derive", "qa@v1", "--split", "0.5", "--seed", "3", "--json", ...conn]);
    const made = (JSON.parse(split.stdout) as { datasetVersions: { name: string; rowCount: number }[] }).datasetVersions;
    expect(made.map((v) => v.name)).toEqual(["datasets/qa/versions/v2-train", "datasets/qa/versions/v2-eval"]);
    expect(made[0]!.rowCount + made[1]!.rowCount).toBe(6);

    const rowsOut = await runCli(["datasets", "rows", "qa@v1", "--limit", "2", "--json", ...conn]);
    const rowsJson = JSON.parse(rowsOut.stdout) as { rows: { lineNumber: number; messages: { role: string }[] }[] };
    expect(rowsJson.rows.map((r) => r.lineNumber)).toEqual([1, 2]);
    expect(rowsJson.rows[0]!.messages.map((m) => m.role)).toEqual(["CHAT_ROLE_USER", "CHAT_ROLE_ASSISTANT"]);

    const missing = await runCli(["datasets", "create", "qa", join(dataDir, "nope.jsonl"), ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("nope.jsonl");
  });

  it("imports a model, registers adapter versions, moves and rolls back an alias, prints a card, lineage and downloads", async () => {
    const imported = await runCli(["models", "import", modelDir, "--name", "base", "--json", ...conn]);
    expect(imported.stderr).toBe("");
    expect(JSON.parse(imported.stdout)).toMatchObject({ name: "models/base", architecture: "LlamaForCausalLM" });
    const adapterDirs = [join(dataDir, "lora-1"), join(dataDir, "lora-2")];
    for (const [i, d] of adapterDirs.entries()) await writeTinyAdapter(d, modelDir, { r: 4, seed: i + 1 });
    for (const d of adapterDirs) {
      const r = await runCli(["adapters", "register", "base/support", d, "--label", "intended-use=support replies", ...conn]);
      expect(r.stderr).toBe("");
    }
    const versions = await runCli(["adapters", "versions", "base/support", "--json", ...conn]);
    expect((JSON.parse(versions.stdout) as { adapterVersions: { name: string }[] }).adapterVersions.map((v) => v.name)).toEqual(["models/base/adapters/support/versions/1", "models/base/adapters/support/versions/2"]);
    expect((await runCli(["adapters", "alias", "base/support", "1", "--alias", "production", ...conn])).code).toBe(0);
    expect((await runCli(["adapters", "alias", "base/support", "2", "--alias", "production", "--reason", "v2 is better", ...conn])).code).toBe(0);
    const rolled = await runCli(["adapters", "rollback", "base/support", "--alias", "production", "--reason", "regression", "--json", ...conn]);
    const alias = JSON.parse(rolled.stdout) as { adapterVersion: string; history: { trigger: string }[] };
    expect(alias.adapterVersion).toBe("models/base/adapters/support/versions/1");
    expect(alias.history.map((h) => h.trigger)).toEqual(["ALIAS_MOVE_TRIGGER_MANUAL", "ALIAS_MOVE_TRIGGER_MANUAL", "ALIAS_MOVE_TRIGGER_ROLLBACK"]);
    const card = await runCli(["adapters", "card", "base/support@1", ...conn]);
    expect(card.stdout).toContain("base_model: models/base");
    expect(card.stdout).toContain("support replies");
    const lineage = await runCli(["lineage", "models/base/adapters/support/aliases/production", "--up", "--json", ...conn]);
    expect((JSON.parse(lineage.stdout) as { nodes: { name: string }[] }).nodes.map((n) => n.name)).toEqual(expect.arrayContaining(["models/base/adapters/support/versions/1", "models/base"]));
    const out = join(dataDir, "downloaded");
    const peft = await runCli(["adapters", "download", "base/support@1", "--out", join(out, "peft"), ...conn]);
    expect(peft.stderr).toBe("");
    expect(readFileSync(join(out, "peft", "adapter_config.json"), "utf8")).toContain('"peft_type": "LORA"');
    const gguf = await runCli(["adapters", "download", "base/support@1", "--format", "gguf", "--out", join(out, "gguf"), ...conn]);
    expect(gguf.stderr).toBe("");
    expect(readFileSync(join(out, "gguf", "model.gguf")).subarray(0, 4).toString("latin1")).toBe("GGUF");
  });

  it("keeps its state across a restart and drains on SIGTERM", async () => {
    const again = await runCli(["models", "create", "survivor", "--path", modelDir, ...conn]);
    expect(again.code).toBe(0);
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    expect(up.output()).toContain("stopped");

    const port = Number(up.address.split(":")[1]);
    up = await startUp(["--data-dir", dataDir, "--port", String(port)]);
    const list = await runCli(["models", "list", "--json", ...conn]);
    expect((JSON.parse(list.stdout) as { models: { name: string }[] }).models.map((m) => m.name)).toContain("models/survivor");
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
  });
});

describe("lathe up --pg-url --nats-url", () => {
  let pg: TestPostgres;

  beforeAll(async () => {
    pg = await testPostgres();
  });
  afterAll(async () => {
    await pg?.drop();
  });

  it("runs on real Postgres and NATS JetStream", async () => {
    const nats = await testNats();
    const dataDir = mkdtempSync(join(tmpdir(), "lathe-up-real-"));
    const up = await startUp(["--data-dir", dataDir, "--port", String(await freePort()), "--pg-url", pg.url, "--nats-url", nats.url], { ...process.env, LATHE_EVENTS_PREFIX: nats.prefix });
    try {
      expect(up.output()).toContain("database: postgres");
      expect(up.output()).toContain("NATS JetStream");
      const conn = ["--server", up.address, "--data-dir", dataDir];
      await writeTinyModel(join(dataDir, "m"));
      expect((await runCli(["models", "create", "on-postgres", "--path", join(dataDir, "m"), ...conn])).code).toBe(0);
      const list = await runCli(["models", "list", "--json", ...conn]);
      expect(list.stdout).toContain("models/on-postgres");
      for (const status of Object.values(await checkHealth(up.address))) expect(status).toBe("SERVING");
    } finally {
      up.child.kill("SIGTERM");
      expect(await up.exited).toBe(0);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
