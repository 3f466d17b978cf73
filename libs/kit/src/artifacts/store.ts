import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { pipeline as pipe, Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AppError } from "../errors.js";

/** A stored blob: its sha256 (lowercase hex) and size in bytes. */
export interface ArtifactRef {
  readonly digest: string;
  readonly size: number;
}

/**
 * Content-addressed blob storage: a blob's address is the sha256 of its bytes, so equal
 * content is stored once and a reader can check what it got. A local folder implements it now;
 * an object store can implement the same interface later.
 */
export interface ArtifactStore {
  /** Stores bytes (a buffer or a stream of any length) and returns their address. */
  put(content: Uint8Array | AsyncIterable<Uint8Array> | Readable): Promise<ArtifactRef>;
  /** Streams a blob; the stream errors with DATA_LOSS-like INTERNAL if the bytes no longer match the digest. */
  get(digest: string): Promise<Readable>;
  /** Size of a stored blob, or undefined when there is none. */
  stat(digest: string): Promise<ArtifactRef | undefined>;
  delete(digest: string): Promise<void>;
}

const digestPattern = /^[0-9a-f]{64}$/;

function checkDigest(digest: string): void {
  if (!digestPattern.test(digest)) throw new AppError("INVALID_ARGUMENT", "INVALID_DIGEST", `digest must be 64 lowercase hex characters, got ${JSON.stringify(digest)}`, { field: "digest" });
}

/**
 * Artifacts in a local folder, as `sha256/ab/abcdef…`. Writes go to a temporary file under
 * `tmp/` that is renamed into place once its digest is known, so a reader never sees a partial
 * blob; a write that fails (a full disk midway, a client that went away) removes its file.
 */
export class LocalArtifactStore implements ArtifactStore {
  constructor(readonly root: string) {}

  /**
   * A store on `root` that first removes the temporary files a killed process left in `tmp/`.
   * Several processes may share one folder and write at the same time, so only files untouched
   * for `staleTmpMs` (default 10 minutes) go: a put in progress writes its file at every chunk.
   */
  static async open(root: string, opts: { staleTmpMs?: number } = {}): Promise<LocalArtifactStore> {
    const store = new LocalArtifactStore(root);
    await store.sweepTmp(opts.staleTmpMs ?? 10 * 60_000);
    return store;
  }

  /** Removes temporary files not written for `olderThanMs`; returns how many went. */
  async sweepTmp(olderThanMs: number): Promise<number> {
    const tmpDir = join(this.root, "tmp");
    let names: string[];
    try {
      names = await readdir(tmpDir);
    } catch {
      return 0;
    }
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    for (const name of names) {
      const path = join(tmpDir, name);
      const s = await stat(path).catch(() => undefined);
      if (s === undefined || !s.isFile() || s.mtimeMs > cutoff) continue;
      await rm(path, { force: true });
      removed++;
    }
    return removed;
  }

  private pathOf(digest: string): string {
    return join(this.root, "sha256", digest.slice(0, 2), digest);
  }

  async put(content: Uint8Array | AsyncIterable<Uint8Array> | Readable): Promise<ArtifactRef> {
    const tmpDir = join(this.root, "tmp");
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, randomUUID());
    const hash = createHash("sha256");
    let size = 0;
    const source = content instanceof Uint8Array ? Readable.from([content]) : Readable.from(content);
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        size += chunk.length;
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, tap, createWriteStream(tmp));
      const digest = hash.digest("hex");
      const dest = this.pathOf(digest);
      await mkdir(join(this.root, "sha256", digest.slice(0, 2)), { recursive: true });
      await rename(tmp, dest);
      return { digest, size };
    } catch (err) {
      // The write's own error is the one to report (ENOSPC becomes DISK_FULL), not a failed cleanup.
      await rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  async get(digest: string): Promise<Readable> {
    checkDigest(digest);
    const ref = await this.stat(digest);
    if (!ref) throw new AppError("NOT_FOUND", "ARTIFACT_NOT_FOUND", `artifact sha256:${digest} was not found`, { digest });
    const hash = createHash("sha256");
    const verify = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
      flush(cb) {
        const got = hash.digest("hex");
        cb(got === digest ? null : new AppError("INTERNAL", "ARTIFACT_CORRUPTED", `artifact sha256:${digest} is corrupted: its bytes hash to ${got}`, { digest }));
      },
    });
    // pipeline, not .pipe(): a read error must fail the returned stream, not go unhandled.
    return pipe(createReadStream(this.pathOf(digest)), verify, () => {});
  }

  async stat(digest: string): Promise<ArtifactRef | undefined> {
    checkDigest(digest);
    try {
      const s = await stat(this.pathOf(digest));
      return { digest, size: s.size };
    } catch {
      return undefined;
    }
  }

  async delete(digest: string): Promise<void> {
    checkDigest(digest);
    await rm(this.pathOf(digest), { force: true });
  }
}
