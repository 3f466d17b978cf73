import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AppError, call, createClient, fromGrpcError } from "@lathe/kit";
import { DatasetServiceClient, UploadDatasetVersionHeader } from "@lathe/proto/lathe/dataset/v1/dataset_service";
import { CheckOptions } from "@lathe/proto/lathe/type/v1/data_check";
import { AdapterVersion, Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { TrainerServiceClient } from "@lathe/proto/lathe/trainer/v1/trainer_service";
import { freePort, waitFor } from "@lathe/testing";
import { runCli, startUp } from "./cli-process.js";

/**
 * Two tenants on one `lathe up`, the server reading only one import root of its operator's.
 * Tenant A trains a job to a registered adapter; tenant B then names every folder of the
 * server's data dir (A's cached model and adapter, the artifact store, the trainer's work
 * folders, the dataset service's tokenizer cache) and a link into it, through every RPC that
 * takes a path: none reaches A's data, and the answer is the same whether the path exists.
 */

function rows(n: number): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: "user", content: `Ticket ${i}: the printer in room ${i} shows an error code after the update. What now?` },
          { role: "assistant", content: `Turn printer ${i} off, wait thirty seconds, turn it on again and, if the code stays, reply to ticket ${i} with a photo of it.` },
        ],
      }),
    ).join("\n") + "\n"
  );
}

/** Every folder under `dir`, `dir` included. */
function folders(dir: string): string[] {
  const out = [dir];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...folders(p));
  }
  return out;
}

describe("two tenants on one server: no path reaches the other's data", () => {
  const dataDir = mkdtempSync(join(tmpdir(), "lathe-tenants-"));
  const importRoot = mkdtempSync(join(tmpdir(), "lathe-tenants-root-"));
  const keyB = "key-globex-tenants-0123456789";
  let up: Awaited<ReturnType<typeof startUp>>;
  let connA: string[];
  let registryB: RegistryServiceClient;
  let datasetsB: DatasetServiceClient;
  let trainerB: TrainerServiceClient;

  beforeAll(async () => {
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())], { ...process.env, LATHE_API_KEYS: `${keyB}=globex`, LATHE_IMPORT_ROOTS: importRoot });
    connA = ["--server", up.address, "--data-dir", dataDir];
    registryB = createClient(RegistryServiceClient, up.address, { apiKey: keyB });
    datasetsB = createClient(DatasetServiceClient, up.address, { apiKey: keyB });
    trainerB = createClient(TrainerServiceClient, up.address, { apiKey: keyB });

    const local = mkdtempSync(join(tmpdir(), "lathe-tenants-a-"));
    expect((await runCli(["models", "init-tiny", join(local, "tiny"), "--seed", "1"])).code).toBe(0);
    expect((await runCli(["models", "create", "tiny", "--path", join(local, "tiny"), ...connA])).code).toBe(0);
    writeFileSync(join(local, "support.jsonl"), rows(16));
    expect((await runCli(["datasets", "create", "support", join(local, "support.jsonl"), "--tokenizer-model", "models/tiny", ...connA])).code).toBe(0);
    expect((await runCli(["datasets", "derive", "support@v1", "--split", "0.25", "--seed", "1", "--version-id", "s", ...connA])).stderr).toBe("");
    const job = await runCli(["jobs", "create", "--id", "secret", "--model", "tiny", "--train", "support@s-train", "--epochs", "1", "--batch-size", "4", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--max-seq-length", "512", "--warmup-ratio", "0", "--no-packing", "--register", "tiny/support", "--watch", ...connA]);
    expect(job.stderr).toBe("");
    await waitFor(async () => (await runCli(["adapters", "versions", "tiny/support", "--json", ...connA])).stdout.includes("versions/1") || undefined, { timeoutMs: 30_000, intervalMs: 300, what: "A's adapter version" });
    // Merged and GGUF downloads put A's merged weights in the registry's cache too.
    expect((await runCli(["adapters", "download", "tiny/support@1", "--format", "gguf", "--out", join(local, "gguf"), ...connA])).code).toBe(0);
    rmSync(local, { recursive: true, force: true });
  }, 180_000);

  afterAll(() => {
    registryB?.close();
    datasetsB?.close();
    trainerB?.close();
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(importRoot, { recursive: true, force: true });
  });

  const refusal = async (p: Promise<unknown>): Promise<AppError> => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  };

  it("refuses every server path of the data dir, by every RPC that takes one, with one answer", async () => {
    // A link in the import root that points into the data dir is refused like the path itself.
    const link = join(importRoot, "looks-innocent");
    symlinkSync(join(dataDir, "cache"), link);
    const targets = [...folders(dataDir), link, join(dataDir, "does-not-exist"), join(dataDir, "work", "trainer", "attempts", "default~secret~1~0")];
    expect(targets.length).toBeGreaterThan(10);
    const answers = new Set<string>();
    // B has a model of its own, so the adapter calls get as far as reading the path.
    mkdirSync(join(importRoot, "b-model"));
    expect((await runCli(["models", "init-tiny", join(importRoot, "b-model"), "--seed", "2"])).code).toBe(0);
    await call(registryB, "createModel", { modelId: "mine", model: Model.fromPartial({ sourceUri: join(importRoot, "b-model") }), requestId: "" });
    await call(datasetsB, "createDataset", { datasetId: "probe", dataset: undefined, requestId: "" });
    for (const path of targets) {
      const model = await refusal(call(registryB, "createModel", { modelId: "stolen", model: Model.fromPartial({ sourceUri: path }), requestId: "" }));
      const adapter = await refusal(call(registryB, "createAdapterVersion", { parent: "models/mine/adapters/stolen", adapterVersion: AdapterVersion.fromPartial({ artifactUri: path }), allowMissing: true, requestId: "" }));
      const tokenizer = await refusal(
        new Promise((resolve, reject) => {
          const c = datasetsB.uploadDatasetVersion((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res)));
          c.write({ header: UploadDatasetVersionHeader.fromPartial({ parent: "datasets/probe", checkOptions: CheckOptions.fromPartial({ tokenizerModel: path }) }) });
          c.write({ chunk: Buffer.from(rows(2)) });
          c.end();
        }),
      );
      for (const [what, err] of [["createModel", model], ["createAdapterVersion", adapter], ["uploadDatasetVersion", tokenizer]] as const) {
        expect(err.code, `${what} ${path}`).toBe("PERMISSION_DENIED");
        expect(err.reason, `${what} ${path}`).toBe("PATH_NOT_IMPORTABLE");
        answers.add(`${what}: ${err.message}`);
      }
    }
    // One message per RPC, whatever the path: nothing tells B what exists on the server.
    expect(answers.size).toBe(3);
    // B sees none of A's resources either.
    for (const name of ["models/tiny", "models/tiny/adapters/support"]) expect((await refusal(call(registryB, name.includes("adapters") ? "getAdapter" : "getModel", { name }))).code).toBe("NOT_FOUND");
    expect((await refusal(call(trainerB, "getFineTuningJob", { name: "fineTuningJobs/secret" }))).code).toBe("NOT_FOUND");
    expect((await refusal(call(datasetsB, "getDatasetVersion", { name: "datasets/support/versions/v1" }))).code).toBe("NOT_FOUND");
    // The targets were real: A's adapter and merged weights are in the registry's cache.
    expect(targets.some((t) => t.includes(join("cache", "registry", "merged")))).toBe(true);
  });
});

