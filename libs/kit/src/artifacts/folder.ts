import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join, relative, sep } from "node:path";
import { pipeline } from "node:stream/promises";

import { AppError } from "../errors.js";
import type { ArtifactStore } from "./store.js";

/** One file of a stored folder. */
export interface FolderEntry {
  /** Path inside the folder, with `/` separators. */
  readonly path: string;
  readonly digest: string;
  readonly size: number;
}

/** A stored folder: the digest of its manifest (a JSON list of its files' digests) addresses it. */
export interface FolderRef {
  readonly digest: string;
  readonly size: number;
  readonly files: readonly FolderEntry[];
}

async function walk(root: string, dir: string, out: string[]): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(root, p, out);
    else if (e.isFile()) out.push(relative(root, p).split(sep).join("/"));
  }
}

/**
 * Copies a folder into the store, file by file, and stores its manifest; equal folders get
 * equal digests. Hidden files (`.git`, `.cache`) are left out.
 */
export async function putFolder(store: ArtifactStore, dir: string): Promise<FolderRef> {
  const paths: string[] = [];
  await walk(dir, dir, paths);
  const files: FolderEntry[] = [];
  for (const path of paths.filter((p) => !p.split("/").some((part) => part.startsWith("."))).sort()) {
    const ref = await store.put(createReadStream(join(dir, path)));
    files.push({ path, digest: ref.digest, size: ref.size });
  }
  const manifest = Buffer.from(JSON.stringify({ kind: "lathe.folder.v1", files }));
  const ref = await store.put(manifest);
  return { digest: ref.digest, size: files.reduce((a, f) => a + f.size, 0), files };
}

/** The files of a stored folder. */
export async function readFolderManifest(store: ArtifactStore, digest: string): Promise<FolderEntry[]> {
  const chunks: Buffer[] = [];
  for await (const c of await store.get(digest)) chunks.push(c as Buffer);
  const parsed = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { kind?: string; files?: FolderEntry[] };
  if (parsed.kind !== "lathe.folder.v1" || !Array.isArray(parsed.files)) {
    throw new AppError("INTERNAL", "ARTIFACT_NOT_A_FOLDER", `artifact sha256:${digest} is not a folder manifest`, { digest });
  }
  return parsed.files;
}

/**
 * Writes a stored folder out to `dir` (created fresh), checking every file's digest on the way:
 * a corrupted blob fails with ARTIFACT_CORRUPTED and leaves no partial folder behind.
 */
export async function materializeFolder(store: ArtifactStore, digest: string, dir: string): Promise<void> {
  const files = await readFolderManifest(store, digest);
  // A name of its own: two calls for one digest at once must not write into one folder.
  const tmp = `${dir}.tmp-${process.pid}-${randomUUID()}`;
  try {
    for (const f of files) {
      const target = join(tmp, ...f.path.split("/"));
      await mkdir(dirname(target), { recursive: true });
      await pipeline(await store.get(f.digest), createWriteStream(target));
    }
    await rm(dir, { recursive: true, force: true });
    await mkdir(dirname(dir), { recursive: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

const materializing = new Map<string, Promise<void>>();

/** `dir` holding the stored folder, materialized once and reused (a cache keyed by digest). */
export async function cachedFolder(store: ArtifactStore, digest: string, cacheRoot: string): Promise<string> {
  const dir = join(cacheRoot, digest);
  const ok = await stat(join(dir)).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (ok) return dir;
  // One materialization per digest at a time in this process; a second caller waits for it.
  let pending = materializing.get(dir);
  if (!pending) {
    pending = materializeFolder(store, digest, dir).finally(() => materializing.delete(dir));
    materializing.set(dir, pending);
  }
  await pending;
  return dir;
}

/**
 * Makes `file` by `make(tmp)` into a temporary name of its own beside it, then renames it into
 * place, so `file` is whole or absent; the temporary file goes when `make` fails.
 */
export async function makeFileAtomically(file: string, make: (tmp: string) => Promise<void>): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${randomUUID()}`;
  try {
    await make(tmp);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

const makingFiles = new Map<string, Promise<string>>();

/**
 * `file`, made once by `make` (atomically, as makeFileAtomically) unless it exists: a cache of
 * content-addressed files. Concurrent callers for one file in this process share one making.
 */
export function cachedFile(file: string, make: (tmp: string) => Promise<void>): Promise<string> {
  let pending = makingFiles.get(file);
  if (!pending) {
    pending = (async () => {
      const there = await stat(file).then(
        (s) => s.isFile(),
        () => false,
      );
      if (!there) await makeFileAtomically(file, make);
      return file;
    })().finally(() => makingFiles.delete(file));
    makingFiles.set(file, pending);
  }
  return pending;
}
