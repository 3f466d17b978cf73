import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, createClient, fromGrpcError, openImportRoots, uploadFolder } from "@lathe/kit";
import { writeTinyAdapter, writeTinyModel } from "@lathe/models";
import {
  AdapterVersion,
  ArtifactFormat,
  Model,
  RegistryServiceClient,
  type CreateAdapterVersionRequest,
  type CreateModelRequest,
  type UploadAdapterVersionResponse,
  type UploadModelRequest,
  type UploadModelResponse,
} from "@lathe/proto/lathe/registry/v1/registry_service";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { createRegistryService } from "../src/index.js";
import { download, fails } from "./support.js";

const modelReq = (id: string, extra: Partial<CreateModelRequest> = {}, sourceUri = ""): CreateModelRequest => ({ modelId: id, model: Model.fromPartial({ description: "uploaded", sourceUri }), requestId: "", ...extra });
const uploadModel = (c: RegistryServiceClient, req: CreateModelRequest, dir: string) => uploadFolder<CreateModelRequest, UploadModelResponse>((cb) => c.uploadModel(cb), req, dir);
const uploadVersion = (c: RegistryServiceClient, req: CreateAdapterVersionRequest, dir: string) => uploadFolder<CreateAdapterVersionRequest, UploadAdapterVersionResponse>((cb) => c.uploadAdapterVersion(cb), req, dir);
const versionReq = (parent: string, requestId = ""): CreateAdapterVersionRequest => ({ parent, adapterVersion: AdapterVersion.fromPartial({ description: "uploaded" }), allowMissing: true, requestId });

/** Sends raw upload messages, to say what a hostile client would. */
function rawUpload(c: RegistryServiceClient, messages: UploadModelRequest[]): Promise<UploadModelResponse> {
  return new Promise((resolve, reject) => {
    const s = c.uploadModel((err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!)));
    for (const m of messages) s.write(m);
    s.end();
  });
}


const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** Sets the first f32 of a safetensors file's data to NaN. */
function poisonFirstWeight(file: string): void {
  const bytes = readFileSync(file);
  const headerLen = Number(bytes.readBigUInt64LE(0));
  bytes.writeUInt32LE(0x7fc00000, 8 + headerLen);
  writeFileSync(file, bytes);
}

