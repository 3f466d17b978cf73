import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rougeScore } from "@lathe/text";
import { runCli } from "./cli-process.js";

type Prf = { precision: number; recall: number; fmeasure: number };
type RougeJson = { aggregate: Record<string, Prf>; pairs: Record<string, Prf>[] };

const lines = (rows: unknown[]) => `${rows.map((r) => JSON.stringify(r)).join("\n")}\n`;

describe("lathe metrics (local, no server)", () => {
  let dir: string;
  const pairs = [
    { prediction: "The quick brown dog jumps on the log.", reference: "The quick brown fox jumps over the lazy dog" },
    { prediction: "Unplug the router and wait.\nThen start it again.", reference: "Unplug the routers for thirty seconds.\nStart them again." },
    { prediction: "", reference: "nothing to match" },
  ];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "lathe-metrics-"));
    writeFileSync(join(dir, "pairs.jsonl"), lines(pairs));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("rouge --json: each pair's rouge1, rouge2, rougeL and rougeLsum as rougeScore computes them, and their means", async () => {
    for (const stem of [false, true]) {
      const r = await runCli(["metrics", "rouge", "--pairs", join(dir, "pairs.jsonl"), "--json", ...(stem ? ["--use-stemmer"] : [])]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      const out = JSON.parse(r.stdout) as RougeJson;
      expect(Object.keys(out)).toEqual(["aggregate", "pairs"]);
      expect(out.pairs).toEqual(pairs.map((p) => rougeScore(p.reference, p.prediction, { useStemmer: stem })));
      for (const t of ["rouge1", "rouge2", "rougeL", "rougeLsum"]) {
        expect(Object.keys(out.pairs[0]!)).toEqual(["rouge1", "rouge2", "rougeL", "rougeLsum"]);
        expect(Object.keys(out.pairs[0]![t]!)).toEqual(["precision", "recall", "fmeasure"]);
        for (const f of ["precision", "recall", "fmeasure"] as const) expect(out.aggregate[t]![f]).toBeCloseTo(out.pairs.reduce((s, p) => s + p[t]![f], 0) / pairs.length, 12);
      }
    }
    // By hand: 6 of the prediction's 8 words are in the reference's 9 (P 3/4, R 2/3); the longest
    // common subsequence is "the quick brown jumps the", 5 words (P 5/8, R 5/9).
    const first = (JSON.parse((await runCli(["metrics", "rouge", "--pairs", join(dir, "pairs.jsonl"), "--json"])).stdout) as RougeJson).pairs[0]!;
    expect(first["rouge1"]!.fmeasure).toBeCloseTo(0.7059, 4);
    expect(first["rougeL"]!.fmeasure).toBeCloseTo(0.5882, 4);
  });

  it("rouge prints the mean of each score as a table", async () => {
    const r = await runCli(["metrics", "rouge", "--pairs", join(dir, "pairs.jsonl"), "--types", "rouge1,rougeL"]);
    expect(r.code).toBe(0);
    const mean = (t: "rouge1" | "rougeL", f: keyof Prf) => (pairs.reduce((s, p) => s + rougeScore(p.reference, p.prediction, { types: [t] })[t][f], 0) / pairs.length).toFixed(4);
    expect(r.stdout).toBe(
      "SCORE   PRECISION  RECALL  FMEASURE\n" +
        `rouge1  ${mean("rouge1", "precision")}     ${mean("rouge1", "recall")}  ${mean("rouge1", "fmeasure")}\n` +
        `rougeL  ${mean("rougeL", "precision")}     ${mean("rougeL", "recall")}  ${mean("rougeL", "fmeasure")}\n` +
        "mean over 3 pairs\n",
    );
  });

  it("a bad line is reported as FILE:LINE and exits 1", async () => {
    const file = join(dir, "bad.jsonl");
    writeFileSync(file, `${JSON.stringify(pairs[0])}\n\n{"prediction": "only a prediction"}\n`);
    const missing = await runCli(["metrics", "rouge", "--pairs", file]);
    expect(missing.code).toBe(1);
    expect(missing.stdout).toBe("");
    expect(missing.stderr).toBe(`lathe: ${file}:3: "reference" must be a string\n`);

    writeFileSync(file, `${JSON.stringify(pairs[0])}\n{"prediction": "unterminated\n`);
    const broken = await runCli(["metrics", "rouge", "--pairs", file]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(new RegExp(`^lathe: ${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:2: not valid JSON: `));

    writeFileSync(file, "[1, 2]\n");
    expect((await runCli(["metrics", "rouge", "--pairs", file])).stderr).toBe(`lathe: ${file}:1: expected an object {"prediction": "…", "reference": "…"}\n`);
    expect((await runCli(["metrics", "rouge", "--pairs", join(dir, "nope.jsonl")])).stderr).toMatch(/^lathe: --pairs .*nope\.jsonl: cannot read it: /);
  });

  it("format: a regular expression in full, one JSON value, or JSON valid against a schema; the reference may be left out", async () => {
    const file = join(dir, "format.jsonl");
    writeFileSync(file, lines([{ prediction: '{"label": "refund"}' }, { prediction: "label: refund" }, { prediction: '{"label": 3}', reference: "x" }]));
    const run = async (args: string[]) => {
      const r = await runCli(["metrics", "format", "--pairs", file, "--json", ...args]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout) as { aggregate: { valid: number }; pairs: { valid: boolean; error: string | null }[] };
    };
    const regex = await run(["--regex", "label: \\w+"]);
    expect(regex.pairs.map((p) => p.valid)).toEqual([false, true, false]);
    expect(regex.pairs[0]!.error).toBe("does not match the regular expression in full");
    expect(regex.aggregate.valid).toBeCloseTo(1 / 3, 12);
    // Full match: a pattern that matches only part of the text fails.
    expect((await run(["--regex", "label"])).pairs.map((p) => p.valid)).toEqual([false, false, false]);

    const json = await run(["--json-output"]);
    expect(json.pairs.map((p) => p.valid)).toEqual([true, false, true]);
    expect(json.pairs[1]!.error).toMatch(/^not valid JSON: /);

    const schema = join(dir, "schema.json");
    writeFileSync(schema, JSON.stringify({ type: "object", properties: { label: { type: "string" } }, required: ["label"] }));
    const valid = await run(["--json-schema", schema]);
    expect(valid.pairs.map((p) => p.valid)).toEqual([true, false, false]);
    expect(valid.pairs[2]!.error).toBe("does not match the JSON Schema at /label: must be string");

    const text = await runCli(["metrics", "format", "--pairs", file, "--json-schema", schema]);
    expect(text.stdout).toBe("valid 1/3 (0.3333)\nline 2: not valid JSON: " + valid.pairs[1]!.error!.replace(/^not valid JSON: /, "") + "\nline 3: does not match the JSON Schema at /label: must be string\n");

    writeFileSync(join(dir, "broken-schema.json"), "{ not json");
    const broken = await runCli(["metrics", "format", "--pairs", file, "--json-schema", join(dir, "broken-schema.json")]);
    expect(broken.code).toBe(1);
    expect(broken.stderr).toMatch(/^lathe: --json-schema .*broken-schema\.json: the JSON Schema is not valid JSON: /);
    expect((await runCli(["metrics", "format", "--pairs", file])).stderr).toBe("lathe: give exactly one of --regex PATTERN, --json-output, --json-schema FILE\n");
    expect((await runCli(["metrics", "format", "--pairs", file, "--regex", "("])).stderr).toMatch(/^lathe: --regex: the regular expression .* does not compile: /);
  });

  it("bertscore with a local model folder: an answer equal to its reference scores 1, and --baseline rescales", async () => {
    const model = join(dir, "tiny");
    expect((await runCli(["models", "init-tiny", model, "--seed", "1"])).code).toBe(0);
    const file = join(dir, "bert.jsonl");
    writeFileSync(file, lines([{ prediction: "Unplug the router.", reference: "Unplug the router." }, ...pairs.slice(0, 2)]));
    const run = async (args: string[]) => {
      const r = await runCli(["metrics", "bertscore", "--pairs", file, "--model", model, "--threads", "1", "--json", ...args]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout) as { aggregate: { precision: number; recall: number; f1: number }; pairs: { precision: number; recall: number; f1: number }[] };
    };
    const plain = await run([]);
    expect(Object.keys(plain.pairs[0]!)).toEqual(["precision", "recall", "f1"]);
    for (const f of ["precision", "recall", "f1"] as const) expect(plain.pairs[0]![f]).toBeCloseTo(1, 5);
    expect(plain.pairs[1]!.f1).toBeLessThan(1);
    expect(plain.aggregate.f1).toBeCloseTo(plain.pairs.reduce((s, p) => s + p.f1, 0) / 3, 12);

    const rescaled = await run(["--baseline", "0.5,0.5,0.5"]);
    for (const [i, p] of rescaled.pairs.entries()) expect(p.f1).toBeCloseTo((plain.pairs[i]!.f1 - 0.5) / 0.5, 5);
    expect((await run(["--idf"])).pairs[0]!.f1).toBeCloseTo(1, 5);

    const text = await runCli(["metrics", "bertscore", "--pairs", file, "--model", model, "--layer", "1", "--threads", "1"]);
    expect(text.stdout).toMatch(/^SCORE {6}PRECISION {2}RECALL {2}F1\nbertscore {2}\d\.\d{4} {5}\d\.\d{4} {2}\d\.\d{4}\nmean over 3 pairs; layer 1 of .*tiny\n$/);
    expect((await runCli(["metrics", "bertscore", "--pairs", file, "--model", model, "--layer", "9"])).stderr).toMatch(/^lathe: BERTScore layer 9: the encoder has 2 layers/);
    expect((await runCli(["metrics", "bertscore", "--pairs", file, "--model", model, "--baseline", "0.5,1"])).stderr).toBe("lathe: --baseline 0.5,1: expected P,R,F, three numbers below 1 (e.g. 0.83,0.83,0.83)\n");
  }, 60_000);
});
