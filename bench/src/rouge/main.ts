#!/usr/bin/env node
/**
 * bench/rouge: ROUGE-L throughput of @lathe/text's rougeScore against rouge_score's algorithm in
 * pure Python (libs/text/dev/rouge_reference.py, the same steps as
 * `RougeScorer(["rougeL"], use_stemmer).score`), on the same generated English-like pairs of about
 * 100 and 300 tokens, with and without stemming. One thread each.
 *
 * Ours: untimed passes for 0.25 s (JIT warm-up, and the stem cache filled, which is what a user
 * scoring a corpus gets), then `--rounds` timed rounds of as many passes as take about 0.25 s. Python: bench/rouge/rouge_bench.py is run once per
 * setting; it times its rounds itself, so interpreter start-up and imports are not counted, and
 * stems are not cached, as in rouge_score. Printed: pairs per second, median of the rounds, the
 * ratio ours/Python, and whether both summed the same fmeasures. The Python side is skipped, saying
 * so, when python3 is missing (or, for the stemmed runs, NLTK: apt-get install -y python3-nltk).
 *
 *   npm run bench:rouge -- [--pairs 100] [--rounds 5] [--python-rounds 3] [--python /usr/bin/python3]
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { rougeScore, rougeTokenize } from "@lathe/text";
import { generatePairs } from "./corpus.js";

const { values } = parseArgs({
  options: {
    pairs: { type: "string", default: "100" },
    rounds: { type: "string", default: "5" },
    "python-rounds": { type: "string", default: "3" },
    python: { type: "string", default: existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3" },
  },
});
const numPairs = Number(values.pairs);
const rounds = Number(values.rounds);
const pythonRounds = Number(values["python-rounds"]);
const python = values.python;
const PY_BENCH = fileURLToPath(new URL("../../rouge/rouge_bench.py", import.meta.url));

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (pairsPerSecond: number) => Math.round(pairsPerSecond).toLocaleString("en-US");

function oursPass(pairs: ReadonlyArray<readonly [string, string]>, useStemmer: boolean): number {
  let sum = 0;
  for (const [reference, prediction] of pairs) sum += rougeScore(reference, prediction, { types: ["rougeL"], useStemmer }).rougeL.fmeasure;
  return sum;
}

/** Pairs per second: warm-up passes for 0.25 s, then `rounds` rounds of enough passes over the pairs to take about 0.25 s each. */
function ours(pairs: ReadonlyArray<readonly [string, string]>, useStemmer: boolean): { pairsPerSecond: number; checksum: number } {
  let start = process.hrtime.bigint();
  const checksum = oursPass(pairs, useStemmer);
  let warmups = 1;
  while (seconds(start) < 0.25) {
    oursPass(pairs, useStemmer);
    warmups++;
  }
  const passes = Math.max(1, Math.round((0.25 * warmups) / seconds(start)));
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    start = process.hrtime.bigint();
    for (let p = 0; p < passes; p++) oursPass(pairs, useStemmer);
    rates.push((passes * pairs.length) / seconds(start));
  }
  return { pairsPerSecond: median(rates), checksum };
}

function pythonSide(pairs: ReadonlyArray<readonly [string, string]>, useStemmer: boolean): { pairsPerSecond: number; checksum: number } | string {
  try {
    const out = execFileSync(python, [PY_BENCH], { input: JSON.stringify({ pairs, useStemmer, rounds: pythonRounds }), encoding: "utf8", maxBuffer: 1 << 26, stdio: ["pipe", "pipe", "pipe"] });
    const result = JSON.parse(out) as { seconds: number[]; checksum: number };
    return { pairsPerSecond: pairs.length / median(result.seconds), checksum: result.checksum };
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? "");
    if (stderr.includes("No module named 'nltk'")) return `${python} has no NLTK (apt-get install -y python3-nltk)`;
    return `${python} ${PY_BENCH} failed: ${(stderr.trim().split("\n").pop() ?? "") || (err as Error).message}`;
  }
}

console.log(`ROUGE-L on ${numPairs} generated pairs per length, one thread; ours: median of ${rounds} rounds after 0.25 s of warm-up; Python: median of ${pythonRounds} rounds timed inside Python`);
console.log(`Python: ${python} running rouge_score's algorithm (libs/text/dev/rouge_reference.py)\n`);
console.log("tokens ref / pred  stemmer   ours pairs/s   Python pairs/s   ours/Python   same fmeasures");
for (const tokens of [100, 300]) {
  const pairs = generatePairs(numPairs, tokens, tokens);
  const refTokens = pairs.reduce((n, [r]) => n + rougeTokenize(r, false).length, 0) / pairs.length;
  const predTokens = pairs.reduce((n, [, p]) => n + rougeTokenize(p, false).length, 0) / pairs.length;
  for (const useStemmer of [false, true]) {
    const o = ours(pairs, useStemmer);
    const p = pythonSide(pairs, useStemmer);
    const head = `${`${refTokens.toFixed(0)} / ${predTokens.toFixed(0)}`.padStart(15)}  ${(useStemmer ? "yes" : "no").padEnd(7)}  ${fmt(o.pairsPerSecond).padStart(13)}`;
    if (typeof p === "string") {
      console.log(`${head}   Python skipped: ${p}`);
      continue;
    }
    const same = Math.abs(o.checksum - p.checksum) <= 1e-9 * pairs.length ? "yes" : `NO (${o.checksum} vs ${p.checksum})`;
    console.log(`${head}   ${fmt(p.pairsPerSecond).padStart(14)}   ${`${(o.pairsPerSecond / p.pairsPerSecond).toFixed(0)}×`.padStart(11)}   ${same}`);
  }
}
