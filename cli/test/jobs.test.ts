import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, waitFor } from "@lathe/testing";
import { runCli, startUp } from "./cli-process.js";

/** A small support-desk set in chat form, the same every time. */
function supportRows(n: number): string {
  const products = ["router", "laptop", "phone", "printer", "monitor", "keyboard", "camera", "tablet"];
  const issues = ["does not turn on", "keeps restarting", "is very slow", "shows an error code", "loses its connection", "makes a strange noise"];
  const rows = Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      messages: [
        { role: "user", content: `My ${products[i % products.length]} ${issues[i % issues.length]} (ticket ${1000 + i}). What should I do?` },
        { role: "assistant", content: `Unplug the ${products[i % products.length]} for thirty seconds and start it again. If it still ${issues[i % issues.length]}, reply to ticket ${1000 + i}.` },
      ],
    }),
  );
  return `${rows.join("\n")}\n`;
}

interface JobJson {
  name: string;
  state: string;
  labels?: Record<string, string>;
  adapterVersion?: string;
  loraConfig: { r: number; loraAlpha: number; useRslora?: boolean; targetModules: string[] };
  trainingArguments: { numTrainEpochs: number; perDeviceTrainBatchSize: number; gradientAccumulationSteps: number; learningRate: number; packing?: boolean; seed?: number };
  result?: { adapterArtifactDigest: string };
}

