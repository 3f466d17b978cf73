import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SynthGenServiceClient, SynthGenServiceService } from "@lathe/proto/lathe/synthgen/v1/synthgen_service";
import type { AppError } from "../src/index.js";
import { call, createClient, unimplementedHandlers } from "../src/index.js";
import { startTestPlatform, testKeys, type TestPlatform } from "../../testing/src/index.js";
import { plantedSecrets } from "./planted-secrets.js";

// Plants secrets where a careless log would pick them up: API keys on calls (known and unknown),
// a card number and an email in the parameters of queries that fail (Postgres and PGlite errors
// carry the values in their message, detail, `where` and, for PGlite, `params`). The calls fail
// with INTERNAL and the kit logs them; this file checks its own logs, and scripts/test-log-scan.ts
// checks every log of the run.

const card = plantedSecrets["planted card number"];
const email = plantedSecrets["planted email"];
const content = plantedSecrets["planted file content"];

type ServiceFactory = Parameters<typeof startTestPlatform>[0]["factories"][number];

/** A service whose GetGenerationJob runs a query with the planted values that the database refuses. */
const failingQueries: ServiceFactory = async (deps) => ({
  name: "leaky",
  register(server) {
    server.add("lathe.synthgen.v1.SynthGenService", SynthGenServiceService, {
      ...unimplementedHandlers(SynthGenServiceService, "test"),
      async getGenerationJob(req) {
        const queries = {
          int: sql`select ${`${card} ${email}`}::int`,
          jsonb: sql`select ${`{"row":"${card} ${email} ${content} \\u0000"}`}::jsonb`,
          date: sql`select (${`${email} ${card}`}::text)::date`,
        };
        await queries[req.name as keyof typeof queries].execute(deps.db);
        return { generationJob: undefined };
      },
    });
  },
  async start() {},
  async stop() {},
});

const logDir = process.env["LATHE_TEST_LOG_DIR"];
/** This process's log lines so far (when the run keeps logs). */
const ownLogs = () => (logDir ? readdirSync(logDir).filter((f) => f.endsWith(`-${process.pid}.log`)).map((f) => readFileSync(join(logDir, f), "utf8")).join("") : "");

describe.each([
  ["Postgres", {}],
  ["PGlite", { LATHE_PG_URL: "" }],
])("no secret reaches the logs of a failed call (%s)", (_db, env: Record<string, string>) => {
  let t: TestPlatform;
  let client: SynthGenServiceClient;
  beforeAll(async () => {
    t = await startTestPlatform({
      factories: [failingQueries],
      memoryBus: true,
      env: { ...env, LATHE_API_KEYS: `${testKeys.acme}=acme,${plantedSecrets["planted API key"]}=planted`, LATHE_LOG_LEVEL: "silent" },
    });
    client = createClient(SynthGenServiceClient, t.address, { apiKey: plantedSecrets["planted API key"] });
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await t?.stop();
  });

  it.each(["int", "jsonb", "date"])("answers a failing %s query with INTERNAL and logs it without the values", async (query) => {
    const err = await call(client, "getGenerationJob", { name: query }).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as AppError).code).toBe("INTERNAL");
    expect((err as AppError).message).toBe("internal error");
    if (logDir) {
      expect(ownLogs()).toContain('"msg":"rpc failed"');
      for (const value of [card, email, content, plantedSecrets["planted API key"]]) expect(ownLogs()).not.toContain(value);
    }
  });

  it("refuses an unknown planted API key without logging it", async () => {
    const stranger = createClient(SynthGenServiceClient, t.address, { apiKey: plantedSecrets["planted unknown API key"] });
    try {
      const err = await call(stranger, "getGenerationJob", { name: "int" }).then(() => undefined, (e: unknown) => e as AppError);
      expect(err?.code).toBe("UNAUTHENTICATED");
    } finally {
      stranger.close();
    }
    expect(ownLogs()).not.toContain(plantedSecrets["planted unknown API key"]);
  });
});
