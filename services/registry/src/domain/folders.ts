import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream, type WriteStream } from "node:fs";
import { lstat, mkdir, readdir, realpath, rm, stat } from "node:fs/promises";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { AppError, inside, invalidArgument, prefixedDigest, type ImportRoots } from "@lathe/kit";
import type { UploadFileHeader } from "@lathe/proto/lathe/registry/v1/registry_service";

/**
 * Folders come into the registry in one of two ways, and both end as a staging folder of plain
 * files that the registry made itself: that folder is what gets validated and what gets stored,
 * so a link, a FIFO or a file swapped after the check can never make the two differ.
 *
 * - an upload: the caller streams each file (header with path, size, digest; then its bytes);
 * - a server-side path inside an operator's import root: copied, links followed only while they
 *   stay inside the roots.
 */

/** The most files a model or adapter folder may hold, and how deep its paths may go. */
export const folderLimits = { files: 1000, depth: 16, pathLength: 512 } as const;

/** One staged file: its path inside the folder, sha256 (hex) and size. */
export interface StagedFile {
  readonly path: string;
  readonly digest: string;
  readonly size: number;
}

/** A staging folder and what is in it. `remove()` deletes it; call it in a `finally`. */
export interface StagedFolder {
  readonly dir: string;
  readonly files: readonly StagedFile[];
  remove(): Promise<void>;
}

/** Resolves once a write stream has closed, at once when it already has (after an error). */
function closed(out: WriteStream): Promise<void> {
  if (out.closed) return Promise.resolve();
  return new Promise((resolve) => out.once("close", () => resolve()));
}

async function newStaging(root: string): Promise<string> {
  const dir = join(root, randomUUID());
  await mkdir(dir, { recursive: true });
  return dir;
}

/** Checks a path a caller gave for a file inside a folder. */
export function checkFolderPath(field: string, path: string): string {
  const bad = (why: string) => invalidArgument(field, `${JSON.stringify(path.slice(0, 200))} ${why}`);
  if (path === "") throw bad("is empty");
  if (path.length > folderLimits.pathLength) throw bad(`is longer than ${folderLimits.pathLength} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(path)) throw bad("holds a control character or a backslash");
  const parts = path.split("/");
  if (parts.length > folderLimits.depth) throw bad(`has more than ${folderLimits.depth} parts`);
  for (const part of parts) {
    if (part === "" || part === "." || part === "..") throw bad("must be a relative path without empty, '.' or '..' parts");
    if (part.startsWith(".")) throw bad("has a hidden part (starting with '.'); hidden files are not stored");
  }
  return path;
}

const digestPattern = /^sha256:[0-9a-f]{64}$/;

/**
 * Receives the files of an upload stream into a fresh staging folder under `stagingRoot`. Each
 * file must come with a checked path, a size and a digest, and its bytes must match both; the
 * first message must be the header, which is returned. Nothing stays behind on any failure.
 */
export async function receiveFolder<H>(
  requests: AsyncIterable<{ header?: H | undefined; fileHeader?: UploadFileHeader | undefined; chunk?: Buffer | undefined }>,
  stagingRoot: string,
  signal: AbortSignal,
): Promise<{ header: H; folder: StagedFolder }> {
  const dir = await newStaging(stagingRoot);
  const remove = () => rm(dir, { recursive: true, force: true });
  let header: H | undefined;
  const files: StagedFile[] = [];
  const seen = new Set<string>();
  let current: { path: string; size: number; digest: string; out: WriteStream; hash: ReturnType<typeof createHash>; got: number } | undefined;
  const finishCurrent = async () => {
    if (!current) return;
    const c = current;
    current = undefined;
    c.out.end();
    await closed(c.out);
    if (c.out.errored) throw c.out.errored;
    if (c.got !== c.size) throw invalidArgument("file_header.size_bytes", `${c.path}: ${c.got} bytes arrived, the header said ${c.size}`);
    const digest = c.hash.digest("hex");
    if (prefixedDigest(digest) !== c.digest) throw invalidArgument("file_header.digest", `${c.path}: the bytes that arrived have digest sha256:${digest}, not ${c.digest}`);
    files.push({ path: c.path, digest, size: c.size });
  };
  try {
    let first = true;
    for await (const m of requests) {
      if (signal.aborted) throw new AppError("CANCELLED", "CANCELLED", "the upload was cancelled");
      if (first) {
        if (!m.header) throw invalidArgument("header", "must be the first message of the stream");
        header = m.header;
        first = false;
        continue;
      }
      if (m.header) throw invalidArgument("header", "must be sent once, as the first message");
      if (m.fileHeader) {
        await finishCurrent();
        const f = m.fileHeader;
        const path = checkFolderPath("file_header.path", f.path);
        if (seen.has(path)) throw invalidArgument("file_header.path", `${path} is sent twice`);
        seen.add(path);
        if (seen.size > folderLimits.files) throw invalidArgument("file_header", `the folder has more than ${folderLimits.files} files`);
        if (!Number.isSafeInteger(f.sizeBytes) || f.sizeBytes < 0) throw invalidArgument("file_header.size_bytes", `${path}: must be a non-negative integer`);
        if (!digestPattern.test(f.digest)) throw invalidArgument("file_header.digest", `${path}: must be sha256:<64 lowercase hex digits>`);
        const target = join(dir, ...path.split("/"));
        await mkdir(dirname(target), { recursive: true });
        const out = createWriteStream(target, { flags: "wx" });
        // A write error (ENOSPC) surfaces at the next write or at the end of the file.
        out.on("error", () => undefined);
        current = { path, size: f.sizeBytes, digest: f.digest, out, hash: createHash("sha256"), got: 0 };
        continue;
      }
      if (m.chunk && m.chunk.length > 0) {
        if (!current) throw invalidArgument("chunk", "must follow a file_header");
        current.got += m.chunk.length;
        if (current.got > current.size) throw invalidArgument("file_header.size_bytes", `${current.path}: more bytes arrived than the header's ${current.size}`);
        current.hash.update(m.chunk);
        if (current.out.errored) throw current.out.errored;
        if (!current.out.write(m.chunk)) {
          await Promise.race([once(current.out, "drain"), once(current.out, "error")]);
          if (current.out.errored) throw current.out.errored;
        }
      }
    }
    if (header === undefined) throw invalidArgument("header", "must be the first message of the stream");
    await finishCurrent();
    if (files.length === 0) throw invalidArgument("file_header", "the upload has no files");
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { header, folder: { dir, files, remove } };
  } catch (err) {
    if (current) {
      current.out.destroy();
      await closed(current.out);
    }
    await remove();
    throw err;
  }
}

