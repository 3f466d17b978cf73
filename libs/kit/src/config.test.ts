import { describe, expect, it } from "vitest";
import { baseConfigSchema, ConfigError, loadConfig, redactConfig } from "./config.js";

function problemsOf(env: Record<string, string | undefined>): readonly string[] {
  try {
    loadConfig(baseConfigSchema, env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("loadConfig accepted the env");
}

describe("loadConfig", () => {
  it("gives the documented defaults for an empty env", () => {
    const config = loadConfig(baseConfigSchema, {});
    expect(config).toEqual({
      LATHE_GRPC_HOST: "0.0.0.0",
      LATHE_GRPC_PORT: 50051,
      LATHE_DATA_DIR: ".lathe",
      LATHE_EVENTS_PREFIX: "",
      LATHE_API_KEYS: {},
      LATHE_IMPORT_ROOTS: [],
      LATHE_LOG_LEVEL: "info",
      LATHE_SHUTDOWN_GRACE_MS: 10_000,
      LATHE_OUTBOX_POLL_MS: 500,
      LATHE_MIGRATIONS: "apply",
      LATHE_TRACE_STORE_MB: 16,
    });
  });

  it("reads import roots as absolute paths joined by ':' and refuses relative ones", () => {
    expect(loadConfig(baseConfigSchema, { LATHE_IMPORT_ROOTS: "/srv/models: /mnt/hf" }).LATHE_IMPORT_ROOTS).toEqual(["/srv/models", "/mnt/hf"]);
    expect(() => loadConfig(baseConfigSchema, { LATHE_IMPORT_ROOTS: "/srv/models:relative" })).toThrow(/LATHE_IMPORT_ROOTS/);
  });

  it("parses numbers and key=tenant pairs", () => {
    const config = loadConfig(baseConfigSchema, {
      LATHE_GRPC_PORT: "7000",
      LATHE_API_KEYS: " k1=acme , k2 = globex-2,",
      LATHE_PG_URL: "postgresql://u:p@db:5432/lathe",
      LATHE_NATS_URL: "nats://nats:4222",
    });
    expect(config.LATHE_GRPC_PORT).toBe(7000);
    expect(config.LATHE_API_KEYS).toEqual({ k1: "acme", k2: "globex-2" });
    expect(config.LATHE_PG_URL).toBe("postgresql://u:p@db:5432/lathe");
  });

  it.each(["abc", "70000", "-1", "1.5"])("rejects LATHE_GRPC_PORT=%s, naming the variable", (port) => {
    const problems = problemsOf({ LATHE_GRPC_PORT: port });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^LATHE_GRPC_PORT: /);
  });

  it("treats an empty LATHE_GRPC_PORT as unset instead of port 0 (a random port)", () => {
    expect(loadConfig(baseConfigSchema, { LATHE_GRPC_PORT: "" }).LATHE_GRPC_PORT).toBe(50051);
  });

  it.each(["k1", "=acme", "k1=Acme", "k1=", "k1=acme,k2=a b"])("rejects LATHE_API_KEYS=%s, naming the variable", (keys) => {
    const problems = problemsOf({ LATHE_API_KEYS: keys });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^LATHE_API_KEYS: entry \d must be key=tenant/);
  });

  it("says which entry of LATHE_API_KEYS is wrong, without echoing the key", () => {
    const [problem] = problemsOf({ LATHE_API_KEYS: "secret-1=acme,secret-2=NOPE" });
    expect(problem).toMatch(/entry 2/);
    expect(problem).not.toMatch(/secret/);
  });

  it("lists every bad variable in one ConfigError", () => {
    const problems = problemsOf({ LATHE_GRPC_PORT: "x", LATHE_PG_URL: "mysql://db", LATHE_LOG_LEVEL: "loud" });
    expect(problems.map((p) => p.split(":")[0]).sort()).toEqual(["LATHE_GRPC_PORT", "LATHE_LOG_LEVEL", "LATHE_PG_URL"]);
    expect(() => loadConfig(baseConfigSchema, { LATHE_GRPC_PORT: "x" })).toThrow(/^invalid configuration:\n {2}LATHE_GRPC_PORT: /);
  });
});

describe("redactConfig", () => {
  it("hides LATHE_API_KEYS and the passwords of URLs, and keeps the rest", () => {
    const config = loadConfig(baseConfigSchema, {
      LATHE_API_KEYS: "key-one=acme,key-two=globex",
      LATHE_PG_URL: "postgres://lathe:hunter2@db:5432/lathe",
      LATHE_NATS_URL: "nats://nats:4222",
    });
    const redacted = redactConfig(config);
    const text = JSON.stringify(redacted);
    expect(text).not.toContain("key-one");
    expect(text).not.toContain("hunter2");
    expect(redacted["LATHE_API_KEYS"]).toBe("[redacted: 2 entries]");
    expect(redacted["LATHE_PG_URL"]).toBe("postgres://lathe:***@db:5432/lathe");
    expect(redacted["LATHE_NATS_URL"]).toBe("nats://nats:4222");
    expect(redacted["LATHE_GRPC_PORT"]).toBe(50051);
  });

  it("hides a token given as the user part of a URL", () => {
    expect(redactConfig({ LATHE_NATS_URL: "nats://s3cr3t-token@nats:4222" })).toEqual({ LATHE_NATS_URL: "nats://***@nats:4222" });
  });

  it("hides string secrets by their name", () => {
    expect(redactConfig({ S3_SECRET: "s", DB_PASSWORD: "p", HF_TOKEN: "t", PLAIN: "x" })).toEqual({
      S3_SECRET: "[redacted]",
      DB_PASSWORD: "[redacted]",
      HF_TOKEN: "[redacted]",
      PLAIN: "x",
    });
  });
});