describe("RegistryService: uploaded folders, import roots and stored bytes", () => {
  // The operator's import root, and a folder outside it that no tenant may reach by path.
  const root = mkdtempSync(join(tmpdir(), "lathe-import-root-"));
  const outside = mkdtempSync(join(tmpdir(), "lathe-outside-"));
  const tinyDir = join(root, "tiny");
  let t: TestPlatform;
  let noRoots: TestPlatform;
  let acme: RegistryServiceClient;
  let globex: RegistryServiceClient;
  let closed: RegistryServiceClient;
  let dataDir: string;

  beforeAll(async () => {
    await writeTinyModel(tinyDir, { seed: 1 });
    await writeTinyModel(join(outside, "private"), { seed: 3 });
    t = await startTestPlatform({ factories: [createRegistryService], memoryBus: true, env: { LATHE_IMPORT_ROOTS: root } });
    noRoots = await startTestPlatform({ factories: [createRegistryService], memoryBus: true });
    dataDir = `/tmp/lathe-test-${new URL(t.pgUrl).pathname.slice(1)}`;
    acme = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.acme });
    globex = createClient(RegistryServiceClient, t.address, { apiKey: testKeys.globex });
    closed = createClient(RegistryServiceClient, noRoots.address, { apiKey: testKeys.globex });
  });
  afterAll(async () => {
    acme?.close();
    globex?.close();
    closed?.close();
    await t?.stop();
    await noRoots?.stop();
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  it("registers an uploaded model folder with the same digest as a server-side import of it", async () => {
    const up = (await uploadModel(acme, modelReq("up", {}, "/on/my/laptop/tiny"), tinyDir)).model!;
    expect(up).toMatchObject({ name: "models/up", architecture: "LlamaForCausalLM", state: 2, sourceUri: "/on/my/laptop/tiny" });
    const imported = (await call(acme, "createModel", modelReq("imported", {}, tinyDir))).model!;
    expect(up.artifactDigest).toBe(imported.artifactDigest);
    expect(up.sizeBytes).toBe(imported.sizeBytes);
    // Nothing staged is left behind.
    expect(readdirSync(join(dataDir, "cache", "registry", "staging"))).toEqual([]);
  });

  it("refuses an upload whose bytes do not match its header, or whose paths leave the folder, and stores nothing", async () => {
    const config = readFileSync(join(tinyDir, "config.json"));
    const wrongDigest = await fails(rawUpload(acme, [{ header: modelReq("bad-digest") }, { fileHeader: { path: "config.json", sizeBytes: config.length, digest: sha(Buffer.from("other")) } }, { chunk: config }]));
    expect(wrongDigest).toMatchObject({ code: "INVALID_ARGUMENT", field: "file_header.digest" });
    const short = await fails(rawUpload(acme, [{ header: modelReq("short") }, { fileHeader: { path: "config.json", sizeBytes: config.length + 5, digest: sha(config) } }, { chunk: config }]));
    expect(short).toMatchObject({ code: "INVALID_ARGUMENT", field: "file_header.size_bytes" });
    for (const path of ["../escape.json", "/etc/passwd", "a//b", ".hidden", "sub/./x"]) {
      const err = await fails(rawUpload(acme, [{ header: modelReq("evil") }, { fileHeader: { path, sizeBytes: 1, digest: sha(Buffer.from("x")) } }, { chunk: Buffer.from("x") }]));
      expect(err, path).toMatchObject({ code: "INVALID_ARGUMENT", field: "file_header.path" });
    }
    const noHeader = await fails(rawUpload(acme, [{ fileHeader: { path: "config.json", sizeBytes: 1, digest: sha(Buffer.from("x")) } }]));
    expect(noHeader.field).toBe("header");
    for (const id of ["bad-digest", "short", "evil"]) expect((await fails(call(acme, "getModel", { name: `models/${id}` }))).code).toBe("NOT_FOUND");
    expect(readdirSync(join(dataDir, "cache", "registry", "staging"))).toEqual([]);
  });

  it("names no server path outside the import roots, and answers the same whether it exists or not", async () => {
    // Every server path a tenant could aim at: another tenant's files in the registry's cache,
    // the artifact store, a folder outside the roots, a system file; and one that does not exist.
    const targets = [join(dataDir, "cache", "registry", "folders"), join(dataDir, "artifacts"), join(outside, "private"), "/etc", join(outside, "does-not-exist"), "relative/path"];
    for (const [client, label] of [[globex, "with roots"], [closed, "without roots"]] as const) {
      const messages = new Set<string>();
      for (const path of targets) {
        const err = await fails(call(client, "createModel", modelReq("stolen", {}, path)));
        expect(err, `${label}: ${path}`).toMatchObject({ code: "PERMISSION_DENIED", reason: "PATH_NOT_IMPORTABLE", field: "model.source_uri" });
        messages.add(err.message);
        const v = await fails(call(client, "createAdapterVersion", { parent: "models/up/adapters/a", adapterVersion: AdapterVersion.fromPartial({ artifactUri: path }), allowMissing: true, requestId: "" }));
        // globex has no models/up: the tenant check comes first; the closed platform refuses the path.
        expect(["NOT_FOUND", "PERMISSION_DENIED"], `${label}: ${path}`).toContain(v.code);
      }
      expect(messages.size, label).toBe(1);
    }
    // A root that holds the service's own state is refused when the service starts.
    await expect(openImportRoots(["/tmp"], [dataDir])).rejects.toMatchObject({ reason: "IMPORT_ROOT_INVALID" });
    await expect(openImportRoots([join(dataDir, "cache")], [dataDir])).rejects.toMatchObject({ reason: "IMPORT_ROOT_INVALID" });
  });

  it("stores the bytes a link inside the roots points at, and refuses links that leave them, without quoting files", async () => {
    const linked = join(root, "linked");
    mkdirSync(linked);
    for (const f of readdirSync(tinyDir)) {
      if (f === "model.safetensors") symlinkSync(join(tinyDir, f), join(linked, f));
      else copyFileSync(join(tinyDir, f), join(linked, f));
    }
    const m = (await call(acme, "createModel", modelReq("linked", {}, linked))).model!;
    const plain = (await call(acme, "getModel", { name: "models/up" })).model!;
    // The weights behind the link were stored: the same folder digest and size as without it.
    expect(m.artifactDigest).toBe(plain.artifactDigest);
    expect(m.sizeBytes).toBe(plain.sizeBytes);

    const escaping = join(root, "escaping");
    mkdirSync(escaping);
    for (const f of readdirSync(tinyDir)) copyFileSync(join(tinyDir, f), join(escaping, f));
    rmSync(join(escaping, "config.json"));
    symlinkSync("/etc/passwd", join(escaping, "config.json"));
    const err = await fails(call(acme, "createModel", modelReq("escaping", {}, escaping)));
    expect(err).toMatchObject({ code: "INVALID_ARGUMENT", field: "model.source_uri" });
    expect(err.message).toContain("config.json");
    expect(err.message).not.toContain("root:");

    // The same text copied in is read and refused, and still not quoted back.
    rmSync(join(escaping, "config.json"));
    copyFileSync("/etc/passwd", join(escaping, "config.json"));
    const copied = await fails(call(acme, "createModel", modelReq("copied", {}, escaping)));
    expect(copied).toMatchObject({ code: "INVALID_ARGUMENT", reason: "MODEL_FOLDER_INVALID" });
    expect(copied.message).not.toContain("root:");
    expect(copied.message).not.toContain(dataDir);
  });

  it("binds a request_id to its request: the same upload returns the first model, a different one is REQUEST_ID_REUSED naming the field", async () => {
    const req = modelReq("idem-up", { requestId: "upload-once" });
    const first = (await uploadModel(acme, req, tinyDir)).model!;
    const again = (await uploadModel(acme, req, tinyDir)).model!;
    expect(again).toEqual(first);
    const described = await fails(uploadModel(acme, { ...req, model: Model.fromPartial({ description: "something else" }) }, tinyDir));
    expect(described).toMatchObject({ code: "INVALID_ARGUMENT", reason: "REQUEST_ID_REUSED", field: "request_id" });
    expect(described.metadata["differing_field"]).toBe("model.description");
    const otherId = await fails(uploadModel(acme, { ...req, modelId: "idem-other" }, tinyDir));
    expect(otherId.metadata["differing_field"]).toBe("model_id");
    const otherFiles = join(root, "other-weights");
    await writeTinyModel(otherFiles, { seed: 5 });
    const files = await fails(uploadModel(acme, req, otherFiles));
    expect(files.reason).toBe("REQUEST_ID_REUSED");
    expect(files.metadata["differing_field"]).toMatch(/^files\[\d+\]\.digest$/);
    expect((await fails(call(acme, "getModel", { name: "models/idem-other" }))).code).toBe("NOT_FOUND");
  });

  it("uploads adapter versions, refuses NaN weights and modules outside target_modules naming the tensor, and serves verified merged files", async () => {
    const good = join(root, "adapter-good");
    await writeTinyAdapter(good, tinyDir, { r: 4, alpha: 8, seed: 1, targetModules: ["q_proj", "v_proj"] });
    const v1 = (await uploadVersion(acme, versionReq("models/up/adapters/a", "v-once"), good)).adapterVersion!;
    expect(v1).toMatchObject({ name: "models/up/adapters/a/versions/1", loraConfig: expect.objectContaining({ r: 4 }) });
    expect((await uploadVersion(acme, versionReq("models/up/adapters/a", "v-once"), good)).adapterVersion!.name).toBe(v1.name);
    const reused = await fails(uploadVersion(acme, { ...versionReq("models/up/adapters/a", "v-once"), adapterVersion: AdapterVersion.fromPartial({ description: "changed" }) }, good));
    expect(reused.metadata["differing_field"]).toBe("adapter_version.description");

    const nan = join(root, "adapter-nan");
    await writeTinyAdapter(nan, tinyDir, { r: 4, alpha: 8, seed: 2 });
    poisonFirstWeight(join(nan, "adapter_model.safetensors"));
    const nanErr = await fails(uploadVersion(acme, versionReq("models/up/adapters/a"), nan));
    expect(nanErr).toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(nanErr.message).toMatch(/lora_[AB]/);
    expect(nanErr.message).toMatch(/NaN/);

    const extra = join(root, "adapter-extra");
    await writeTinyAdapter(extra, tinyDir, { r: 4, alpha: 8, seed: 3, targetModules: ["q_proj", "v_proj"] });
    const cfgPath = join(extra, "adapter_config.json");
    const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as { target_modules: string[] };
    cfg.target_modules = ["q_proj"];
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const extraErr = await fails(uploadVersion(acme, versionReq("models/up/adapters/a"), extra));
    expect(extraErr.code).toBe("INVALID_ARGUMENT");
    expect(extraErr.message).toContain("v_proj");
    expect((await call(acme, "listAdapterVersions", { parent: "models/up/adapters/a", pageSize: 0, pageToken: "", filter: "" })).adapterVersions).toHaveLength(1);

    // A merged file tampered with in the cache is never served: it is made again.
    const first = await download(acme, v1.name, ArtifactFormat.ARTIFACT_FORMAT_MERGED);
    for (const f of first) expect(sha(f.bytes), f.path).toBe(f.digest);
    const mergedRoot = join(dataDir, "cache", "registry", "merged");
    const mergedDir = readdirSync(mergedRoot).find((d) => !d.endsWith(".json") && !d.includes(".tmp-"))!;
    const weights = readdirSync(join(mergedRoot, mergedDir)).find((f) => f.endsWith(".safetensors"))!;
    writeFileSync(join(mergedRoot, mergedDir, weights), Buffer.from("tampered"));
    const second = await download(acme, v1.name, ArtifactFormat.ARTIFACT_FORMAT_MERGED);
    for (const f of second) expect(sha(f.bytes), f.path).toBe(f.digest);
    expect(second.map((f) => f.digest)).toEqual(first.map((f) => f.digest));
  });
});
