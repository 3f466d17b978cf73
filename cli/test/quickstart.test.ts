import { describe, expect, it } from "vitest";
import { runCli } from "./cli-process.js";

describe("lathe quickstart", () => {
  it("runs the pipeline on the embedded default: model, dataset and its report, derived versions, a fine-tuning job that registers its adapter, alias, lineage, GGUF", async () => {
    const r = await runCli(["quickstart"]);
    expect(r.stderr).not.toContain("lathe:");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("created models/tiny-llama");
    expect(r.stdout).toMatch(/parse\s+2\s+27,28/);
    expect(r.stdout).toContain("created datasets/support/versions/s-eval");

    // The job trains on the embedded worker, a line per logged step, and succeeds.
    expect(r.stdout).toContain("created fineTuningJobs/support-1");
    expect(r.stdout).toMatch(/running\s+step 10\/60 {2}epoch 1\.00 {2}loss [0-9.]+/);
    expect(r.stdout).toContain("fineTuningJobs/support-1 succeeded after");
    const trained = /final loss\s+([0-9.]+), eval loss ([0-9.]+)/.exec(r.stdout);
    expect(trained).not.toBeNull();
    expect(Number(trained![2])).toBeLessThan(2.5); // from about 6.3 (ln 512) before training

    // The registry registered the adapter from the job, and the job learned its version.
    expect(r.stdout).toMatch(/adapter version\s+models\/tiny-llama\/adapters\/support\/versions\/1\n/);
    expect(r.stdout).toContain("models/tiny-llama/adapters/support/aliases/production -> models/tiny-llama/adapters/support/versions/1");

    // Lineage: the version came out of the job, which took the dataset versions and the model in.
    expect(r.stdout).toContain("fineTuningJobs/support-1  --output-->  models/tiny-llama/adapters/support/versions/1");
    expect(r.stdout).toContain("datasets/support/versions/s-train  --input-->  fineTuningJobs/support-1");
    expect(r.stdout).toContain("datasets/support/versions/s-eval  --input-->  fineTuningJobs/support-1");
    expect(r.stdout).toContain("models/tiny-llama  --input-->  fineTuningJobs/support-1");
    expect(r.stdout).toContain("datasets/support/versions/s-train  --derived-->  models/tiny-llama/adapters/support/versions/1");

    expect(r.stdout).toMatch(/model\.gguf\s+\d+ bytes/);
    expect(r.stdout).toContain("quickstart finished");
  });
});
