import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "@lathe/testing";
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

interface Serving {
  answerCount: number;
  promptTokens: number;
  completionTokens: number;
  costPer1000Answers?: number;
}
interface RunJson {
  name: string;
  state: string;
  totalExampleCount: number;
  completedExampleCount: number;
  candidate: { model: string; fewShot?: { datasetVersion: string; shots: number; seed: number } };
  baseline?: { model: string };
  generationParams: { maxTokens: number; temperature?: number };
  candidateServing: Serving;
  baselineServing?: Serving;
}
interface ExampleJson {
  index?: number;
  reference: string;
  candidate: { text?: string; scores: { metric: string; value?: number }[] };
  baseline?: { text?: string; scores: { metric: string; value?: number }[] };
}

describe("lathe evals (against lathe up)", () => {
  let dataDir: string;
  let up: Awaited<ReturnType<typeof startUp>>;
  let conn: string[];
  // The tiny model answers in a few tokens; greedy, so every run answers alike.
  const short = ["--max-tokens", "6", "--temperature", "0"];
  const prices = { tiny: { input: 0.5, output: 1.5 } };

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lathe-evals-"));
    // One llama.cpp thread: llama.cpp's own choice is many times slower on a small, shared machine.
    up = await startUp(["--data-dir", dataDir, "--port", String(await freePort())], { ...process.env, LATHE_GATEWAY_THREADS: "1", LATHE_EVALUATOR_PRICES: JSON.stringify(prices) });
    conn = ["--server", up.address, "--data-dir", dataDir];
    const modelDir = join(dataDir, "tiny-model");
    expect((await runCli(["models", "init-tiny", modelDir, "--seed", "1"])).code).toBe(0);
    expect((await runCli(["models", "create", "tiny", "--path", modelDir, ...conn])).code).toBe(0);
    writeFileSync(join(dataDir, "support.jsonl"), supportRows(20));
    expect((await runCli(["datasets", "create", "support", join(dataDir, "support.jsonl"), ...conn])).code).toBe(0);
    // 16 rows to draw few-shot examples from, 4 to evaluate on.
    const split = await runCli(["datasets", "derive", "support@v1", "--split", "0.2", "--seed", "1", "--version-id", "s", ...conn]);
    expect(split.stderr).toBe("");
    expect(split.stdout).toContain("datasets/support/versions/s-eval: 4 rows");
  }, 120_000);
  afterAll(() => {
    if (up?.child.exitCode === null) up.child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  const getRun = async (id: string) => {
    const r = await runCli(["evals", "get", id, "--json", ...conn]);
    expect(r.stderr).toBe("");
    return JSON.parse(r.stdout) as RunJson;
  };

  it("create --watch follows the run to its end, then prints its metrics with intervals and what serving costs", async () => {
    const r = await runCli(["evals", "create", "--model", "tiny", "--dataset", "support@s-eval", ...short, "--id", "first", "--watch", ...conn]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^created evaluationRuns\/first\n(queued|running)/);
    expect(r.stdout).toContain("succeeded 4/4 examples\n");
    expect(r.stdout).toMatch(/\nstate +succeeded\ncandidate +tiny\neval set +datasets\/support\/versions\/s-eval\nexamples +4 done, 0 failed, 4 total\n/);
    expect(r.stdout).toMatch(/\nMETRIC +CANDIDATE\nrouge_l +\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]\n/);

    const run = await getRun("first");
    expect(run).toMatchObject({ name: "evaluationRuns/first", state: "STATE_SUCCEEDED", totalExampleCount: 4, completedExampleCount: 4, generationParams: { maxTokens: 6 } });
    const s = run.candidateServing;
    expect(s.answerCount).toBe(4);
    expect(s.completionTokens).toBeLessThanOrEqual(24);
    // The price of tiny per million tokens, for 1,000 answers like these.
    const cost = ((s.promptTokens * prices.tiny.input + s.completionTokens * prices.tiny.output) / 1e6) * (1000 / 4);
    expect(s.costPer1000Answers).toBeCloseTo(cost, 9);
    expect(r.stdout).toContain(`\ntokens in/out           ${s.promptTokens} / ${s.completionTokens} (${Math.round(s.promptTokens / 4)} / ${Math.round(s.completionTokens / 4)} per answer)\n`);
    expect(r.stdout).toMatch(/\nlatency p50\/p95 +\d+ ms \/ \d+ ms\n/);
    expect(r.stdout).toContain(`\ncost per 1,000 answers  ${cost.toFixed(4)} USD\n`);

    // get prints the same summary.
    const got = await runCli(["evals", "get", "evaluationRuns/first", ...conn]);
    expect(r.stdout.endsWith(got.stdout)).toBe(true);
  }, 60_000);

  it("eval loss, perplexity and mean token accuracy by teacher forcing, and an LLM judge on the gateway, printed beside the metrics", async () => {
    const r = await runCli([
      "evals", "create", "--model", "tiny", "--baseline", "tiny", "--baseline-shots", "1", "--baseline-train", "support@s-train", "--dataset", "support@s-eval",
      "--metrics", "eval_loss", "--judge", "tiny", "--judge-criteria", "Prefer the answer that matches the reference.", ...short, "--id", "teacher", "--watch", ...conn,
    ]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/\nmean_token_accuracy +\d\.\d{3} \[/);
    expect(r.stdout).toMatch(/\nREFERENCE ANSWERS \(TEACHER FORCING\) +CANDIDATE +BASELINE\neval loss +\d+\.\d{4} +\d+\.\d{4}\nperplexity +\d+\.\d{3} +\d+\.\d{3}\nmean token accuracy +\d\.\d{4} +\d\.\d{4}\ntokens \(examples cut\) +(\d+) \(0\) +\1 \(0\)\n/);
    // The tiny model is no judge: its replies are unreadable, so every example is a tie.
    expect(r.stdout).toContain("\njudge tiny: candidate wins 0, ties 4 (0 where the two orders disagreed, 4 unreadable), baseline wins 0 of 4; win rate 0.500");
    const run = await getRun("teacher");
    expect(run).toMatchObject({ metrics: ["METRIC_MEAN_TOKEN_ACCURACY"], judge: { model: "tiny", criteria: "Prefer the answer that matches the reference." } });
    const predictions = await runCli(["evals", "predictions", "teacher", ...conn]);
    expect(predictions.stdout).toMatch(/ JUDGE\n/);
    expect(predictions.stdout).toMatch(/ tie\n/);
    expect((await runCli(["evals", "create", "--model", "tiny", "--dataset", "support@s-eval", "--judge-url", "http://x/v1", ...conn])).stderr).toBe("lathe: --judge-url, --judge-key-secret and --judge-criteria are for a judge: give --judge MODEL\n");
  }, 90_000);

  it("a few-shot candidate against a baseline: differences with CIs and W/T/L; predictions; compare two runs; list; baseline thresholds", async () => {
    const second = await runCli([
      "evals", "create", "--model", "tiny", "--shots", "2", "--train", "support@s-train", "--baseline", "tiny", "--dataset", "support@s-eval",
      "--metrics", "rouge,exact_match", ...short, "--id", "second", "--label", "team=support", "--watch", ...conn,
    ]);
    expect(second.stderr).toBe("");
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(/\ncandidate +tiny, 2-shot from support@s-train\nbaseline +tiny\n/);
    expect(second.stdout).toMatch(/\nMETRIC +CANDIDATE +BASELINE +DIFFERENCE +95% CI +WINS\/TIES\/LOSSES +P\n/);
    for (const m of ["rouge_l", "exact_match"]) {
      const row = new RegExp(`\\n${m} +\\d\\.\\d{3} \\[\\d\\.\\d{3}, \\d\\.\\d{3}\\] +\\d\\.\\d{3} \\[\\d\\.\\d{3}, \\d\\.\\d{3}\\] +[ +-]\\d\\.\\d{3} +\\[[ +-]\\d\\.\\d{3}, [ +-]\\d\\.\\d{3}\\] +(\\d)/(\\d)/(\\d) +(<0\\.001|\\d\\.\\d{3})\\n`).exec(second.stdout);
      expect(row, `${m} row in:\n${second.stdout}`).not.toBeNull();
      expect(Number(row![1]) + Number(row![2]) + Number(row![3])).toBe(4);
    }
    expect(second.stdout).toMatch(/\nSERVING +CANDIDATE +BASELINE\n/);
    const run = await getRun("second");
    expect(run.candidate.fewShot).toEqual({ datasetVersion: "datasets/support/versions/s-train", shots: 2, seed: 42 });
    // The two solved examples make the candidate's prompts longer than the baseline's.
    expect(run.candidateServing.promptTokens).toBeGreaterThan(run.baselineServing!.promptTokens);

    // Predictions: the whole texts with --json, cut to a line in the table.
    const json = await runCli(["evals", "predictions", "second", "--json", ...conn]);
    expect(json.stderr).toBe("");
    const { examples } = JSON.parse(json.stdout) as { examples: ExampleJson[] };
    expect(examples.map((e) => e.index ?? 0)).toEqual([0, 1, 2, 3]);
    for (const e of examples) {
      expect(e.reference).toMatch(/^Unplug the \w+ for thirty seconds and start it again\. If it still .+, reply to ticket \d+\.$/);
      expect(e.candidate.scores.map((s) => s.metric)).toEqual(["METRIC_ROUGE_L", "METRIC_EXACT_MATCH"]);
      expect(e.baseline!.scores.map((s) => s.metric)).toEqual(["METRIC_ROUGE_L", "METRIC_EXACT_MATCH"]);
    }
    const table = await runCli(["evals", "predictions", "second", ...conn]);
    expect(table.code).toBe(0);
    const rows = table.stdout.trimEnd().split("\n");
    expect(rows[0]).toMatch(/^INDEX +REFERENCE +CANDIDATE +BASELINE +ROUGE_L \(C\/B\) +EXACT_MATCH \(C\/B\)$/);
    expect(rows).toHaveLength(5);
    for (const [i, e] of examples.entries()) {
      expect(rows[i + 1]!.startsWith(`${i}      ${e.reference.slice(0, 39)}…`)).toBe(true);
      expect(rows[i + 1]).toMatch(/\d\.\d{3} \/ \d\.\d{3} +\d\.\d{3} \/ \d\.\d{3}$/);
    }

    // Compare: A's candidate (tiny) − B's candidate (tiny, 2-shot), on the metric both computed.
    const compared = await runCli(["evals", "compare", "first", "second", ...conn]);
    expect(compared.stderr).toBe("");
    expect(compared.code).toBe(0);
    expect(compared.stdout).toMatch(/^A: evaluationRuns\/first \(tiny\)\nB: evaluationRuns\/second \(tiny, 2-shot from support@s-train\)\n\nMETRIC +A +B +DIFFERENCE +95% CI +WINS\/TIES\/LOSSES +P\n/);
    expect(compared.stdout).toMatch(/\nrouge_l +\d\.\d{3} +\d\.\d{3} +[ +-]\d\.\d{3} +\[[ +-]\d\.\d{3}, [ +-]\d\.\d{3}\] +\d\/\d\/\d +\S+\n/);
    expect(compared.stdout).toMatch(/\ncost per 1,000 answers +\d\.\d{4} USD +\d\.\d{4} USD\n/);
    expect(compared.stdout).toMatch(/\nlatency p50\/p95 +\d+ ms \/ \d+ ms +\d+ ms \/ \d+ ms\n/);
    expect(compared.stdout).toContain("paired over the 4 examples both runs scored\n");
    const comparedJson = JSON.parse((await runCli(["evals", "compare", "first", "second", "--json", ...conn])).stdout) as {
      candidateRun: string;
      baselineRun: string;
      pairedExampleCount: number;
      differences: { metric: string; winCount?: number; tieCount?: number; lossCount?: number }[];
    };
    expect(comparedJson).toMatchObject({ candidateRun: "evaluationRuns/first", baselineRun: "evaluationRuns/second", pairedExampleCount: 4 });
    expect(comparedJson.differences.map((d) => d.metric)).toEqual(["METRIC_ROUGE_L"]);
    const d = comparedJson.differences[0]!;
    expect((d.winCount ?? 0) + (d.tieCount ?? 0) + (d.lossCount ?? 0)).toBe(4);

    // List, all and by label.
    const all = await runCli(["evals", "list", ...conn]);
    expect(all.stdout).toMatch(/evaluationRuns\/first +succeeded +tiny +support@s-eval +4\/4 +rouge_l \d\.\d{3} /);
    expect(all.stdout).toMatch(/evaluationRuns\/second +succeeded +tiny, 2-shot from support@s-train +tiny +support@s-eval +4\/4 +rouge_l \d\.\d{3}, exact_match \d\.\d{3} /);
    const labelled = await runCli(["evals", "list", "--filter", 'labels.team = "support"', "--json", ...conn]);
    expect((JSON.parse(labelled.stdout) as { evaluationRuns: RunJson[] }).evaluationRuns.map((r) => r.name)).toEqual(["evaluationRuns/second"]);

    // A finished run cannot be cancelled.
    const cancel = await runCli(["evals", "cancel", "first", ...conn]);
    expect(cancel.code).toBe(1);
    expect(cancel.stderr).toContain("lathe: evaluationRuns/first already ended (succeeded)");

    // Does a 2-shot prompt of the base model reach the thresholds? The tiny model's answers reach
    // no ROUGE-L of 0.99; an exact-match rate of 0 is reached by any model.
    const baseline = await runCli(["evals", "baseline", "--model", "tiny", "--train", "support@s-train", "--eval", "support@s-eval", "--shots", "2", "--threshold", "rouge_l=0.99", "--threshold", "exact_match=0", ...short, ...conn]);
    expect(baseline.stderr).toBe("");
    expect(baseline.code).toBe(0);
    expect(baseline.stdout).toMatch(/^created evaluationRuns\/\S+: tiny, 2-shot from support@s-train on datasets\/support\/versions\/s-eval\n/);
    expect(baseline.stdout).toMatch(/\nrouge_l \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] < 0\.99: not met — fine-tuning may help\n/);
    expect(baseline.stdout).toMatch(/\nexact_match 0\.000 \[0\.000, 0\.000\] ≥ 0\.00: met — a 2-shot prompt already reaches your threshold; fine-tuning may not be worth it\n$/);
  }, 120_000);

  it("errors say what is wrong and exit 1", async () => {
    const eval_ = ["--dataset", "support@s-eval", ...conn];
    const alias = await runCli(["evals", "create", "--model", "tiny:nope@prod", ...eval_]);
    expect(alias.code).toBe(1);
    expect(alias.stderr).toMatch(/^lathe: models\/tiny\/adapters\/nope\/aliases\/prod was not found/);
    expect((await runCli(["evals", "create", "--model", "tiny", "--metrics", "rouge,bleu", ...eval_])).stderr).toBe("lathe: --metrics rouge,bleu: unknown metric bleu; expected rouge, bertscore, exact_match, format or mean_token_accuracy (eval_loss, perplexity)\n");
    expect((await runCli(["evals", "create", "--model", "tiny", "--shots", "2", ...eval_])).stderr).toBe("lathe: --shots needs --train D@V: the dataset version the solved examples come from\n");
    expect((await runCli(["evals", "create", "--model", "tiny", "--metrics", "format", ...eval_])).stderr).toBe("lathe: the format metric needs the format: give --regex, --json-output or --json-schema\n");
    expect((await runCli(["evals", "baseline", "--model", "tiny", "--train", "support@s-train", "--eval", "support@s-eval", "--threshold", "bleu=0.5", ...conn])).stderr).toBe(
      "lathe: --threshold bleu=0.5: expected NAME=VALUE, NAME one of rouge_l, bertscore, exact_match, format_compliance, mean_token_accuracy\n",
    );
    const missing = await runCli(["evals", "get", "nope", ...conn]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("NOT_FOUND");
  }, 60_000);
});
