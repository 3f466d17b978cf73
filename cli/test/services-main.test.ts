import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, testPostgres, waitFor, type TestPostgres } from "@lathe/testing";
import { checkHealth } from "../src/commands/health.js";

const repo = fileURLToPath(new URL("../..", import.meta.url));
const services = [
  ["registry", "lathe.registry.v1.RegistryService"],
  ["dataset", "lathe.dataset.v1.DatasetService"],
  ["synthgen", "lathe.synthgen.v1.SynthGenService"],
  ["trainer", "lathe.trainer.v1.TrainerService"],
  ["evaluator", "lathe.evaluator.v1.EvaluatorService"],
  ["gateway", "lathe.gateway.v1.GatewayService"],
] as const;

describe("each service's main.ts as its own process", () => {
  let pg: TestPostgres;
  let dataDir: string;
  beforeAll(async () => {
    pg = await testPostgres();
    dataDir = mkdtempSync(join(tmpdir(), "lathe-main-"));
  });
  afterAll(async () => {
    await pg?.drop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  for (const [name, fullName] of services) {
    it(`${name} starts, reports SERVING, and drains on SIGTERM`, async () => {
      const port = await freePort();
      const child = spawn(process.execPath, [join(repo, "services", name, "dist", "main.js")], {
        env: { ...process.env, LATHE_GRPC_HOST: "127.0.0.1", LATHE_GRPC_PORT: String(port), LATHE_PG_URL: pg.url, LATHE_NATS_URL: process.env["LATHE_TEST_NATS_URL"], LATHE_EVENTS_PREFIX: `main${name}`, LATHE_API_KEYS: "k=acme", LATHE_DATA_DIR: dataDir, LATHE_LOG_LEVEL: "info" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const exited = once(child, "exit");
      try {
        await waitFor(() => out.includes("grpc server listening"), { timeoutMs: 30_000, what: `${name} to listen:\n${out}` });
        // The boot log shows the config with the API keys redacted.
        expect(out).toContain('"LATHE_API_KEYS":"[redacted: 1 entries]"');
        expect(out).not.toContain('"k"');
        const address = `127.0.0.1:${port}`;
        const health = await checkHealth(address);
        expect(health[fullName]).toBe("SERVING");
      } finally {
        child.kill("SIGTERM");
      }
      const [code] = await exited;
      expect(code, out).toBe(0);
      expect(out).toContain("stopped");
    });
  }

  it("refuses to start on a bad configuration, naming the variable", async () => {
    const child = spawn(process.execPath, [join(repo, "services", "registry", "dist", "main.js")], {
      env: { ...process.env, LATHE_GRPC_PORT: "not-a-port", LATHE_API_KEYS: "justakey", LATHE_PG_URL: "mysql://x" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const [code] = await once(child, "exit");
    expect(code).toBe(1);
    expect(err).toContain("LATHE_GRPC_PORT");
    expect(err).toContain("LATHE_API_KEYS");
    expect(err).toContain("LATHE_PG_URL");
  });
});
