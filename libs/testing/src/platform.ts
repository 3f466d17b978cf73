import { baseConfigSchema, loadConfig, startPlatform, type RunningPlatform, type ServiceFactory } from "@lathe/kit";
import { cleanupNatsPrefix, testNats } from "./test-nats.js";
import { testPostgres } from "./test-postgres.js";

/** API keys of the two tenants every test platform knows. */
export const testKeys = { acme: "key-acme-0123456789", globex: "key-globex-0123456789" } as const;

export interface TestPlatform {
  readonly platform: RunningPlatform;
  /** `127.0.0.1:<port>` of its gRPC server. */
  readonly address: string;
  readonly pgUrl: string;
  readonly nats: { url: string; prefix: string } | undefined;
  /** Stops the services and drops the test's database and streams. */
  stop(): Promise<void>;
}

/**
 * Starts services as `lathe` does, on real servers: a fresh Postgres database and a private
 * event prefix on NATS (or `natsUrl` given, e.g. a private nats-server the test restarts), on
 * a free port, with the two test tenants' keys.
 */
export async function startTestPlatform(opts: {
  factories: readonly ServiceFactory[];
  natsUrl?: string;
  /** Use the in-process bus instead of NATS. */
  memoryBus?: boolean;
  env?: Record<string, string>;
}): Promise<TestPlatform> {
  const pg = await testPostgres();
  const nats = opts.memoryBus ? undefined : opts.natsUrl ? { url: opts.natsUrl, prefix: "" } : await testNats();
  const config = loadConfig(baseConfigSchema, {
    LATHE_GRPC_HOST: "127.0.0.1",
    LATHE_GRPC_PORT: "0",
    LATHE_PG_URL: pg.url,
    LATHE_NATS_URL: nats?.url,
    LATHE_EVENTS_PREFIX: nats?.prefix ?? "",
    LATHE_API_KEYS: `${testKeys.acme}=acme,${testKeys.globex}=globex`,
    LATHE_LOG_LEVEL: process.env["LATHE_TEST_LOG_LEVEL"] ?? "silent",
    LATHE_OUTBOX_POLL_MS: "100",
    LATHE_SHUTDOWN_GRACE_MS: "2000",
    LATHE_DATA_DIR: `/tmp/lathe-test-${pg.database}`,
    ...opts.env,
  });
  let platform: RunningPlatform;
  try {
    platform = await startPlatform({ name: "test", config, factories: opts.factories });
  } catch (err) {
    await pg.drop();
    throw err;
  }
  return {
    platform,
    address: platform.address,
    pgUrl: pg.url,
    nats,
    async stop() {
      await platform.stop();
      await pg.drop();
      if (nats?.prefix) await cleanupNatsPrefix(nats.url, nats.prefix);
    },
  };
}
