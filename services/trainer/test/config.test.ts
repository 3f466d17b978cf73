import { baseConfigSchema, ConfigError, loadConfig } from "@lathe/kit";
import { describe, expect, it } from "vitest";
import { configSchema, trainerOptionsOf } from "../src/index.js";

const base = { LATHE_API_KEYS: "k=acme" };

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error("did not throw");
}

describe("the trainer's config", () => {
  it("reads its LATHE_TRAINER_* variables with the kit's, each with its default", () => {
    const config = loadConfig(configSchema, { ...base, LATHE_TRAINER_WORKERS: "3", LATHE_TRAINER_POLL_MS: "250", LATHE_TRAINER_COST_TABLE: "/etc/costs.json", LATHE_GRPC_PORT: "0" });
    expect(config.LATHE_GRPC_PORT).toBe(0);
    expect(trainerOptionsOf(config)).toEqual({ LATHE_TRAINER_WORKERS: 3, LATHE_TRAINER_THREADS: 0, LATHE_TRAINER_POLL_MS: 250, LATHE_TRAINER_LEASE_MS: 60_000, LATHE_TRAINER_COST_TABLE: "/etc/costs.json" });
  });

  it("refuses a wrong value with a ConfigError naming the variable", () => {
    const err = configError(() => loadConfig(configSchema, { ...base, LATHE_TRAINER_LEASE_MS: "soon", LATHE_TRAINER_WORKERS: "-1" }));
    expect(err.problems).toHaveLength(2);
    expect(err.problems.some((p) => p.startsWith("LATHE_TRAINER_LEASE_MS: "))).toBe(true);
    expect(err.problems.some((p) => p.startsWith("LATHE_TRAINER_WORKERS: "))).toBe(true);
    expect(err.message).toMatch(/^invalid configuration:\n {2}LATHE_TRAINER_/);
  });

  it("takes the defaults from a config loaded with the kit's schema only", () => {
    const config = loadConfig(baseConfigSchema, { ...base, LATHE_TRAINER_WORKERS: "3" });
    expect(trainerOptionsOf(config)).toEqual({ LATHE_TRAINER_WORKERS: 1, LATHE_TRAINER_THREADS: 0, LATHE_TRAINER_POLL_MS: 1000, LATHE_TRAINER_LEASE_MS: 60_000 });
  });
});
