import { mkdir, mkdtemp, readdir, rename, rm, stat } from "node:fs/promises";
import { createReadStream } from "node:fs";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { cachedFolder, invalidArgument, readFolderManifest, type ArtifactStore } from "@lathe/kit";
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
  const adapterDigest = v.adapterDigest.replace(/^sha256:/, "");
  if (format === ArtifactFormat.ARTIFACT_FORMAT_PEFT || format === ArtifactFormat.ARTIFACT_FORMAT_UNSPECIFIED) {
    for (const f of await readFolderManifest(artifacts, adapterDigest)) {
      yield { fileHeader: { path: f.path, sizeBytes: f.size, digest: `sha256:${f.digest}` } };
      for await (const chunk of await artifacts.get(f.digest)) {
        if (signal.aborted) return;
        yield { chunk: chunk as Buffer };
      }
    }
    return;
  }
  if (format !== ArtifactFormat.ARTIFACT_FORMAT_MERGED && format !== ArtifactFormat.ARTIFACT_FORMAT_GGUF) throw invalidArgument("format", `unknown format ${format}`);
  if (ggufType === GgufType.GGUF_TYPE_Q8_0) throw invalidArgument("gguf_type", "Q8_0 export is not supported yet; use F16 or F32");
  const baseDigest = v.baseDigest.replace(/^sha256:/, "");
  const folders = join(cacheDir, "folders");
  const mergedDir = join(cacheDir, "merged", `${baseDigest}-${adapterDigest}`);
  if (!(await exists(join(mergedDir, "config.json")))) {
    const base = await cachedFolder(artifacts, baseDigest, folders);
    const adapter = await cachedFolder(artifacts, adapterDigest, folders);
    await mkdir(join(cacheDir, "merged"), { recursive: true });
    const tmp = await mkdtemp(`${mergedDir}.tmp-`);
    try {
      await mergeLoraFolder({ baseDir: base, adapterDir: adapter, outDir: tmp });
      await rename(tmp, mergedDir);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      if (!(await exists(join(mergedDir, "config.json")))) throw err;
    }
  }
  const files: { path: string; abs: string }[] = [];
  if (format === ArtifactFormat.ARTIFACT_FORMAT_MERGED) {
    for (const name of (await readdir(mergedDir)).sort()) files.push({ path: name, abs: join(mergedDir, name) });
  } else {
    const type = ggufType === GgufType.GGUF_TYPE_F32 ? "F32" : "F16";
    const file = join(cacheDir, "gguf", `${baseDigest}-${adapterDigest}-${type}.gguf`);
    if (!(await exists(file))) {
      await mkdir(join(cacheDir, "gguf"), { recursive: true });
      const tmp = `${file}.tmp-${process.pid}`;
      await exportGguf(mergedDir, tmp, { dtype: type });
      await rename(tmp, file);
    }
    files.push({ path: "model.gguf", abs: file });
  }
  for (const f of files) {
    const size = (await stat(f.abs)).size;
    const digest = await sha256File(f.abs);
    yield { fileHeader: { path: f.path, sizeBytes: size, digest: `sha256:${digest}` } };
    for await (const chunk of createReadStream(f.abs, { highWaterMark: 1 << 20 })) {
      if (signal.aborted) return;
      yield { chunk: chunk as Buffer };
    }
  }
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
