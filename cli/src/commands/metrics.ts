import { readFileSync } from "node:fs";
import { Command } from "commander";
import { EngineEncoder } from "@lathe/evaluator";
import {
  bertScore,
  compileJsonSchemaCheck,
  compileRegexCheck,
  DEFAULT_ROUGE_TYPES,
  InvalidFormatCheckError,
  jsonCompliance,
  rougeScore,
  type BertScoreBaseline,
  type JsonCheckResult,
  type RougeScore,
  type RougeType,
} from "@lathe/text";
import { list, nonNegativeInt, positiveInt } from "../flags.js";
import { printJson, printTable } from "../output.js";

/** One line of a pairs file. */
interface Pair {
  line: number;
  prediction: string;
  reference: string;
}

/**
 * The `{"prediction", "reference"}` lines of a JSONL file (blank lines skipped); `reference` may be
 * left out where `referenceRequired` is false. A bad line throws `FILE:LINE: what is wrong`.
 */
export function readPairs(file: string, referenceRequired = true): Pair[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`--pairs ${file}: cannot read it: ${(err as Error).message}`);
  }
  const pairs: Pair[] = [];
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "") continue;
    const at = `${file}:${i + 1}`;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new Error(`${at}: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${at}: expected an object {"prediction": "…", "reference": "…"}`);
    const o = v as Record<string, unknown>;
    if (typeof o["prediction"] !== "string") throw new Error(`${at}: "prediction" must be a string`);
    if (typeof o["reference"] !== "string" && (referenceRequired || o["reference"] !== undefined)) throw new Error(`${at}: "reference" must be a string`);
    pairs.push({ line: i + 1, prediction: o["prediction"], reference: typeof o["reference"] === "string" ? o["reference"] : "" });
  }
  if (pairs.length === 0) throw new Error(`${file}: no pairs (expected JSON lines {"prediction": "…", "reference": "…"})`);
  return pairs;
}

const mean = (xs: readonly number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
const four = (v: number) => v.toFixed(4);

/** The mean of each field over the rows. */
function meanOf<K extends string>(rows: readonly Record<K, number>[], keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, mean(rows.map((r) => r[k]))])) as Record<K, number>;
}

type RougeOptions = { pairs: string; useStemmer?: boolean; types: string[]; json?: boolean };

/** `lathe metrics rouge`: ROUGE of each pair as rouge_score computes it, and the means. */
function rouge(o: RougeOptions): void {
  const types = o.types as RougeType[];
  for (const t of types) if (!/^rouge([1-9][0-9]*|L|Lsum)$/.test(t)) throw new Error(`--types ${o.types.join(",")}: unknown type ${t}; expected rouge1, rouge2, … (rougeN), rougeL or rougeLsum`);
  const pairs = readPairs(o.pairs);
  const scores = pairs.map((p) => rougeScore(p.reference, p.prediction, { types, useStemmer: o.useStemmer ?? false }));
  const fields = ["precision", "recall", "fmeasure"] as const;
  const aggregate = Object.fromEntries(types.map((t) => [t, meanOf<keyof RougeScore>(scores.map((s) => s[t]!), fields)]));
  if (o.json) {
    printJson({ aggregate, pairs: scores });
    return;
  }
  printTable(
    types.map((t) => ({ score: t, precision: four(aggregate[t]!.precision), recall: four(aggregate[t]!.recall), fmeasure: four(aggregate[t]!.fmeasure) })),
    ["score", ...fields],
  );
  process.stdout.write(`mean over ${pairs.length} pair${pairs.length === 1 ? "" : "s"}${o.useStemmer ? ", Porter-stemmed" : ""}\n`);
}

/** `--baseline P,R,F` of the rescaling, each a number below 1. */
function parseBaseline(v: string): BertScoreBaseline {
  const parts = v.split(",").map((s) => Number(s.trim()));
  if (parts.length !== 3 || parts.some((x, i) => !Number.isFinite(x) || x >= 1 || v.split(",")[i]!.trim() === "")) throw new Error(`--baseline ${v}: expected P,R,F, three numbers below 1 (e.g. 0.83,0.83,0.83)`);
  return { precision: parts[0]!, recall: parts[1]!, f1: parts[2]! };
}

type BertScoreOptions = { pairs: string; model: string; layer?: number; idf?: boolean; baseline?: BertScoreBaseline; threads: number; json?: boolean };

/** `lathe metrics bertscore`: BERTScore of each pair with a local encoder, and the means. */
async function bertscore(o: BertScoreOptions): Promise<void> {
  const pairs = readPairs(o.pairs);
  const encoder = await EngineEncoder.open(o.model, o.model, o.layer ?? 0, o.threads);
  let result;
  try {
    result = await bertScore(
      pairs.map((p) => p.prediction),
      pairs.map((p) => p.reference),
      encoder,
      { idf: o.idf ?? false, baseline: o.baseline ?? null },
    );
  } finally {
    await encoder.free();
  }
  const scores = result.scores.map((s) => ({ precision: s.precision, recall: s.recall, f1: s.f1 }));
  const fields = ["precision", "recall", "f1"] as const;
  const aggregate = meanOf(scores, fields);
  if (o.json) {
    printJson({ aggregate, pairs: scores });
    return;
  }
  printTable([{ score: "bertscore", precision: four(aggregate.precision), recall: four(aggregate.recall), f1: four(aggregate.f1) }], ["score", ...fields]);
  const how = [`layer ${encoder.layer} of ${o.model}`, ...(o.idf ? ["IDF-weighted"] : []), ...(o.baseline ? ["rescaled with the baseline"] : [])];
  process.stdout.write(`mean over ${pairs.length} pair${pairs.length === 1 ? "" : "s"}; ${how.join(", ")}\n`);
}

