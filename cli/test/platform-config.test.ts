import { ConfigError, redactConfig } from "@lathe/kit";
import { trainerOptionsOf } from "@lathe/trainer";
import { describe, expect, it } from "vitest";
import { latheConfig } from "../src/platform.js";

const opts = (env: NodeJS.ProcessEnv) => ({ dataDir: "/tmp/lathe-config-test", host: "127.0.0.1", port: 0, env });

describe("lathe up's config", () => {
  it("passes a LATHE_TRAINER_* variable of its env to the trainer, and logs it at boot with the rest", () => {
    const config = latheConfig(opts({ LATHE_TRAINER_POLL_MS: "250", LATHE_TRAINER_WORKERS: "2", LATHE_API_KEYS: "extra=acme" }), "local");
    expect(trainerOptionsOf(config)).toMatchObject({ LATHE_TRAINER_POLL_MS: 250, LATHE_TRAINER_WORKERS: 2, LATHE_TRAINER_LEASE_MS: 60_000 });
    expect(config.LATHE_API_KEYS).toEqual({ local: "default", extra: "acme" });
    // What startPlatform logs as `starting`.
    expect(redactConfig(config as unknown as Record<string, unknown>)).toMatchObject({ LATHE_TRAINER_POLL_MS: 250, LATHE_TRAINER_WORKERS: 2, LATHE_DATA_DIR: "/tmp/lathe-config-test" });
  });

  it("refuses a wrong LATHE_TRAINER_* value with a ConfigError naming it", () => {
    let err: unknown;
    try {
      latheConfig(opts({ LATHE_TRAINER_THREADS: "lots" }), "local");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([expect.stringMatching(/^LATHE_TRAINER_THREADS: /)]);
  });
});
