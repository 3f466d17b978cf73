// `lathe … | head`: a command whose reader closes the pipe early exits 0 without a word, for
// tables and --json alike (it crashed with an uncaught EPIPE and a stack trace).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDatasetService } from "@lathe/dataset";
import { startTestPlatform, testKeys, type TestPlatform } from "@lathe/testing";
import { cliPath, runCli } from "./cli-process.js";

/** Runs `lathe ARGS | head -c 1` in a shell: lathe's exit status and stderr, and what head read. */
function intoHead(args: string[]): Promise<{ code: number; stderr: string; read: string }> {
  const quoted = [process.execPath, cliPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  return new Promise((resolve, reject) => {
    // PIPESTATUS[0] is lathe's status; its stderr goes to ours (fd 3) so the pipe carries stdout alone.
    const sh = spawn("bash", ["-c", `${quoted} 2>&3 | head -c 1; echo " $\{PIPESTATUS[0]}" >&4`], { stdio: ["ignore", "pipe", "ignore", "pipe", "pipe"] });
    let read = "";
    let stderr = "";
    let status = "";
    sh.stdout!.on("data", (d: Buffer) => (read += d.toString()));
    (sh.stdio[3] as NodeJS.ReadableStream).on("data", (d: Buffer) => (stderr += d.toString()));
    (sh.stdio[4] as NodeJS.ReadableStream).on("data", (d: Buffer) => (status += d.toString()));
    sh.on("error", reject);
    sh.on("close", () => resolve({ code: Number(status.trim()), stderr, read }));
  });
}

describe("lathe's output into a pipe that closes early", () => {
  let t: TestPlatform;
  let conn: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), "lathe-pipe-"));

  beforeAll(async () => {
    t = await startTestPlatform({ factories: [createDatasetService], memoryBus: true });
    conn = ["--server", t.address, "--api-key", testKeys.acme];
    // Far more than a pipe holds (64 KiB), so lathe is still writing when head has gone.
    const rows = Array.from({ length: 3000 }, (_, i) => JSON.stringify({ messages: [{ role: "user", content: `Question number ${i}: how do I reset the device called unit-${i}?` }, { role: "assistant", content: `Hold the button of unit-${i} for ten seconds, then wait for the light to blink twice (${i}).` }] }));
    writeFileSync(join(dir, "rows.jsonl"), `${rows.join("\n")}\n`);
    const created = await runCli(["datasets", "create", "big", join(dir, "rows.jsonl"), ...conn]);
    expect(created.code, created.stderr).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("exits 0 with nothing on stderr, printing a table or --json", async () => {
    for (const args of [["datasets", "rows", "big@v1", "--limit", "3000"], ["datasets", "rows", "big@v1", "--limit", "3000", "--json"]]) {
      const r = await intoHead([...args, ...conn]);
      expect(r.read).toHaveLength(1);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
    }
  });
});
