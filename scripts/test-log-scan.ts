import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { plantedSecrets } from "../libs/kit/test/planted-secrets.js";

/**
 * vitest globalSetup: before the run, points LATHE_TEST_LOG_DIR at a fresh folder (every logger
 * of every test process then writes a copy of its lines there, at level trace); after it, fails
 * the run if any planted secret (libs/kit/test/planted-secrets.ts) appears in any of those logs.
 * The folder is removed when clean and kept, named in the error, when not.
 */
let dir: string | undefined;
let owned = false;

export function setup(): void {
  dir = process.env["LATHE_TEST_LOG_DIR"];
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), "lathe-test-logs-"));
    owned = true;
    process.env["LATHE_TEST_LOG_DIR"] = dir;
  }
}

export function teardown(): void {
  if (!dir) return;
  const found = scanLogs(dir);
  if (found.length > 0) {
    // vitest reports an error thrown here but still exits 0: set the exit code as well.
    process.exitCode = 1;
    throw new Error(`planted secrets reached the logs (kept in ${dir}):\n  ${found.join("\n  ")}`);
  }
  if (owned) rmSync(dir, { recursive: true, force: true });
}

/** Where each planted secret occurs in the logs under `dir`: `what in file:line`. */
export function scanLogs(dir: string): string[] {
  const found: string[] = [];
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith(".log"));
  } catch {
    return found;
  }
  for (const f of files) {
    const lines = readFileSync(join(dir, f), "utf8").split("\n");
    for (const [what, value] of Object.entries(plantedSecrets)) {
      const at = lines.findIndex((l) => l.includes(value));
      if (at >= 0) found.push(`${what} in ${f}:${at + 1} (${lines.filter((l) => l.includes(value)).length} lines)`);
    }
  }
  return found;
}
