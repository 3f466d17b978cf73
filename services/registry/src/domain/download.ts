import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { AppError, cachedFolder, digestHex, invalidArgument, prefixedDigest, readFolderManifest, type ArtifactStore } from "@lathe/kit";
import { mergeLoraFolder } from "@lathe/engine";
import { exportGguf } from "@lathe/models";
import { ArtifactFormat, GgufType, type DownloadAdapterVersionResponse } from "@lathe/proto/lathe/registry/v1/registry_service";

/**
 * The files of an adapter version in the asked format, as a stream of (file header, chunks):
 * the PEFT folder as stored, a merged HF model folder, or a GGUF file. Stored files are checked
 * against their digests as they are read: a corrupted artifact fails the download with
 * ARTIFACT_CORRUPTED and is never served whole. Merged models (merged by the engine's native
 * kernel, the same bytes as @lathe/models' mergeAdapter) and GGUF files are made once per
 * (adapter, base, format) and cached by digest.
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
  if (format !== ArtifactFormat.ARTIFACT_FORMAT_MERGED && format !== ArtifactFormat.ARTIFACT_FORMAT_GGUF) throw invalidArgument("format", `unknown format ${format}`);
  if (ggufType === GgufType.GGUF_TYPE_Q8_0) throw invalidArgument("gguf_type", "Q8_0 export is not supported yet; use F16 or F32");
  const baseDigest = digestHex(v.baseDigest);
  const type = ggufType === GgufType.GGUF_TYPE_F32 ? "F32" : "F16";
  // A derived file is served only when its bytes still match the digests recorded when it was
  // made; a cache that was tampered with or half-written is made again, once.
  let files = await derivedFiles(artifacts, cacheDir, baseDigest, adapterDigest, format, type, false);
  if (!files) files = await derivedFiles(artifacts, cacheDir, baseDigest, adapterDigest, format, type, true);
  if (!files) throw new AppError("INTERNAL", "ARTIFACT_CORRUPTED", `the ${format === ArtifactFormat.ARTIFACT_FORMAT_GGUF ? "GGUF" : "merged"} files of this version do not match their recorded digests, even when made again`);
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
async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

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
async function derivedFiles(artifacts: ArtifactStore, cacheDir: string, baseDigest: string, adapterDigest: string, format: ArtifactFormat, type: "F16" | "F32", rebuild: boolean): Promise<DerivedFile[] | undefined> {
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
  const file = join(cacheDir, "gguf", `${baseDigest}-${adapterDigest}-${type}.gguf`);
  const ggufManifest = `${file}.manifest.json`;
  if (rebuild) await rm(ggufManifest, { force: true });
  let gguf = (await exists(ggufManifest)) ? await digestFiles([{ path: "model.gguf", abs: file }]).catch(() => undefined) : undefined;
  if (!gguf || !matches(gguf, await readManifest(ggufManifest))) {
    await rm(ggufManifest, { force: true });
    await mkdir(join(cacheDir, "gguf"), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
    try {
      await exportGguf(mergedDir, tmp, { dtype: type });
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    gguf = await digestFiles([{ path: "model.gguf", abs: file }]);
    await writeAtomic(ggufManifest, JSON.stringify({ files: { "model.gguf": gguf[0]!.digest } }));
  }
  return gguf;
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
