import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../libs/kit/src/index.js";
import { freePort, testPostgres, waitFor, type TestPostgres } from "../../libs/testing/src/index.js";
import { repoRoot } from "./modules.js";

// The images' build step outside Docker: the same `pnpm deploy --prod --offline` of the CLI and
// the same services/<name> layout as docker/node.Dockerfile, then a service started from it the
// way the chart starts it (migrate, then serve with LATHE_MIGRATIONS=verify), checked with the
// image's own HEALTHCHECK script. Skipped, saying why, when the pnpm store cannot serve it offline.

const services = ["dataset", "synthgen", "trainer", "evaluator", "registry", "gateway"];
let dir = "";
let skipReason = "";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "lathe-pruned-"));
  const r = spawnSync("bash", ["-c", `. scripts/pnpm.sh && pnpm --filter @lathe/cli --prod --offline deploy "${join(dir, "cli")}"`], { cwd: repoRoot, encoding: "utf8", timeout: 150_000 });
  if (r.status !== 0) {
    skipReason = `pnpm deploy --offline failed (the store lacks a package, or pnpm is missing): ${(r.stderr || r.stdout || String(r.error)).trim().split("\n").slice(-3).join(" / ")}`;
    return;
  }
  mkdirSync(join(dir, "services"));
  for (const s of services) symlinkSync(join("..", "cli", "node_modules", "@lathe", s), join(dir, "services", s));
  copyFileSync(join(repoRoot, "docker/healthcheck.mjs"), join(dir, "cli", "healthcheck.mjs"));
}, 180_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: dir, env: { PATH: process.env.PATH ?? "", ...env } });
    let output = "";
    p.stdout.on("data", (d) => (output += d));
    p.stderr.on("data", (d) => (output += d));
    p.on("exit", (code) => resolve({ code, output }));
  });
}

describe("the pruned install (pnpm deploy, as the images build it)", () => {
  let db: TestPostgres;
  beforeAll(async () => {
    if (!skipReason) db = await testPostgres();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("holds the services' entry points and production dependencies only", (ctx) => {
    if (skipReason) {
      console.warn(`skipped: ${skipReason}`);
      return ctx.skip();
    }
    for (const s of services) expect(existsSync(join(dir, "services", s, "dist", "main.js")), s).toBe(true);
    expect(existsSync(join(dir, "cli", "dist", "main.js"))).toBe(true);
    const installed = readdirSync(join(dir, "cli", "node_modules", ".pnpm"));
    for (const dev of ["vitest@", "eslint@", "@bufbuild+buf@", "ts-proto@", "@lathe+testing@", "fast-check@", "kubernetes-models@"]) {
      expect(installed.filter((p) => p.startsWith(dev)), `${dev} is a dev dependency`).toEqual([]);
    }
  });

  it("migrates a schema with `main.js migrate`, then serves with LATHE_MIGRATIONS=verify and passes the image's health check", async (ctx) => {
    if (skipReason) return ctx.skip();
    const data = join(dir, "data");
    const port = await freePort();
    const env = { LATHE_PG_URL: db.url, LATHE_DATA_DIR: data, LATHE_LOG_LEVEL: "warn", LATHE_API_KEYS: "k=acme", LATHE_GRPC_PORT: String(port), LATHE_GRPC_HOST: "127.0.0.1" };
    // Verify before migrating: refused, saying what to run.
    const early = await run(["services/registry/dist/main.js"], { ...env, LATHE_MIGRATIONS: "verify" });
    expect(early.code).toBe(1);
    expect(early.output).toContain("main.js migrate");
    const migrated = await run(["services/registry/dist/main.js", "migrate"], env);
    expect(migrated.code, migrated.output).toBe(0);
    const server = spawn(process.execPath, ["services/registry/dist/main.js"], { cwd: dir, env: { PATH: process.env.PATH ?? "", ...env, LATHE_MIGRATIONS: "verify" } });
    let output = "";
    server.stderr.on("data", (d) => (output += d));
    const exited = new Promise<number | null>((resolve) => server.on("exit", resolve));
    try {
      await waitFor(async () => ((await run(["cli/healthcheck.mjs"], { LATHE_GRPC_PORT: String(port) })).code === 0 ? true : undefined), { timeoutMs: 60_000, intervalMs: 500, what: "the registry's health check" });
    } catch (err) {
      throw new Error(`${(err as Error).message}; the registry said: ${output}`);
    } finally {
      server.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  });

  it("refuses to start against a schema a newer release migrated", async (ctx) => {
    if (skipReason) return ctx.skip();
    const database = await openDatabase({ pgUrl: db.url });
    try {
      await database.db.withSchema("registry").insertInto("kysely_migration").values({ name: "9999_from_the_future", timestamp: new Date().toISOString() }).execute();
    } finally {
      await database.close();
    }
    const env = { LATHE_PG_URL: db.url, LATHE_DATA_DIR: join(dir, "data2"), LATHE_API_KEYS: "k=acme", LATHE_GRPC_PORT: "0" };
    for (const args of [["services/registry/dist/main.js"], ["services/registry/dist/main.js", "migrate"]]) {
      const r = await run(args, env);
      expect(r.code).toBe(1);
      expect(r.output).toContain("9999_from_the_future");
    }
  });
});
