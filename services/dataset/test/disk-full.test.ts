import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, type AppError } from "@lathe/kit";
import { DatasetServiceClient } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { createDatasetService } from "../src/index.js";
import { chat, jsonl, upload } from "./upload-client.js";

// A real full disk: the artifact store on a 2 MiB tmpfs. Mounting needs root (CAP_SYS_ADMIN);
// whether it works is tried once here (mounted and unmounted at once), so the suite can skip.
const mountPoint = mkdtempSync(join(tmpdir(), "lathe-full-disk-"));
const mountTmpfs = () => execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mountPoint], { stdio: "pipe" });
let canMount = false;
try {
  mountTmpfs();
  execFileSync("umount", [mountPoint], { stdio: "pipe" });
  canMount = true;
} catch (err) {
  const who = process.getuid?.() === 0 ? "root, but mount was refused" : "not root";
  console.warn(`disk-full test skipped: it needs a 2 MiB tmpfs and cannot mount one here (${who}: ${String((err as Error).message).split("\n")[0]})`);
  rmSync(mountPoint, { recursive: true, force: true });
}
let mounted = false;

const filesUnder = (dir: string): string[] => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));

describe.skipIf(!canMount)("DatasetService on a full disk", () => {
  let t: TestPlatform;
  let acme: DatasetServiceClient;
  let db: pg.Client;

  beforeAll(async () => {
    mountTmpfs();
    mounted = true;
    t = await startTestPlatform({ factories: [createDatasetService], env: { LATHE_ARTIFACTS_DIR: mountPoint } });
    // A deadline well before the test's: a hung upload fails here as DEADLINE_EXCEEDED.
    acme = createClient(DatasetServiceClient, t.address, { apiKey: testKeys.acme, deadlineMs: 20_000 });
    db = new pg.Client({ connectionString: t.pgUrl });
    await db.connect();
    await call(acme, "createDataset", { datasetId: "full", dataset: undefined, requestId: "" });
  });
  afterAll(async () => {
    acme?.close();
    await db?.end();
    await t?.stop();
    if (mounted) execFileSync("umount", [mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it("ends an upload that does not fit at once with RESOURCE_EXHAUSTED DISK_FULL, keeping nothing, and serves the next one", async () => {
    const big = jsonl(Array.from({ length: 12_000 }, (_, i) => chat(i)));
    expect(big.length).toBeGreaterThan(3 * 1024 * 1024);
    const err = await upload(acme, { parent: "datasets/full" }, big).then(
      () => undefined,
      (e: unknown) => e as AppError,
    );
    expect(err).toMatchObject({ code: "RESOURCE_EXHAUSTED", reason: "DISK_FULL" });
    expect((await call(acme, "listDatasetVersions", { parent: "datasets/full", pageSize: 0, pageToken: "", filter: "" })).datasetVersions).toEqual([]);
    expect(Number((await db.query("select count(*) as n from dataset.staging")).rows[0].n)).toBe(0);
    expect(Number((await db.query("select count(*) as n from dataset.rows")).rows[0].n)).toBe(0);
    expect(filesUnder(mountPoint)).toEqual([]);
    expect((await call(acme, "getDataset", { name: "datasets/full" })).dataset!.versionCount).toBe(0);

    const small = await upload(acme, { parent: "datasets/full" }, jsonl([chat(1), chat(2)]));
    expect(small).toMatchObject({ name: "datasets/full/versions/v1", rowCount: 2 });
    expect(filesUnder(mountPoint)).toHaveLength(1);
  });
});
