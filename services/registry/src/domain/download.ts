import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { AppError, cachedFolder, digestHex, makeFileAtomically, invalidArgument, prefixedDigest, readFolderManifest, type ArtifactStore } from "@lathe/kit";
import { mergeLoraFolder } from "@lathe/engine";
import { exportGguf, exportGgufLora, ModelFormatError } from "@lathe/models";
import { ArtifactFormat, GgufType, type DownloadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";

/**
 * The files of an adapter version in the asked format, as a stream of (file header, chunks):
 * the PEFT folder as stored, a merged HF model folder, a GGUF file of the merged model, or the
 * adapter as a GGUF LoRA file for llama.cpp to apply over the base's GGUF. Stored files are checked
 * against their digests as they are read: a corrupted artifact fails the download with
 * ARTIFACT_CORRUPTED and is never served whole. Merged models (merged by the engine's native
 * kernel, the same bytes as @lathe/models' mergeAdapter), GGUF files and GGUF LoRA files are
 * made once per (adapter, base, format, type) and cached by digest.
 */
export async function* downloadVersion(
  artifacts: ArtifactStore,
  cacheDir: string,
  v: { adapterDigest: string; baseDigest: string },
  format: ArtifactFormat,
  ggufType: GgufType,
  signal: AbortSignal,
): AsyncGenerator<DownloadAdapterVersionResponse> {
  const adapterDigest = digestHex(v.adapterDigest);
  if (format === ArtifactFormat.ARTIFACT_FORMAT_PEFT || format === ArtifactFormat.ARTIFACT_FORMAT_UNSPECIFIED) {
    for (const f of await readFolderManifest(artifacts, adapterDigest)) {
      yield { fileHeader: { path: f.path, sizeBytes: f.size, digest: prefixedDigest(f.digest) } };
      for await (const chunk of await artifacts.get(f.digest)) {
        if (signal.aborted) return;
        yield { chunk: chunk as Buffer };
      }
    }
    return;
  }
  const lora = format === ArtifactFormat.ARTIFACT_FORMAT_GGUF_LORA;
  if (format !== ArtifactFormat.ARTIFACT_FORMAT_MERGED && format !== ArtifactFormat.ARTIFACT_FORMAT_GGUF && !lora) throw invalidArgument("format", `unknown format ${format}`);
  if (lora && ggufType === GgufType.GGUF_TYPE_Q8_0) throw invalidArgument("gguf_type", "a GGUF LoRA adapter is exported as F16 or F32; Q8_0 is for the merged GGUF");
  const baseDigest = digestHex(v.baseDigest);
  const type = ggufType === GgufType.GGUF_TYPE_F32 ? "F32" : ggufType === GgufType.GGUF_TYPE_Q8_0 ? "Q8_0" : "F16";
  const made = (rebuild: boolean) =>
    lora ? loraFile(artifacts, cacheDir, baseDigest, adapterDigest, type === "F32" ? "F32" : "F16", rebuild) : derivedFiles(artifacts, cacheDir, baseDigest, adapterDigest, format, type, rebuild);
  // A derived file is served only when its bytes still match the digests recorded when it was
  // made; a cache that was tampered with or half-written is made again, once.
  let files = await made(false);
  if (!files) files = await made(true);
  const what = lora ? "GGUF LoRA" : format === ArtifactFormat.ARTIFACT_FORMAT_GGUF ? "GGUF" : "merged";
  if (!files) throw new AppError("INTERNAL", "ARTIFACT_CORRUPTED", `the ${what} files of this version do not match their recorded digests, even when made again`);
  for (const f of files) {
    yield { fileHeader: { path: f.path, sizeBytes: f.size, digest: prefixedDigest(f.digest) } };
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(f.abs, { highWaterMark: 1 << 20 })) {
      if (signal.aborted) return;
      hash.update(chunk as Buffer);
      yield { chunk: chunk as Buffer };
    }
    // Changed while it was sent: the client's check fails on it too, and the call says why.
    if (hash.digest("hex") !== f.digest) throw new AppError("INTERNAL", "ARTIFACT_CORRUPTED", `${f.path} changed while it was sent`);
  }
}

interface DerivedFile {
  path: string;
  abs: string;
  size: number;
  digest: string;
}

/** Writes `data` to `path` atomically (a temporary name, then rename). */
const writeAtomic = (path: string, data: string): Promise<void> => makeFileAtomically(path, (tmp) => writeFile(tmp, data));

/** The digests of a folder's files (sorted by name), or of one file. */
async function digestFiles(entries: { path: string; abs: string }[]): Promise<DerivedFile[]> {
  const out: DerivedFile[] = [];
  for (const e of entries) out.push({ ...e, size: (await stat(e.abs)).size, digest: await sha256File(e.abs) });
  return out;
}

async function readManifest(path: string): Promise<Record<string, string> | undefined> {
  try {
    const m = JSON.parse(await readFile(path, "utf8")) as { files?: Record<string, string> };
    return m.files && typeof m.files === "object" ? m.files : undefined;
  } catch {
    return undefined;
  }
}

