import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient } from "@lathe/kit";
import { writeTinyModel } from "@lathe/models";
import { Dataset, DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { createDatasetService } from "@lathe/dataset";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import type { TrainerTables } from "../src/db/tables.js";
import { JobStore } from "../src/domain/job-store.js";
import { JobLeases, type ClaimScope, type TenantLimits } from "../src/domain/lease.js";
import { trainerService } from "../src/index.js";
import { fails, jobRequest, options, supportRows } from "./support.js";

/**
 * The queue's order and limits, on jobs two tenants submit at once over gRPC, claimed the way
 * workers and Kubernetes runners claim them (JobLeases on the same Postgres, concurrently).
 */
describe("Scheduling: a fair queue with priorities and per-tenant limits", () => {
  let t: TestPlatform;
  let db: Kysely<TrainerTables>;
  const clients: Record<"acme" | "globex", TrainerServiceClient> = {} as never;
  const versions: Record<"acme" | "globex", { train: string; evalV: string }> = {} as never;
  const dir = mkdtempSync(join(tmpdir(), "lathe-trainer-queue-"));

  const leases = (limits?: TenantLimits) => new JobLeases(db, new JobStore(db, () => undefined), limits);
  const claimAll = async (l: JobLeases, scope: ClaimScope = "cpu") => {
    const order: string[] = [];
    for (;;) {
      const c = await l.claim("test-worker", 60_000, scope);
      if (!c) return order;
      order.push(`${c.row.tenant}/${c.row.job_id}`);
    }
  };
  const requeueAll = () => db.withSchema("trainer").updateTable("jobs").set({ state: "QUEUED", worker: "", lease_until: null }).execute();

  beforeAll(async () => {
    const modelDir = join(dir, "tiny");
    await writeTinyModel(modelDir, { seed: 1 });
    t = await startTestPlatform({ env: { LATHE_IMPORT_ROOTS: dir }, factories: [createRegistryService, createDatasetService, trainerService(options(0))] });
    for (const tenant of ["acme", "globex"] as const) {
      const key = testKeys[tenant];
      clients[tenant] = createClient(TrainerServiceClient, t.address, { apiKey: key });
      const registry = createClient(RegistryServiceClient, t.address, { apiKey: key });
      await call(registry, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: modelDir }), requestId: "" });
      registry.close();
      const datasets = createClient(DatasetServiceClient, t.address, { apiKey: key });
      await call(datasets, "createDataset", { datasetId: "support", dataset: Dataset.fromPartial({ displayName: "Support" }), requestId: "" });
      const raw = await new Promise<string>((resolve, reject) => {
        const c = datasets.uploadDatasetVersion((err, res) => (err ? reject(err) : resolve(res!.datasetVersion!.name)));
        c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/support" }) });
        c.write({ chunk: Buffer.from(supportRows(20)) });
        c.end();
      });
      const split = await call(datasets, "deriveDatasetVersion", { parentVersion: raw, operation: { split: { evalFraction: 0.2, seed: 1 } }, versionId: "s", description: "", labels: {}, checkOptions: undefined, requestId: "" });
      datasets.close();
      versions[tenant] = { train: split.datasetVersion!.name, evalV: split.evalDatasetVersion!.name };
    }
    db = new Kysely<TrainerTables>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: t.pgUrl, max: 12 }) }) });
  }, 60_000);

  afterAll(async () => {
    for (const c of Object.values(clients)) c.close();
    await db?.destroy();
    await t?.stop();
  });

  const submit = (tenant: "acme" | "globex", id: string, priority = 0) =>
    call(clients[tenant], "createFineTuningJob", { fineTuningJobId: id, fineTuningJob: { ...jobRequest(versions[tenant].train, versions[tenant].evalV), priority }, requestId: "" });

  it("refuses a priority out of range, naming the field", async () => {
    expect(await fails(submit("acme", "too-urgent", 101))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.priority" });
    expect(await fails(submit("acme", "too-late", -101))).toMatchObject({ code: "INVALID_ARGUMENT", field: "fine_tuning_job.priority" });
  });

  it("twelve jobs submitted at once by two tenants: the tenant with fewer running jobs goes first, then priority, then age, so one tenant's backlog never holds up the other's jobs", async () => {
    // acme's backlog of ten (one of them urgent) and globex's two, all sent at the same time.
    await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => submit("acme", `a${i}`, i === 7 ? 5 : 0)),
      submit("globex", "g0"),
      submit("globex", "g1"),
    ]);
    const created = await db.withSchema("trainer").selectFrom("jobs").select(["tenant", "job_id", "priority"]).orderBy("seq").execute();
    expect(created).toHaveLength(12);
    expect(created.find((r) => r.job_id === "a7")!.priority).toBe(5);
    const { fineTuningJobs } = await call(clients.acme, "listFineTuningJobs", { pageSize: 0, pageToken: "", filter: "" });
    expect(fineTuningJobs.find((j) => j.name === "fineTuningJobs/a7")!.priority).toBe(5);

    // One claimer, no job ending: who gets each free slot.
    const order = await claimAll(leases());
    expect(order).toHaveLength(12);
    // Both tenants idle: acme's urgent job; then globex, which runs nothing yet.
    expect(order[0]).toBe("acme/a7");
    expect(order[1]!.startsWith("globex/")).toBe(true);
    // globex's second job starts while acme still has eight waiting.
    expect(order.slice(0, 4).filter((o) => o.startsWith("globex/"))).toHaveLength(2);
    // Within a tenant (same priority): oldest first.
    const acmeSeq = created.filter((r) => r.tenant === "acme" && r.job_id !== "a7").map((r) => `acme/${r.job_id}`);
    expect(order.filter((o) => o.startsWith("acme/") && o !== "acme/a7")).toEqual(acmeSeq);
    const globexSeq = created.filter((r) => r.tenant === "globex").map((r) => `globex/${r.job_id}`);
    expect(order.filter((o) => o.startsWith("globex/"))).toEqual(globexSeq);
  }, 60_000);

  it("concurrent claimers never start more than a tenant's limit of running jobs", async () => {
    await requeueAll();
    const limited = Array.from({ length: 10 }, () => leases({ maxRunningJobs: 2, maxGpus: 0 }));
    const claimed = (await Promise.all(limited.map((l) => l.claim("test-worker", 60_000)))).filter((c) => c !== undefined);
    const byTenant = (tenant: string) => claimed.filter((c) => c.row.tenant === tenant).length;
    expect(byTenant("acme")).toBe(2);
    expect(byTenant("globex")).toBe(2);
    // One of acme's ends: its slot goes to acme's next job; globex has none left to start.
    const done = claimed.find((c) => c.row.tenant === "acme")!;
    expect(await limited[0]!.fail(done.row, "test-worker", { code: "INTERNAL", reason: "TEST", message: "ended by the test" }, 0, 0)).toBe(true);
    const next = await limited[1]!.claim("test-worker", 60_000);
    expect(next?.row.tenant).toBe("acme");
    expect(await limited[2]!.claim("test-worker", 60_000)).toBeUndefined();
  }, 60_000);

  it("a tenant's GPUs in use are limited, and GPU jobs go only to GPU claimers", async () => {
    await requeueAll();
    // Two of acme's queued jobs become 2-GPU jobs (the columns the claim reads follow the spec).
    await db
      .withSchema("trainer")
      .updateTable("jobs")
      .set({ spec: sql`jsonb_set(spec, '{compute}', ${JSON.stringify({ backend: "cuda", gpuCount: 2, hardware: "" })}::jsonb)` as never })
      .where("job_id", "in", ["a8", "a9"])
      .where("tenant", "=", "acme")
      .execute();
    const gpu = leases({ maxRunningJobs: 0, maxGpus: 3 });
    const first = await gpu.claim("test-gpu", 60_000, "gpu");
    // The older of the two (they were submitted at once).
    expect(first?.row).toMatchObject({ tenant: "acme", gpu_count: 2 });
    expect(["a8", "a9"]).toContain(first!.row.job_id);
    // 2 + 2 > 3: the other waits, although a GPU claimer is free.
    expect(await gpu.claim("test-gpu", 60_000, "gpu")).toBeUndefined();
    // CPU claimers never take a GPU job.
    const cpu = await claimAll(leases());
    expect(cpu).toHaveLength(10);
    expect(cpu.filter((c) => c === "acme/a8" || c === "acme/a9")).toEqual([]);
  }, 60_000);
});
