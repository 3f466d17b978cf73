import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const fixture = fileURLToPath(new URL("./fixtures/stuck-service.mjs", import.meta.url));

/** Starts the fixture, sends SIGTERM once it listens, and resolves with how it ended (or `running` if it had not after `waitMs`). */
async function stopProcess(mode: "main" | "owner", env: Record<string, string>, waitMs = 30_000): Promise<{ code: number | null | "running"; out: string }> {
  const dataDir = await mkdtemp(join(tmpdir(), "lathe-shutdown-"));
  const child = spawn(process.execPath, [fixture, mode], {
    env: {
      ...process.env,
      LATHE_DATA_DIR: dataDir,
      LATHE_GRPC_HOST: "127.0.0.1",
      LATHE_GRPC_PORT: "0",
      LATHE_API_KEYS: "key-shutdown-0123456789=acme",
      LATHE_LOG_LEVEL: "info",
      LATHE_SHUTDOWN_GRACE_MS: "1000",
      // The test Postgres when there is one (no schema is made), else the slower embedded PGlite.
      ...(process.env["LATHE_TEST_PG_URL"] ? { LATHE_PG_URL: process.env["LATHE_TEST_PG_URL"] } : {}),
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  try {
    await new Promise<void>((resolve, reject) => {
      // Once its SIGTERM handler is in place.
      const check = () => (/"started; SIGTERM|owner: started/.test(out) ? resolve() : undefined);
      child.stdout.on("data", check);
      void exited.then((code) => reject(new Error(`the service exited with ${code} before it listened:\n${out}`)));
    });
    child.kill("SIGTERM");
    const code = await Promise.race([exited, new Promise<"running">((r) => setTimeout(() => r("running"), waitMs))]);
    return { code, out };
  } finally {
    child.kill("SIGKILL");
    await rm(dataDir, { recursive: true, force: true });
  }
}

const lines = (out: string): { msg?: string; part?: string; resources?: string[] }[] =>
  out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { msg?: string });

describe("SIGTERM ends the process whatever a service leaves behind", () => {
  it("runMain exits 0 after a clean stop", async () => {
    const { code, out } = await stopProcess("main", {});
    expect(code, out).toBe(0);
    expect(lines(out).map((l) => l.msg)).toContain("stopped");
  });

  it("runMain exits 1 when a service's stop never returns, naming it", async () => {
    const { code, out } = await stopProcess("main", { STUCK_HANG: "1" });
    expect(code, out).toBe(1);
    expect(lines(out).find((l) => l.msg === "close timed out; leaving it behind")?.part).toBe("service stuck");
  });

  it("a process owner's stop({ exit: true }) exits although a timer and a socket are left open, logging them", async () => {
    const { code, out } = await stopProcess("owner", { STUCK_LEAK: "1" });
    expect(code, out).toBe(0);
    expect(out).toContain("owner: stopped");
    const left = lines(out).find((l) => l.msg === "handles still open after stop; exiting");
    expect(left?.resources, out).toEqual(expect.arrayContaining(["Timeout", "TCPServerWrap"]));
  });

  it("runMain exits when a service both hangs in stop and leaks handles", async () => {
    const { code, out } = await stopProcess("main", { STUCK_HANG: "1", STUCK_LEAK: "1" });
    expect(code, out).toBe(1);
  });
});
