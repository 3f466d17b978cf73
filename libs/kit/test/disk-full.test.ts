import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asAppError, LocalArtifactStore } from "../src/index.js";

// A real full disk: a 1 MiB tmpfs. Mounting needs root; elsewhere the test says why it skips.
const root = process.getuid?.() === 0;
if (!root) console.warn("disk-full.test.ts: skipped, mounting a small tmpfs needs root");

describe.skipIf(!root)("LocalArtifactStore on a full disk", () => {
  let mnt: string;
  beforeAll(async () => {
    mnt = await mkdtemp(join(tmpdir(), "lathe-full-"));
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
  });
  afterAll(async () => {
    execFileSync("umount", [mnt]);
    await rm(mnt, { recursive: true, force: true });
  });

  it("fails a put that does not fit with DISK_FULL, removes its temporary file, and takes the next that fits", async () => {
    const store = await LocalArtifactStore.open(mnt);
    async function* big() {
      for (let i = 0; i < 40; i++) yield Buffer.alloc(64 * 1024, i);
    }
    const err = await store.put(big()).then(() => undefined, (e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toBe("ENOSPC");
    expect([asAppError(err).code, asAppError(err).reason]).toEqual(["RESOURCE_EXHAUSTED", "DISK_FULL"]);
    expect(await readdir(join(mnt, "tmp"))).toEqual([]);
    // The space came back: a small blob still fits.
    const ref = await store.put(Buffer.alloc(256 * 1024, 7));
    expect(ref.size).toBe(256 * 1024);
    await store.delete(ref.digest);
  });
});

describe("LocalArtifactStore.open", () => {
  it("removes temporary files a killed process left, and keeps those another process is still writing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lathe-sweep-"));
    try {
      await mkdir(join(dir, "tmp"));
      const old = new Date(Date.now() - 60 * 60_000);
      for (const name of ["killed-1", "killed-2"]) {
        await writeFile(join(dir, "tmp", name), "partial");
        await utimes(join(dir, "tmp", name), old, old);
      }
      await writeFile(join(dir, "tmp", "in-progress"), "still being written");
      const store = await LocalArtifactStore.open(dir, { staleTmpMs: 60_000 });
      expect(await readdir(join(dir, "tmp"))).toEqual(["in-progress"]);
      // A store on a folder without tmp/ yet opens too.
      await expect(LocalArtifactStore.open(join(dir, "fresh"))).resolves.toBeInstanceOf(LocalArtifactStore);
      expect((await store.put(Buffer.from("after the sweep"))).size).toBe(15);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
