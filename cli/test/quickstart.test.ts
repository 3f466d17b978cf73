import { describe, expect, it } from "vitest";
import { runCli } from "./cli-process.js";

// `lathe quickstart` as a process, its output checked step by step: the whole pipeline on the
// embedded default, with no one calling the next step after the job is created.
describe("lathe quickstart", () => {
  it("model, the example set's report, a clean split, the 3-shot baseline, a job whose follow-up registers, evaluates, promotes and deploys, the comparison and verdict, an answer from the served adapter, the trace", async () => {
    const r = await runCli(["quickstart"]);
    // Only warnings may go to stderr (none expected); an error would be `lathe: …`.
    expect(r.stderr.split("\n").filter((l) => l.startsWith("lathe:") && !l.startsWith("lathe: warning:"))).toEqual([]);
    expect(r.code, r.stdout.slice(-3000)).toBe(0);
    const out = r.stdout;

    expect(out).toContain("created models/tiny-llama");
    // The report names what the example set carries, by line.
    expect(out).toMatch(/datasets\/support\/versions\/v1 {2}404 rows \(386 pass every check\) from 405 lines/);
    expect(out).toMatch(/\nparse +1 +334\n/);
    expect(out).toMatch(/\nexact_duplicate +4 +41,80,91,92\n/);
    expect(out).toMatch(/\npii +3 +121,201,311\n/);
    expect(out).toContain("created datasets/support/versions/clean: 386 rows");
    expect(out).toMatch(/created datasets\/support\/versions\/s-eval: (\d+) rows/);

    // The seed's first question: the 3-shot prompt does not reach the bar.
    expect(out).toContain("created evaluationRuns/three-shot: tiny-llama, 3-shot from support@s-train");
    expect(out).toMatch(/rouge_l \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] < 0\.60: not met — fine-tuning may help/);

    expect(out).toContain("created deployments/support (ready)");
    expect(out).toMatch(/fineTuningJobs\/support-1 succeeded after \d+:\d\d of training \(1 attempt\)/);

    // No one called the evaluation, the promotion or the deployment: the decision, with why.
    expect(out).toContain("models/tiny-llama/adapters/support/aliases/prod -> models/tiny-llama/adapters/support/versions/1\n");
    expect(out).toMatch(/models\/tiny-llama\/adapters\/support\/versions\/1: promoted \(the job's conditions, fineTuningJobs\/support-1\): the job's promotion conditions held on evaluationRuns\/run-[0-9a-f]+: metric 5 Δ=0\.\d{4} CI \[0\.\d{4}, 0\.\d{4}\]/);

    // The fine-tuned adapter against the 3-shot prompt: quality with intervals, cost, latency, the verdict.
    expect(out).toMatch(/\nmean_token_accuracy +0\.\d{3} +0\.\d{3} +\+0\.\d{3} +\[\+0\.\d{3}, \+0\.\d{3}\] +\d+\/\d+\/\d+ +(<0\.001|\d\.\d{3})\n/);
    expect(out).toMatch(/\ncost per 1,000 answers +0\.\d{4} USD +0\.\d{4} USD\n/);
    expect(out).toMatch(/\nlatency p50\/p95 +/);
    expect(out).toMatch(/\nverdict: fine-tuning was worth it: better on mean token accuracy 0\.\d{3} against 0\.\d{3} .*cost per 1,000 answers 0\.\d{4} against 0\.\d{4} USD \(\d+\.\d× less/);

    // The deployment the job named serves the promoted version; an answer over the OpenAI-compatible API.
    expect(out).toMatch(/deployments\/support +ready +embedded +support support:support +support=models\/tiny-llama\/adapters\/support\/versions\/1/);
    expect(out).toMatch(/\ncurl http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions -H "Authorization: Bearer \$LATHE_API_KEY" .*"model":"support:support"/);

    // One trace from the create call to the gateway's deployment, each span with its service.
    expect(out).toMatch(/\ntrace [0-9a-f]{32}: \d+ spans from /);
    for (const line of [
      /\nlathe\.trainer\.v1\.TrainerService\/CreateFineTuningJob {2}\[trainer\]/,
      /\n {2}trainer\.train_job {2}\[trainer\]/,
      /\n {6}registry\.register_adapter {2}\[registry\]/,
      /\n {10}evaluator\.follow_up {2}\[evaluator\]/,
      /\n {12}evaluator\.evaluate {2}\[evaluator\]/,
      /\n {14}POST \/v1\/chat\/completions {2}\[gateway\]/,
      /consume lathe\.registry\.v1\.alias_moved {2}\[gateway\]/,
    ]) {
      expect(out).toMatch(line);
    }
    expect(out).toContain("quickstart finished");
  }, 600_000);
});