const matches = (files: DerivedFile[], manifest: Record<string, string> | undefined) =>
  manifest !== undefined && files.length === Object.keys(manifest).length && files.every((f) => manifest[f.path] === f.digest);

/**
 * The merged folder (or the GGUF file made from it) of an adapter on its base, with each file's
 * digest checked against the manifest written when it was made; undefined when the cache does
 * not match. `rebuild` removes whatever is cached and makes it again first.
 */
async function derivedFiles(artifacts: ArtifactStore, cacheDir: string, baseDigest: string, adapterDigest: string, format: ArtifactFormat, type: "F16" | "F32" | "Q8_0", rebuild: boolean): Promise<DerivedFile[] | undefined> {
  const folders = join(cacheDir, "folders");
  const mergedDir = join(cacheDir, "merged", `${baseDigest}-${adapterDigest}`);
  const mergedManifest = `${mergedDir}.manifest.json`;
  const listMerged = async () => digestFiles((await readdir(mergedDir)).sort().map((name) => ({ path: name, abs: join(mergedDir, name) })));
  if (rebuild) await rm(mergedManifest, { force: true });
  let merged = (await exists(mergedManifest)) ? await listMerged().catch(() => undefined) : undefined;
  if (!merged || !matches(merged, await readManifest(mergedManifest))) {
    await rm(mergedManifest, { force: true });
    await rm(mergedDir, { recursive: true, force: true });
    const base = await cachedFolder(artifacts, baseDigest, folders);
    const adapter = await cachedFolder(artifacts, adapterDigest, folders);
    await mkdir(join(cacheDir, "merged"), { recursive: true });
    const tmp = await mkdtemp(`${mergedDir}.tmp-`);
    try {
      await mergeLoraFolder({ baseDir: base, adapterDir: adapter, outDir: tmp });
      await rename(tmp, mergedDir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      // Another download of the same version made it first.
      if (!(await exists(join(mergedDir, "config.json")))) throw err;
    }
    merged = await listMerged();
    await writeAtomic(mergedManifest, JSON.stringify({ files: Object.fromEntries(merged.map((f) => [f.path, f.digest])) }));
  }
  if (format === ArtifactFormat.ARTIFACT_FORMAT_MERGED) return merged;
  return manifestedFile(join(cacheDir, "gguf", `${baseDigest}-${adapterDigest}-${type}.gguf`), "model.gguf", (out) => exportGguf(mergedDir, out, { dtype: type }), rebuild);
}

/**
 * The GGUF LoRA adapter file of an adapter for its base (exportGgufLora of the stored folders),
 * checked against its manifest as derivedFiles' files are. An adapter llama.cpp cannot apply over
 * that base fails with FAILED_PRECONDITION, naming the adapter's file by its name in the folder.
 */
async function loraFile(artifacts: ArtifactStore, cacheDir: string, baseDigest: string, adapterDigest: string, type: "F16" | "F32", rebuild: boolean): Promise<DerivedFile[] | undefined> {
  return manifestedFile(join(cacheDir, "gguf-lora", `${baseDigest}-${adapterDigest}-${type}.gguf`), "adapter.gguf", async (out) => {
    const folders = join(cacheDir, "folders");
    const base = await cachedFolder(artifacts, baseDigest, folders);
    const adapter = await cachedFolder(artifacts, adapterDigest, folders);
    try {
      // Named by digest, as the file is cached: versions with the same bytes share it.
      await exportGgufLora(adapter, base, out, { dtype: type, name: prefixedDigest(adapterDigest) });
    } catch (err) {
      if (!(err instanceof ModelFormatError)) throw err;
      // The cache's paths mean nothing to the caller: files are named within the adapter or base folder.
      const why = err.message.split(`${adapter}/`).join("the adapter's ").split(`${base}/`).join("the base model's ");
      throw new AppError("FAILED_PRECONDITION", "GGUF_LORA_UNSUPPORTED", `this version cannot be exported as a GGUF LoRA adapter: ${why}`);
    }
  }, rebuild);
}

/**
 * One derived file at `file`, served as `name`: its bytes when they match the manifest written
 * beside it when `make` wrote them, else made again (into a temporary name, then renamed).
 * `rebuild` removes the manifest first, so that it is made again whatever is there.
 */
async function manifestedFile(file: string, name: string, make: (out: string) => Promise<void>, rebuild: boolean): Promise<DerivedFile[] | undefined> {
  const manifest = `${file}.manifest.json`;
  if (rebuild) await rm(manifest, { force: true });
  const list = () => digestFiles([{ path: name, abs: file }]);
  let files = (await exists(manifest)) ? await list().catch(() => undefined) : undefined;
  if (!files || !matches(files, await readManifest(manifest))) {
    await rm(manifest, { force: true });
    await makeFileAtomically(file, make);
    files = await list();
    await writeAtomic(manifest, JSON.stringify({ files: { [name]: files[0]!.digest } }));
  }
  return files;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function sha256File(p: string): Promise<string> {
  const h = createHash("sha256");
  for await (const c of createReadStream(p)) h.update(c as Buffer);
  return h.digest("hex");
}
