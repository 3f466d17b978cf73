import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient } from "@lathe/kit";
import { readGgufHeader, writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { AdapterVersion, Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { createRegistryService } from "@lathe/registry";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { runCli } from "./cli-process.js";

/** `lathe adapters download --format gguf-lora` and `--gguf-type q8_0` against a registry. */
describe("lathe adapters download: GGUF LoRA and Q8_0", () => {
  const dir = mkdtempSync(join(tmpdir(), "lathe-cli-download-"));
  let t: TestPlatform;
  let conn: string[];

  beforeAll(async () => {
    await writeTinyModel(join(dir, "tiny"), { seed: 1 });
    await writeTinyAdapter(join(dir, "adapter"), join(dir, "tiny"), { r: 4, alpha: 8 });
    t = await startTestPlatform({ factories: [createRegistryService], memoryBus: true, env: { LATHE_IMPORT_ROOTS: dir } });
    conn = ["--server", t.address, "--api-key", testKeys.acme];
    const client = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    try {
      await call(client, "createModel", { modelId: "tiny", model: Model.fromPartial({ sourceUri: join(dir, "tiny") }), requestId: "" });
      await call(client, "createAdapterVersion", { parent: "models/tiny/adapters/a", adapterVersion: AdapterVersion.fromPartial({ artifactUri: join(dir, "adapter") }), allowMissing: true, requestId: "" });
    } finally {
      client.close();
    }
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes adapter.gguf for --format gguf-lora, a Q8_0 model.gguf for --gguf-type q8_0, and refuses Q8_0 LoRA factors", async () => {
    const lora = await runCli(["adapters", "download", "tiny/a@1", "--format", "gguf-lora", "--out", join(dir, "lora"), ...conn]);
    expect(lora.stderr).toBe("");
    expect(lora.stdout).toMatch(/adapter\.gguf {2}\d+ bytes {2}sha256:[0-9a-f]{64}/);
    expect(readdirSync(join(dir, "lora"))).toEqual(["adapter.gguf"]);
    const h = await readGgufHeader(join(dir, "lora", "adapter.gguf"));
    expect(h.metadata.get("general.type")).toBe("adapter");
    expect(h.tensors.every((x) => x.type === 1)).toBe(true); // the default --gguf-type f16

    const q8 = await runCli(["adapters", "download", "tiny/a@1", "--format", "gguf", "--gguf-type", "q8_0", "--out", join(dir, "q8"), ...conn]);
    expect(q8.stderr).toBe("");
    expect((await readGgufHeader(join(dir, "q8", "model.gguf"))).metadata.get("general.file_type")).toBe(7);

    const refused = await runCli(["adapters", "download", "tiny/a@1", "--format", "gguf-lora", "--gguf-type", "q8_0", "--out", join(dir, "none"), ...conn]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("gguf_type");
  }, 60_000);
});
