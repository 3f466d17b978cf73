import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient } from "@lathe/kit";
import { readGgufHeader, writeTinyAdapter, writeTinyModel } from "@lathe/models";
import { AdapterVersion, ArtifactFormat, GgufType, Model, RegistryServiceClient } from "@lathe/proto/lathe/registry/v1/registry_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";
import { download, fails } from "./support.js";

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const LORA = ArtifactFormat.ARTIFACT_FORMAT_GGUF_LORA;

describe("RegistryService: GGUF LoRA adapters and Q8_0 GGUF downloads", () => {
  const dir = mkdtempSync(join(tmpdir(), "lathe-gguf-lora-"));
  let t: TestPlatform;
  let acme: RegistryServiceClient;
  let globex: RegistryServiceClient;
  let dataDir: string;
  let v1: string;
  let tiedVersion: string;

  /** Writes a downloaded file where readGgufHeader can read it. */
  const header = (name: string, bytes: Buffer) => {
    const file = join(dir, name);
    writeFileSync(file, bytes);
    return readGgufHeader(file);
  };

  beforeAll(async () => {
    await writeTinyModel(join(dir, "tiny"), { seed: 1 });
    await writeTinyAdapter(join(dir, "adapter"), join(dir, "tiny"), { r: 4, alpha: 8, seed: 2, targetModules: ["q_proj", "v_proj", "lm_head"] });
    // A base whose config ties the head to the embeddings though its checkpoint stores lm_head.weight:
    // the adapter fits its weights (and merges), but llama.cpp's base GGUF has no output weight to adapt.
    await writeTinyModel(join(dir, "tied"), { seed: 3 });
    const cfgPath = join(dir, "tied", "config.json");
    writeFileSync(cfgPath, JSON.stringify({ ...(JSON.parse(readFileSync(cfgPath, "utf8")) as object), tie_word_embeddings: true }));
    await writeTinyAdapter(join(dir, "tied-adapter"), join(dir, "tied"), { r: 4, alpha: 8, targetModules: ["q_proj", "lm_head"] });

    t = await startTestPlatform({ factories: [createRegistryService], memoryBus: true, env: { LATHE_IMPORT_ROOTS: dir } });
    dataDir = `/tmp/lathe-test-${new URL(t.pgUrl).pathname.slice(1)}`;
    acme = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.globex });
    const register = async (model: string, adapterDir: string) => {
      await call(acme, "createModel", { modelId: model, model: Model.fromPartial({ sourceUri: join(dir, model) }), requestId: "" });
      const req = { parent: `models/${model}/adapters/a`, adapterVersion: AdapterVersion.fromPartial({ artifactUri: adapterDir }), allowMissing: true, requestId: "" };
      return (await call(acme, "createAdapterVersion", req)).adapterVersion!.name;
    };
    v1 = await register("tiny", join(dir, "adapter"));
    tiedVersion = await register("tied", join(dir, "tied-adapter"));
  }, 60_000);
  afterAll(async () => {
    acme?.close();
    globex?.close();
    await t?.stop();
  });

  it("sends the adapter as one GGUF LoRA file with llama.cpp's adapter metadata and tensor names", async () => {
    const [file, ...rest] = await download(acme, v1, LORA);
    expect(rest).toEqual([]);
    expect(file!.path).toBe("adapter.gguf");
    expect(sha(file!.bytes)).toBe(file!.digest);
    const h = await header("f32.gguf", file!.bytes);
    expect(h.metadata.get("general.type")).toBe("adapter");
    expect(h.metadata.get("general.architecture")).toBe("llama");
    expect(h.metadata.get("adapter.type")).toBe("lora");
    expect(h.metadata.get("adapter.lora.alpha")).toBeCloseTo(8, 6);
    const names = h.tensors.map((x) => x.name);
    expect(names.slice(0, 4)).toEqual(["blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b", "blk.0.attn_v.weight.lora_a", "blk.0.attn_v.weight.lora_b"]);
    expect(names.slice(-2)).toEqual(["output.weight.lora_a", "output.weight.lora_b"]);
    expect(names.every((n) => /^(blk\.\d+\.attn_[qv]|output)\.weight\.lora_[ab]$/.test(n))).toBe(true);
    expect(h.tensors.every((x) => x.type === 0)).toBe(true); // F32, as asked

    // Unspecified is F16, as for the merged GGUF.
    const f16 = await header("f16.gguf", (await download(acme, v1, LORA, GgufType.GGUF_TYPE_UNSPECIFIED))[0]!.bytes);
    expect(f16.tensors.map((x) => x.name)).toEqual(names);
    expect(f16.tensors.every((x) => x.type === 1)).toBe(true);
  });

  it("serves a second download from the digest-keyed cache, and makes a tampered cache file again", async () => {
    const first = await download(acme, v1, LORA);
    const root = join(dataDir, "cache", "registry", "gguf-lora");
    const cached = readdirSync(root).filter((f) => f.endsWith("-F32.gguf"));
    expect(cached).toHaveLength(1);
    expect(readdirSync(root)).toContain(`${cached[0]}.manifest.json`);
    const path = join(root, cached[0]!);
    const made = statSync(path).mtimeMs;
    const second = await download(acme, v1, LORA);
    expect(second[0]!.digest).toBe(first[0]!.digest);
    expect(statSync(path).mtimeMs).toBe(made);

    writeFileSync(path, Buffer.from("tampered"));
    const third = await download(acme, v1, LORA);
    expect(third[0]!.digest).toBe(first[0]!.digest);
    expect(sha(third[0]!.bytes)).toBe(first[0]!.digest);
  });

  it("refuses, saying why, an adapter llama.cpp cannot apply, and Q8_0 LoRA factors", async () => {
    const err = await fails(download(acme, tiedVersion, LORA));
    expect(err).toMatchObject({ code: "FAILED_PRECONDITION", reason: "GGUF_LORA_UNSUPPORTED" });
    expect(err.message).toContain("adapts lm_head, which the base model ties to its embeddings");
    expect(err.message).toContain("the adapter's adapter_model.safetensors");
    expect(err.message).not.toContain(dataDir);
    expect(readdirSync(join(dataDir, "cache", "registry", "gguf-lora")).filter((f) => f.includes(".tmp-"))).toEqual([]);
    // The same version still merges.
    expect((await download(acme, tiedVersion, ArtifactFormat.ARTIFACT_FORMAT_MERGED)).map((f) => f.path)).toContain("config.json");

    const q8 = await fails(download(acme, v1, LORA, GgufType.GGUF_TYPE_Q8_0));
    expect(q8).toMatchObject({ code: "INVALID_ARGUMENT", field: "gguf_type" });
  });

  it("exports the merged model as a Q8_0 GGUF", async () => {
    const [file] = await download(acme, v1, ArtifactFormat.ARTIFACT_FORMAT_GGUF, GgufType.GGUF_TYPE_Q8_0);
    expect(file!.path).toBe("model.gguf");
    const h = await header("q8.gguf", file!.bytes);
    expect(h.metadata.get("general.type")).not.toBe("adapter");
    expect(h.metadata.get("general.file_type")).toBe(7); // MOSTLY_Q8_0
    expect(h.tensors.find((x) => x.name === "blk.0.attn_q.weight")?.type).toBe(8); // GGML Q8_0
    expect(readdirSync(join(dataDir, "cache", "registry", "gguf")).filter((f) => f.endsWith("-Q8_0.gguf"))).toHaveLength(1);
  });

  it("keeps another tenant's versions out of reach", async () => {
    expect(await fails(download(globex, v1, LORA))).toMatchObject({ code: "NOT_FOUND" });
  });
});
