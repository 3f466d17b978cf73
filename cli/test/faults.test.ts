import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTinyModel } from "@lathe/models";
import { freePort, testNats, testPostgres, waitFor, type TestPostgres } from "@lathe/testing";
import { checkHealth } from "../src/commands/health.js";
import { runCli, startUp } from "./cli-process.js";

/**
 * The data dir on a small filesystem of its own (a tmpfs this test mounts), filled during an
 * upload, an import and a training job. Each ends with RESOURCE_EXHAUSTED at once, nothing
 * partial stays visible, the server keeps serving, and SIGTERM still ends it cleanly.
 */

const mountTmpfs = (dir: string, size: string): boolean => {
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

const root = mkdtempSync(join(tmpdir(), "lathe-faults-"));
const dataDir = join(root, "data");
mkdirSync(dataDir);
const mounted = mountTmpfs(dataDir, "24m");
if (!mounted) console.warn("faults.test.ts: skipped: mounting a tmpfs needs root (mount -t tmpfs); run the suite as root, as CI does");

/** Fills the filesystem of `dir` until `leaveBytes` are free; returns the filler's path. */
function fill(dir: string, leaveBytes: number): string {
  const free = () => {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  };
  const path = join(dir, `filler-${Date.now()}`);
  const size = Math.max(0, free() - leaveBytes);
  writeFileSync(path, Buffer.alloc(size));
  return path;
}

function chatRows(n: number, pad = ""): string {
  return (
    Array.from({ length: n }, (_, i) =>
      JSON.stringify({
        messages: [
          { role: "user", content: `Ticket ${i}: my router keeps restarting after the update, what should I do? ${pad}` },
          { role: "assistant", content: `Unplug router ${i} for thirty seconds, then hold reset for ten seconds and log in again with the default password.` },
        ],
      }),
    ).join("\n") + "\n"
  );
}

const describeMounted = mounted ? describe : describe.skip;

describeMounted("a full disk (the data dir on a 24 MB filesystem)", () => {
  let pg: TestPostgres;
  let up: Awaited<ReturnType<typeof startUp>>;
  let conn: string[];
  const local = join(root, "local");

  beforeAll(async () => {
    pg = await testPostgres();
    const nats = await testNats();
    mkdirSync(local);
    await writeTinyModel(join(local, "tiny"), { seed: 1 });
    // About 11 MB of weights: more than is left once the disk is nearly full.
    await writeTinyModel(join(local, "big"), { seed: 2, hidden: 256, layers: 4, intermediate: 512, heads: 4, kvHeads: 2 });
    writeFileSync(join(local, "small.jsonl"), chatRows(24));
    // About 30 MB: more than the whole filesystem. Lines over max_line_bytes are counted, not
    // parsed, so the upload runs at the speed of the disk.
    writeFileSync(join(local, "huge.jsonl"), chatRows(24) + chatRows(15, "x".repeat(2 << 20)));
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort()), "--pg-url", pg.url, "--nats-url", nats.url], { ...process.env, LATHE_EVENTS_PREFIX: nats.prefix, LATHE_SHUTDOWN_GRACE_MS: "3000" });
    conn = ["--server", up.address, "--data-dir", dataDir];
    expect((await runCli(["models", "create", "tiny", "--path", join(local, "tiny"), ...conn])).code).toBe(0);
    const small = await runCli(["datasets", "create", "support", join(local, "small.jsonl"), ...conn]);
    expect(small.stderr).toBe("");
  }, 120_000);

  afterAll(async () => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    await pg?.drop();
    try {
      execFileSync("umount", [dataDir], { stdio: "ignore" });
    } catch {
      /* already unmounted */
    }
    rmSync(root, { recursive: true, force: true });
  });

  const tmpFiles = () => {
    const tmp = join(dataDir, "artifacts", "tmp");
    return existsSync(tmp) ? readdirSync(tmp) : [];
  };

  it("ends an upload that does not fit with RESOURCE_EXHAUSTED at once, and keeps no part of it", async () => {
    const started = Date.now();
    const r = await runCli(["datasets", "create", "overflow", join(local, "huge.jsonl"), ...conn]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("RESOURCE_EXHAUSTED");
    expect(r.stderr).toMatch(/disk/i);
    // Well before the CLI's 30-second idle timeout: the server answered as soon as the write failed.
    expect(Date.now() - started).toBeLessThan(25_000);
    const got = await runCli(["datasets", "report", "overflow@v1", ...conn]);
    expect(got.code).toBe(1);
    expect(got.stderr).toContain("NOT_FOUND");
    // The dataset the command made for the upload is gone with it.
    expect((await runCli(["datasets", "list", "--json", ...conn])).stdout).not.toContain("datasets/overflow");
    expect(tmpFiles()).toEqual([]);
  });

  it("ends an import that does not fit with RESOURCE_EXHAUSTED, and registers nothing", async () => {
    const filler = fill(dataDir, 2 << 20);
    try {
      const r = await runCli(["models", "create", "big", "--path", join(local, "big"), ...conn]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("RESOURCE_EXHAUSTED");
      const got = await runCli(["models", "get", "big", ...conn]);
      expect(got.stderr).toContain("NOT_FOUND");
      expect(tmpFiles()).toEqual([]);
      expect(readdirSync(join(dataDir, "cache", "registry", "staging"))).toEqual([]);
    } finally {
      rmSync(filler, { force: true });
    }
  });

  it("fails a training job whose checkpoints do not fit with a disk-full error, and lists no partial checkpoint", async () => {
    const split = await runCli(["datasets", "derive", "support@v1", "--split", "0.25", "--seed", "1", "--version-id", "s", ...conn]);
    expect(split.stderr).toBe("");
    const job = (id: string, more: string[]) => ["jobs", "create", "--id", id, "--model", "tiny", "--train", "support@s-train", "--epochs", "2", "--batch-size", "2", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--max-seq-length", "128", "--no-packing", "--warmup-ratio", "0", ...more, ...conn];
    // A first job, with room to spare, puts the model in the trainer's caches.
    const warm = await runCli(job("warm", ["--watch"]));
    expect(warm.stderr).toBe("");
    // Then the disk is filled to within a few checkpoints' worth, and a job saving at every step
    // is created (its pinned inputs fit) and runs out of room while it trains.
    const filler = fill(dataDir, 96 << 10);
    try {
      const created = await runCli(job("full", ["--save-steps", "1", "--json"]));
      expect(created.stderr).toBe("");
      const final = await waitFor(
        async () => {
          const got = JSON.parse((await runCli(["jobs", "get", "full", "--json", ...conn])).stdout) as { state: string; error?: { code?: string; reason?: string; message?: string } };
          return ["STATE_FAILED", "STATE_SUCCEEDED", "STATE_CANCELLED"].includes(got.state) ? got : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 500, what: "the job to end" },
      );
      expect(final.state).toBe("STATE_FAILED");
      expect(JSON.stringify(final.error)).toMatch(/DISK_FULL|disk is full/i);
      const checkpoints = await runCli(["jobs", "checkpoints", "full", "--json", ...conn]);
      expect(checkpoints.code).toBe(0);
      for (const c of (JSON.parse(checkpoints.stdout) as { checkpoints?: { artifactDigest?: string }[] }).checkpoints ?? []) expect(c.artifactDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    } finally {
      rmSync(filler, { force: true });
    }
  });

  it("keeps serving other calls afterwards, and exits cleanly on SIGTERM within its grace period", async () => {
    for (const status of Object.values(await checkHealth(up.address))) expect(status).toBe("SERVING");
    const list = await runCli(["models", "list", "--json", ...conn]);
    expect(list.stdout).toContain("models/tiny");
    const again = await runCli(["datasets", "create", "after", join(local, "small.jsonl"), ...conn]);
    expect(again.code).toBe(0);
    const stopping = Date.now();
    up.child.kill("SIGTERM");
    expect(await up.exited).toBe(0);
    expect(Date.now() - stopping).toBeLessThan(10_000);
  });
});
