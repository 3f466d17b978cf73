import { describe, expect, it } from "vitest";
import { runCli } from "./cli-process.js";

describe("lathe quickstart", () => {
  it("runs the pipeline on the embedded default: model, dataset and its report, derived versions, training, registry, GGUF", async () => {
    const r = await runCli(["quickstart"]);
    expect(r.stderr).not.toContain("lathe:");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("created models/tiny-llama");
    expect(r.stdout).toMatch(/parse\s+2\s+27,28/);
    expect(r.stdout).toContain("created datasets/support/versions/s-eval");
    expect(r.stdout).toContain("wrote 19 rows of datasets/support/versions/s-train");
    const trained = /train loss ([0-9.]+), eval loss ([0-9.]+)/.exec(r.stdout);
    expect(trained).not.toBeNull();
    expect(Number(trained![2])).toBeLessThan(5); // from about 6.3 (ln 512) before training
    expect(r.stdout).toContain("registered models/tiny-llama/adapters/support/versions/1");
    expect(r.stdout).toContain("datasets/support/versions/s-train  --derived-->  models/tiny-llama/adapters/support/versions/1");
    expect(r.stdout).toMatch(/model\.gguf\s+\d+ bytes/);
    expect(r.stdout).toContain("quickstart finished");
  });
});
