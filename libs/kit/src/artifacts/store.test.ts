import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AppError } from "../errors.js";
import { cachedFolder, putFolder } from "./folder.js";
import { LocalArtifactStore } from "./store.js";
import { tempDir, type TempDir } from "../../../testing/src/index.js";

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<AppError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe("LocalArtifactStore", () => {
  let dir: TempDir;
  let store: LocalArtifactStore;
  beforeEach(async () => {
    dir = await tempDir("lathe-artifacts-");
    store = new LocalArtifactStore(dir.path);
  });
  afterEach(() => dir.dispose());

  // 3 MiB of varied bytes, more than one stream chunk.
  const content = Buffer.alloc(3 * 1024 * 1024 + 17, 0).map((_, i) => (i * 31 + (i >> 10)) & 0xff);

  it("gives a buffer and a stream of the same bytes the same sha256 digest, and streams them back", async () => {
    const fromBuffer = await store.put(content);
    async function* chunks() {
      for (let i = 0; i < content.length; i += 65_537) yield content.subarray(i, i + 65_537);
    }
    const fromStream = await store.put(chunks());
    const fromReadable = await store.put(Readable.from([content.subarray(0, 10), content.subarray(10)]));
    expect(fromBuffer).toEqual({ digest: sha256(content), size: content.length });
    expect(fromStream).toEqual(fromBuffer);
    expect(fromReadable).toEqual(fromBuffer);

    expect((await readAll(await store.get(fromBuffer.digest))).equals(content)).toBe(true);
    expect(await store.stat(fromBuffer.digest)).toEqual(fromBuffer);
  });

  it("stores a plain Uint8Array and an empty blob", async () => {
    const bytes = new Uint8Array([1, 2, 3]);
    expect(await store.put(bytes)).toEqual({ digest: sha256(bytes), size: 3 });
    const empty = await store.put(new Uint8Array(0));
    expect(empty).toEqual({ digest: sha256(new Uint8Array(0)), size: 0 });
    expect(await readAll(await store.get(empty.digest))).toHaveLength(0);
  });

  it("fails the get stream with ARTIFACT_CORRUPTED when the blob changed on disk", async () => {
    const ref = await store.put(Buffer.from("the original weights"));
    await writeFile(join(dir.path, "sha256", ref.digest.slice(0, 2), ref.digest), "tampered weights!!!!");
    const stream = await store.get(ref.digest);
    const err = await rejection(readAll(stream));
    expect([err.code, err.reason, err.metadata["digest"]]).toEqual(["INTERNAL", "ARTIFACT_CORRUPTED", ref.digest]);
  });

  it("fails the get stream, rather than never ending, when the blob cannot be read", async () => {
    const digest = sha256(Buffer.from("x"));
    // A directory where the blob should be: stat finds it, reading it fails (EISDIR), like an I/O error.
    await mkdir(join(dir.path, "sha256", digest.slice(0, 2), digest), { recursive: true });
    const stream = await store.get(digest);
    await expect(readAll(stream)).rejects.toThrow();
  }, 5_000);

  it.each(["", "abc", "A".repeat(64), `${"0".repeat(63)}g`, `../${"0".repeat(61)}`])("answers INVALID_ARGUMENT for digest %j", async (digest) => {
    for (const call of [store.get(digest), store.stat(digest), store.delete(digest)]) {
      const err = await rejection(call);
      expect([err.code, err.reason, err.field]).toEqual(["INVALID_ARGUMENT", "INVALID_DIGEST", "digest"]);
    }
  });

  it("answers NOT_FOUND for a blob it does not have, also after delete", async () => {
    const missing = sha256(Buffer.from("never stored"));
    const err = await rejection(store.get(missing));
    expect([err.code, err.reason]).toEqual(["NOT_FOUND", "ARTIFACT_NOT_FOUND"]);
    expect(await store.stat(missing)).toBeUndefined();

    const ref = await store.put(Buffer.from("short-lived"));
    await store.delete(ref.digest);
    await store.delete(ref.digest); // again: no error
    expect((await rejection(store.get(ref.digest))).code).toBe("NOT_FOUND");
  });

  it("stores concurrent puts of the same content once, readable and whole", async () => {
    const refs = await Promise.all(Array.from({ length: 8 }, () => store.put(content)));
    expect(new Set(refs.map((r) => r.digest))).toEqual(new Set([sha256(content)]));
    expect((await readAll(await store.get(sha256(content)))).equals(content)).toBe(true);
    expect(await readdir(join(dir.path, "sha256", sha256(content).slice(0, 2)))).toEqual([sha256(content)]);
    expect(await readdir(join(dir.path, "tmp"))).toEqual([]);
  });

  it("leaves no temporary file behind when the source stream fails", async () => {
    async function* broken() {
      yield Buffer.from("partial");
      throw new Error("upload interrupted");
    }
    await expect(store.put(broken())).rejects.toThrow("upload interrupted");
    expect(await readdir(join(dir.path, "tmp"))).toEqual([]);
    await rm(join(dir.path, "tmp"), { recursive: true });
  });
});

describe("cachedFolder", () => {
  let dir: TempDir;
  beforeEach(async () => {
    dir = await tempDir("lathe-folder-cache-");
  });
  afterEach(() => dir.dispose());

  it("serves concurrent callers for one digest one whole folder, and leaves no temporary folder", async () => {
    const store = new LocalArtifactStore(join(dir.path, "store"));
    const src = join(dir.path, "src");
    await mkdir(join(src, "sub"), { recursive: true });
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    await writeFile(join(src, "config.json"), "{}");
    await writeFile(join(src, "sub", "weights.bin"), big);
    const ref = await putFolder(store, src);
    const cache = join(dir.path, "cache");
    const dirs = await Promise.all(Array.from({ length: 6 }, () => cachedFolder(store, ref.digest, cache)));
    expect(new Set(dirs).size).toBe(1);
    expect((await readFile(join(dirs[0]!, "sub", "weights.bin"))).equals(big)).toBe(true);
    expect(await readdir(cache)).toEqual([ref.digest]);
  });
});