type FormatOptions = { pairs: string; regex?: string; jsonOutput?: boolean; jsonSchema?: string; json?: boolean };

/** The check the flags ask for, compiled once; a check that cannot be compiled names its flag. */
function formatCheck(o: FormatOptions): (prediction: string) => JsonCheckResult | boolean {
  const given = [o.regex !== undefined, o.jsonOutput === true, o.jsonSchema !== undefined].filter(Boolean).length;
  if (given !== 1) throw new Error("give exactly one of --regex PATTERN, --json-output, --json-schema FILE");
  try {
    if (o.regex !== undefined) return compileRegexCheck(o.regex, { mode: "full" });
    if (o.jsonOutput) return (p) => jsonCompliance(p);
  } catch (err) {
    if (err instanceof InvalidFormatCheckError) throw new Error(`--regex: ${err.message}`);
    throw err;
  }
  let schema: string;
  try {
    schema = readFileSync(o.jsonSchema!, "utf8");
  } catch (err) {
    throw new Error(`--json-schema ${o.jsonSchema}: cannot read it: ${(err as Error).message}`);
  }
  try {
    return compileJsonSchemaCheck(schema);
  } catch (err) {
    if (err instanceof InvalidFormatCheckError) throw new Error(`--json-schema ${o.jsonSchema}: ${err.message}`);
    throw err;
  }
}

/** `lathe metrics format`: whether each prediction has the format (the reference is not needed). */
function format(o: FormatOptions): void {
  const check = formatCheck(o);
  const pairs = readPairs(o.pairs, false);
  const results = pairs.map((p) => {
    const r = check(p.prediction);
    if (typeof r === "boolean") return { valid: r, error: r ? null : "does not match the regular expression in full" };
    return { valid: r.valid, error: r.error };
  });
  const valid = results.filter((r) => r.valid).length;
  if (o.json) {
    printJson({ aggregate: { valid: valid / results.length }, pairs: results });
    return;
  }
  process.stdout.write(`valid ${valid}/${results.length} (${four(valid / results.length)})\n`);
  const failing = results.map((r, i) => ({ r, line: pairs[i]!.line })).filter(({ r }) => !r.valid);
  for (const { r, line } of failing.slice(0, 20)) process.stdout.write(`line ${line}: ${r.error}\n`);
  if (failing.length > 20) process.stdout.write(`… and ${failing.length - 20} more (see --json)\n`);
}

/** `lathe metrics …`: the evaluator's metrics on local files, without a server. */
export function metricsCommand(): Command {
  const metrics = new Command("metrics").description("score predictions against references on this machine, without a server: ROUGE, BERTScore, format compliance");
  const pairsHelp = 'a JSONL file of {"prediction": "…", "reference": "…"} lines';

  metrics
    .command("rouge")
    .description("ROUGE-N, ROUGE-L and ROUGE-Lsum of each pair (the numbers of Google's rouge_score), and their means")
    .requiredOption("--pairs <file>", pairsHelp)
    .option("--use-stemmer", "stem words longer than 3 letters with the Porter stemmer, as rouge_score's use_stemmer")
    .option("--types <list>", "comma-separated ROUGE types", list, [...DEFAULT_ROUGE_TYPES])
    .option("--json", 'print {"aggregate": {TYPE: {precision, recall, fmeasure}}, "pairs": [{TYPE: …}, …]}')
    .action(rouge);

  metrics
    .command("bertscore")
    .description("BERTScore precision, recall and F1 of each pair with a local encoder model's hidden states, and their means")
    .requiredOption("--pairs <file>", pairsHelp)
    .requiredOption("--model <dir>", "the encoder: a Hugging Face model folder the engine loads")
    .option("--layer <n>", "the layer whose hidden states embed the tokens, 0 (embeddings) to the model's layer count (default: two thirds of the way up)", nonNegativeInt("layer"))
    .option("--idf", "weight tokens by their inverse document frequency over the file's references")
    .option("--baseline <P,R,F>", "rescale each score s to (s − b)/(1 − b) with these baselines", parseBaseline)
    .option("--threads <n>", "engine threads (default: every core)", positiveInt("threads"), 0)
    .option("--json", 'print {"aggregate": {precision, recall, f1}, "pairs": [{precision, recall, f1}, …]}')
    .action(bertscore);

  metrics
    .command("format")
    .description("whether each prediction has a format: a regular expression it matches in full, one JSON value, or JSON valid against a JSON Schema")
    .requiredOption("--pairs <file>", `${pairsHelp}; "reference" may be left out`)
    .option("--regex <pattern>", "the whole prediction must match this regular expression (flags u)")
    .option("--json-output", "the prediction must be one JSON value")
    .option("--json-schema <file>", "the prediction must be JSON valid against this JSON Schema (draft 2020-12)")
    .option("--json", 'print {"aggregate": {valid}, "pairs": [{valid, error}, …]}')
    .action(format);

  return metrics;
}