describe("lathe jobs (against lathe up)", () => {
  let dataDir: string;
  let up: Awaited<ReturnType<typeof startUp>>;
  let conn: string[];
  // A small job: 16 train rows, 4 per step, 2 epochs = 8 optimizer steps, on the tiny model.
  const small = ["--model", "tiny", "--train", "support@s-train", "--eval", "support@s-eval", "--epochs", "2", "--batch-size", "4", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--target-modules", "q_proj,v_proj,lm_head", "--lr", "1e-2", "--max-seq-length", "128", "--no-packing"];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lathe-jobs-"));
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())]);
    conn = ["--server", up.address, "--data-dir", dataDir];
    const modelDir = join(dataDir, "tiny-model");
    expect((await runCli(["models", "init-tiny", modelDir, "--seed", "1"])).code).toBe(0);
    expect((await runCli(["models", "create", "tiny", "--path", modelDir, ...conn])).code).toBe(0);
    writeFileSync(join(dataDir, "support.jsonl"), supportRows(20));
    expect((await runCli(["datasets", "create", "support", join(dataDir, "support.jsonl"), ...conn])).code).toBe(0);
    const split = await runCli(["datasets", "derive", "support@v1", "--split", "0.2", "--seed", "1", "--version-id", "s", ...conn]);
    expect(split.stderr).toBe("");
  });
  afterAll(() => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("creates a job and watches it train to a registered adapter: a line per logged step, then the result", async () => {
    const r = await runCli(["jobs", "create", "--id", "first", ...small, "--logging-steps", "2", "--save-steps", "2", "--register", "tiny/support", "--label", "team=support", "--watch", ...conn]);
    // 8 steps: the recipe's 3 % warmup rounds up to one step, which the trainer warns about.
    expect(r.stderr).toMatch(/^lathe: warning: fine_tuning_job\.training_arguments\.warmup_ratio: warmup_ratio 0\.03 needs at least 34 optimizer steps .* \(WARMUP_LONGER_THAN_ASKED\)\n$/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("created fineTuningJobs/first");
    for (const step of [2, 4, 6]) expect(r.stdout).toMatch(new RegExp(`running\\s+step ${step}/8  epoch [0-9.]+  loss [0-9.]+  eval loss \\S+  accuracy [0-9.]+%  lr [0-9.e+-]+  [0-9,]+ tok/s  eta \\d+:\\d\\d\\n`));
    // The first epoch's eval loss (measured after step 4) shows: on its own line, or with step 6 when the stream caught up later.
    expect(r.stdout).toMatch(/evaluated step 4\/8 {2}eval loss [0-9.]+\n|running\s+step 6\/8 .* eval loss [0-9.]+ /);
    expect(r.stdout).toMatch(/succeeded\s+step 8\/8 {2}epoch 2\.00\n/);
    expect(r.stdout).toContain("fineTuningJobs/first succeeded after");
    expect(r.stdout).toMatch(/adapter\s+sha256:[0-9a-f]{64}\n/);
    expect(r.stdout).toMatch(/final loss\s+[0-9.]+, eval loss [0-9.]+\n/);
    expect(r.stdout).toMatch(/token accuracy\s+[0-9.]+%, eval [0-9.]+%\n/);
    expect(r.stdout).toMatch(/time\s+took \d+:\d\d at [0-9,]+ tok\/s; estimated \d+:\d\d at [0-9,]+ tok\/s \(cost table\)\n/);

    // The registry registers the adapter; the job learns its version, and watching it again says so.
    const version = await waitFor(
      async () => {
        const got = await runCli(["jobs", "get", "fineTuningJobs/first", "--json", ...conn]);
        return (JSON.parse(got.stdout) as JobJson).adapterVersion || undefined;
      },
      { timeoutMs: 20_000, intervalMs: 200, what: "the job's adapter version" },
    );
    expect(version).toBe("models/tiny/adapters/support/versions/1");
    const again = await runCli(["jobs", "watch", "first", ...conn]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/adapter version\s+models\/tiny\/adapters\/support\/versions\/1\n/);
    const text = await runCli(["jobs", "get", "first", ...conn]);
    expect(text.stdout).toMatch(/state\s+succeeded\n/);
    expect(text.stdout).toMatch(/labels\s+team=support\n/);
  }, 60_000);

  it("lists jobs as JSON and with a filter, and lists a job's checkpoints", async () => {
    const list = await runCli(["jobs", "list", "--json", ...conn]);
    expect(list.code).toBe(0);
    const jobs = (JSON.parse(list.stdout) as { fineTuningJobs: JobJson[] }).fineTuningJobs;
    expect(jobs.map((j) => j.name)).toEqual(["fineTuningJobs/first"]);
    expect(jobs[0]).toMatchObject({ state: "STATE_SUCCEEDED", labels: { team: "support" } });
    expect(jobs[0]!.result!.adapterArtifactDigest).toMatch(/^sha256:/);

    const filtered = await runCli(["jobs", "list", "--filter", 'state = STATE_SUCCEEDED AND labels.team = "support"', ...conn]);
    expect(filtered.stdout).toMatch(/fineTuningJobs\/first\s+succeeded\s+models\/tiny\s+datasets\/support\/versions\/s-train\s+8\/8/);
    expect((await runCli(["jobs", "list", "--filter", "state = STATE_RUNNING", ...conn])).stdout).toBe("no jobs\n");
    const badFilter = await runCli(["jobs", "list", "--filter", 'colour = "red"', ...conn]);
    expect(badFilter.code).toBe(1);
    expect(badFilter.stderr).toContain("INVALID_ARGUMENT");

    const checkpoints = await runCli(["jobs", "checkpoints", "first", "--json", ...conn]);
    expect((JSON.parse(checkpoints.stdout) as { checkpoints: { step: number }[] }).checkpoints.map((c) => c.step)).toEqual([2, 4, 6, 8]);
    const table = await runCli(["jobs", "checkpoints", "fineTuningJobs/first", ...conn]);
    expect(table.stdout).toMatch(/fineTuningJobs\/first\/checkpoints\/step-8\s+8\s+2\.00\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+%\s+[0-9.]+%\s+[0-9.]+ [kMG]B\s+yes\s+sha256:/);

    // The logged steps (logging_steps 2 of 8) as CSV, and as a TensorBoard event file in a folder.
    const csv = await runCli(["jobs", "metrics", "first", "--csv", ...conn]);
    expect(csv.code).toBe(0);
    const lines = csv.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("step,epoch,train_loss,eval_loss,learning_rate,grad_norm,tokens_per_second,processed_tokens,train_mean_token_accuracy,eval_mean_token_accuracy,log_time");
    expect(lines.slice(1).map((l) => l.split(",")[0])).toEqual(["2", "4", "6", "8"]);
    expect(lines.slice(1).map((l) => l.split(",")[3] !== "")).toEqual([false, true, false, true]);
    const tb = await runCli(["jobs", "metrics", "first", "--tensorboard", join(dataDir, "tb"), ...conn]);
    expect(tb.stdout).toMatch(/^wrote .*\/tb\/events\.out\.tfevents\.\d+\.\S+ \(4 logged steps\); view it with: tensorboard --logdir /);
    const both = await runCli(["jobs", "metrics", "first", "--csv", "--json", ...conn]);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain("--csv and --json each choose the output; give one");
  });

  it("estimates a job per hardware type without creating it", async () => {
    const r = await runCli(["jobs", "estimate", ...small, "--hardware", "nvidia-a100-40gb", ...conn]);
    expect(r.stderr).toMatch(/^lathe: warning: fine_tuning_job\.training_arguments\.warmup_ratio: .* \(WARMUP_LONGER_THAN_ASKED\)\n$/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^rows 16 \(0 truncated\), [0-9,]+ tokens per epoch/);
    expect(r.stdout).toContain("steps 4 per epoch, 8 in all");
    expect(r.stdout).toMatch(/HARDWARE\s+GPUS\s+TOKENS\/S\s+TOKENS\/S FROM\s+DURATION\s+PEAK MEMORY\s+AVAILABLE\s+FITS\s+COST\n/);
    expect(r.stdout).toMatch(/nvidia-a100-40gb\s+1\s+[0-9,]+\s+cost table\s+\d+:\d\d\s+[0-9.]+ [kMG]B\s+40\.0 GB\s+yes\s+(<0.01|[0-9.]+) USD\n/);
    expect(r.stdout).toContain("recommended: nvidia-a100-40gb");
    const json = await runCli(["jobs", "estimate", ...small, "--json", ...conn]);
    expect((JSON.parse(json.stdout) as { hardwareEstimates: { hardware: string }[] }).hardwareEstimates.map((h) => h.hardware)).toEqual(expect.arrayContaining(["cpu", "nvidia-a100-40gb", "nvidia-h100-80gb"]));
    expect((JSON.parse((await runCli(["jobs", "list", "--json", ...conn])).stdout) as { fineTuningJobs: unknown[] }).fineTuningJobs).toHaveLength(1);
  });

  it("leaves flags that were not given to the trainer's defaults, and cancels a running job", async () => {
    // Many steps, so the job is still running when it is cancelled.
    const created = await runCli(["jobs", "create", "--id", "defaults", "--model", "models/tiny", "--train", "datasets/support/versions/s-train", "--epochs", "100", "--batch-size", "1", "--grad-accum", "1", "--no-packing", "--json", ...conn]);
    expect(created.stderr).toBe("");
    const job = JSON.parse(created.stdout) as JobJson;
    expect(job).toMatchObject({ name: "fineTuningJobs/defaults", state: "STATE_QUEUED" });
    expect(job.loraConfig).toMatchObject({ r: 16, loraAlpha: 32, useRslora: true, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] });
    expect(job.trainingArguments).toMatchObject({ numTrainEpochs: 100, perDeviceTrainBatchSize: 1, gradientAccumulationSteps: 1, learningRate: 2e-4, packing: false, seed: 42 });

    const cancelled = await runCli(["jobs", "cancel", "defaults", "--reason", "wrong data", ...conn]);
    expect(cancelled.stderr).toBe("");
    expect(cancelled.stdout).toMatch(/^cancelled fineTuningJobs\/defaults at step \d+; its checkpoints are kept\n/);
    const watched = await runCli(["jobs", "watch", "defaults", ...conn]);
    expect(watched.code).toBe(1);
    expect(watched.stdout).toMatch(/^cancelled/m);
    expect(watched.stderr).toMatch(/fineTuningJobs\/defaults was cancelled at step \d+ \(wrong data\)/);
  });

  it("prints the server's errors clearly and exits 1", async () => {
    const missing = await runCli(["jobs", "create", "--model", "tiny", "--train", "nope@v1", ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("lathe: fine_tuning_job.train_dataset_version: datasets/nope/versions/v1 was not found (INVALID_ARGUMENT, INVALID_FIELD)\n");

    const finished = await runCli(["jobs", "cancel", "first", ...conn]);
    expect(finished.code).toBe(1);
    expect(finished.stderr).toContain("FAILED_PRECONDITION, FINE_TUNING_JOB_FINISHED");

    const unknown = await runCli(["jobs", "get", "nope", ...conn]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("fineTuningJobs/nope was not found");
    expect((await runCli(["jobs", "watch", "nope", ...conn])).stderr).toContain("NOT_FOUND");

    const badFlag = await runCli(["jobs", "create", "--model", "tiny", "--train", "support@s-train", "--lora-r", "zero", ...conn]);
    expect(badFlag.code).toBe(1);
    expect(badFlag.stderr).toContain("--lora-r zero: expected a positive integer");
    const description = await runCli(["jobs", "create", "--model", "tiny", "--train", "support@s-train", "--description", "x", ...conn]);
    expect(description.code).toBe(1);
    expect(description.stderr).toContain("--description");
  });
});