/**
 * Copies a server-side folder, already resolved inside an import root, into a fresh staging
 * folder: regular files are copied, hidden entries left out, links followed only when their
 * target lies inside the roots (its bytes are what is stored), and anything else (a FIFO, a
 * socket, a device, a link out of the roots) refused with the entry named.
 */
export async function stageServerFolder(roots: ImportRoots, field: string, src: string, stagingRoot: string): Promise<StagedFolder> {
  const dir = await newStaging(stagingRoot);
  const remove = () => rm(dir, { recursive: true, force: true });
  const files: StagedFile[] = [];
  const visit = async (from: string, rel: string[], depth: number, seenDirs: Set<string>): Promise<void> => {
    if (depth > folderLimits.depth) throw invalidArgument(field, `${rel.join("/")} is more than ${folderLimits.depth} folders deep`);
    for (const e of (await readdir(from)).sort()) {
      if (e.startsWith(".")) continue;
      const path = [...rel, e];
      const name = path.join("/");
      let abs = join(from, e);
      let s = await lstat(abs);
      if (s.isSymbolicLink()) {
        const real = await realpath(abs).catch(() => undefined);
        if (real === undefined || !roots.roots.some((r) => inside(r, real))) throw invalidArgument(field, `${name} is a link that leads outside the server's import roots (or nowhere); copy the file in instead`);
        abs = real;
        s = await stat(real);
      }
      if (s.isDirectory()) {
        if (seenDirs.has(abs)) throw invalidArgument(field, `${name} is a link back into a folder already copied`);
        await mkdir(join(dir, ...path));
        await visit(abs, path, depth + 1, new Set([...seenDirs, abs]));
      } else if (s.isFile()) {
        if (files.length >= folderLimits.files) throw invalidArgument(field, `the folder has more than ${folderLimits.files} files`);
        const hash = createHash("sha256");
        let size = 0;
        const target = join(dir, ...path);
        await pipeline(
          createReadStream(abs),
          async function* (source: AsyncIterable<Buffer>) {
            for await (const c of source) {
              hash.update(c);
              size += c.length;
              yield c;
            }
          },
          createWriteStream(target, { flags: "wx" }),
        );
        files.push({ path: name, digest: hash.digest("hex"), size });
      } else {
        throw invalidArgument(field, `${name} is neither a file nor a folder`);
      }
    }
  };
  try {
    await visit(src, [], 0, new Set([src]));
    files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { dir, files, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}

/** Replaces the staging folder's path in a message with the name the caller knows. */
export function unstage(message: string, folder: StagedFolder, shownAs: string): string {
  return message.split(folder.dir).join(shownAs);
}

/**
 * Removes staging folders a killed process left behind: those not touched for an hour (a live
 * upload writes into its folder all along, so it is never that old).
 */
export async function sweepStaging(stagingRoot: string, olderThanMs = 3_600_000): Promise<void> {
  await mkdir(stagingRoot, { recursive: true });
  const now = Date.now();
  for (const e of await readdir(stagingRoot)) {
    const p = join(stagingRoot, e);
    const s = await stat(p).catch(() => undefined);
    if (s && now - s.mtimeMs > olderThanMs) await rm(p, { recursive: true, force: true });
  }
}
