import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@lathe/testing";
import { runCli, startUp } from "./cli-process.js";

interface Completion {
  object: string;
  model: string;
  choices: { message: { role: string; content: string }; finish_reason: string }[];
  usage: { prompt_tokens: number; completion_tokens: number };
}

describe("lathe chat (against lathe up)", () => {
  let dataDir: string;
  let up: Awaited<ReturnType<typeof startUp>>;
  let port: number;
  let http: string;
  let conn: string[];
  const greedy = ["--max-tokens", "8", "--temperature", "0"];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lathe-chat-"));
    port = await freePort();
    // One llama.cpp thread: llama.cpp's own choice is many times slower on a small, shared machine.
    up = await startUp(["--data-dir", dataDir, "--port", String(port)], { ...process.env, LATHE_GATEWAY_THREADS: "1" });
    http = /OpenAI-compatible HTTP: (\S+)\/v1/.exec(up.output())![1]!;
    conn = ["--server", up.address, "--data-dir", dataDir];
    const modelDir = join(dataDir, "tiny-model");
    expect((await runCli(["models", "init-tiny", modelDir, "--seed", "1"])).code).toBe(0);
    expect((await runCli(["models", "create", "tiny", "--path", modelDir, ...conn])).code).toBe(0);
  }, 120_000);
  afterAll(() => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("streams the answer to stdout; --json prints the whole completion, the same answer", async () => {
    const whole = await runCli(["chat", "tiny", "My router keeps restarting.", ...greedy, "--json", "--http", http, ...conn]);
    expect(whole.stderr).toBe("");
    expect(whole.code).toBe(0);
    const c = JSON.parse(whole.stdout) as Completion;
    expect(c).toMatchObject({ object: "chat.completion", model: "tiny" });
    expect(c.choices[0]!.message.role).toBe("assistant");
    expect(c.usage.completion_tokens).toBeGreaterThan(0);
    expect(c.usage.completion_tokens).toBeLessThanOrEqual(8);

    const streamed = await runCli(["chat", "tiny", "My router keeps restarting.", ...greedy, "--http", `${http}/v1`, ...conn]);
    expect(streamed.stderr).toBe("");
    expect(streamed.code).toBe(0);
    const answer = c.choices[0]!.message.content;
    expect(streamed.stdout).toBe(answer.endsWith("\n") ? answer : `${answer}\n`);
  }, 60_000);

  it("--system adds a system message; the address comes from LATHE_HTTP_URL, else the port after the gRPC one", async () => {
    const ask = async (args: string[], env: NodeJS.ProcessEnv = process.env) => {
      const r = await runCli(["chat", "tiny", "hi", ...greedy, "--json", ...args, ...conn], env);
      expect(r.stderr).toBe("");
      return JSON.parse(r.stdout) as Completion;
    };
    const plain = await ask([], { ...process.env, LATHE_HTTP_URL: http });
    const withSystem = await ask(["--system", "You are a support agent.", "--http", http]);
    expect(withSystem.usage.prompt_tokens).toBeGreaterThan(plain.usage.prompt_tokens);
    // lathe up serves HTTP on the gRPC port + 1 unless that one was taken.
    if (http === `http://127.0.0.1:${port + 1}`) expect((await ask([])).choices[0]!.message.content).toBe(plain.choices[0]!.message.content);
  }, 60_000);

  it("errors print the server's OpenAI error message and exit 1", async () => {
    const unknown = await runCli(["chat", "nope", "hi", "--http", http, ...conn]);
    expect(unknown.code).toBe(1);
    expect(unknown.stdout).toBe("");
    expect(unknown.stderr).toBe("lathe: The model `nope` does not exist or you do not have access to it. (model_not_found)\n");

    const wrongKey = await runCli(["chat", "tiny", "hi", "--http", http, "--server", up.address, "--api-key", "not-a-key"]);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain("Incorrect API key provided.");

    const tooLong = await runCli(["chat", "tiny", "hi", "--max-tokens", "1000000", "--http", http, ...conn]);
    expect(tooLong.code).toBe(1);
    expect(tooLong.stderr).toMatch(/^lathe: This model's context is \d+ tokens.*\(context_length_exceeded\)\n$/);

    const down = await runCli(["chat", "tiny", "hi", "--http", `http://127.0.0.1:${await freePort()}`, ...conn]);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain("cannot reach the gateway's HTTP API");

    expect((await runCli(["chat", "tiny", "hi", "--temperature", "3", "--http", http, ...conn])).stderr).toContain("--temperature 3: expected a number from 0 to 2");
  }, 60_000);

  it("lathe deployments create|list|get|delete: a base served under another name, called by it, then gone", async () => {
    const created = await runCli(["deployments", "create", "tiny", "--id", "helper", "--served-name", "helper", "--label", "team=support", "--wait", ...conn]);
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    expect(created.stdout).toBe("created deployments/helper (ready)\ncall it as: helper\n");

    const list = await runCli(["deployments", "list", "--filter", 'labels.team = "support"', ...conn]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/deployments\/helper\s+ready\s+embedded\s+helper/);
    const got = JSON.parse((await runCli(["deployments", "get", "helper", "--json", ...conn])).stdout) as { baseModel: string; servedModelName: string; state: string };
    expect(got).toMatchObject({ baseModel: "models/tiny", servedModelName: "helper", state: "STATE_READY" });

    const viaName = await runCli(["chat", "helper", "hi", ...greedy, "--json", "--http", http, ...conn]);
    const viaModel = await runCli(["chat", "tiny", "hi", ...greedy, "--json", "--http", http, ...conn]);
    expect((JSON.parse(viaName.stdout) as Completion).choices[0]!.message.content).toBe((JSON.parse(viaModel.stdout) as Completion).choices[0]!.message.content);

    const missing = await runCli(["deployments", "create", "tiny:nope@prod", "--id", "other", "--served-name", "other", ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/models\/tiny\/adapters\/nope\/aliases\/prod does not exist/);

    expect((await runCli(["deployments", "delete", "helper", ...conn])).stdout).toBe("deleted deployments/helper\n");
    expect((await runCli(["deployments", "list", ...conn])).stdout).toBe("no deployments\n");
    const gone = await runCli(["chat", "helper", "hi", "--http", http, ...conn]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("model_not_found");
  }, 120_000);
});
