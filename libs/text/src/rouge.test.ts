// Expected scores: a few worked by hand below, and test-data/rouge-expected.json, written by
// dev/rouge_reference.py --generate (rouge_score's algorithm in Python with NLTK's stemmer); the
// last test reruns that script when python3 with NLTK is here.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import type { RougeScore, RougeType } from "./rouge.js";
import { rougeScore, rougeScoreMulti, rougeTokenize } from "./rouge.js";

const EXPECTED = fileURLToPath(new URL("../test-data/rouge-expected.json", import.meta.url));
const REFERENCE = fileURLToPath(new URL("../dev/rouge_reference.py", import.meta.url));

type Triple = [precision: number, recall: number, fmeasure: number];
type Expected = Record<"plain" | "stemmed", Record<string, Triple>>;
interface ExpectedFile {
  types: RougeType[];
  cases: Array<{ reference: string; prediction: string; scores: Expected }>;
  multi: Array<{ references: string[]; prediction: string; scores: Expected }>;
}

/** A Python with NLTK: Debian's (python3-nltk) first, then whatever python3 is on PATH; null if none. */
function pythonWithNltk(): string | null {
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      execFileSync(python, ["-c", "import nltk"], { stdio: "ignore" });
      return python;
    } catch {
      // try the next one
    }
  }
  return null;
}

function expectScore(what: string, got: RougeScore, want: Triple | readonly [number, number, number]): void {
  expect(got.precision, `${what} precision`).toBeCloseTo(want[0], 6);
  expect(got.recall, `${what} recall`).toBeCloseTo(want[1], 6);
  expect(got.fmeasure, `${what} fmeasure`).toBeCloseTo(want[2], 6);
}

/** Every score of every case and multi-reference case of `file`, ours against the file's; returns how many were compared. */
function compareAll(file: ExpectedFile): number {
  let compared = 0;
  for (const mode of ["plain", "stemmed"] as const) {
    const useStemmer = mode === "stemmed";
    file.cases.forEach((c, i) => {
      const got = rougeScore(c.reference, c.prediction, { types: file.types, useStemmer });
      for (const type of file.types) {
        expectScore(`case ${i} ${mode} ${type} ${JSON.stringify(c.reference)} / ${JSON.stringify(c.prediction)}`, got[type]!, c.scores[mode][type]!);
        compared++;
      }
    });
    file.multi.forEach((c, i) => {
      const got = rougeScoreMulti(c.references, c.prediction, { types: file.types, useStemmer });
      for (const type of file.types) {
        expectScore(`multi ${i} ${mode} ${type}`, got[type]!, c.scores[mode][type]!);
        compared++;
      }
    });
  }
  return compared;
}

describe("rougeTokenize", () => {
  it("lower-cases and splits on everything but a-z and 0-9, dropping other letters", () => {
    expect(rougeTokenize("Hello, World! It's 3.14 — café 日本 x86")).toEqual(["hello", "world", "it", "s", "3", "14", "caf", "x86"]);
    expect(rougeTokenize("")).toEqual([]);
    expect(rougeTokenize(" \n!!\t")).toEqual([]);
  });

  it("stems only tokens longer than 3 characters", () => {
    expect(rougeTokenize("The runners' 2 dogs were running", true)).toEqual(["the", "runner", "2", "dog", "were", "run"]);
    // "was" would stem to "wa" and "ties" to "tie": only the latter is long enough.
    expect(rougeTokenize("was ties", true)).toEqual(["was", "tie"]);
  });
});

describe("rougeScore", () => {
  it("gives rouge_score's README example: rouge1 P 0.75 R 0.667 F 0.706, rougeL P 0.625 R 0.556 F 0.588", () => {
    // Stemmed tokens: [the quick brown fox jump over the lazi dog] and [the quick brown dog jump on the log].
    // Unigram overlap: the×2, quick, brown, dog, jump = 6 of 8 predicted and 9 reference tokens.
    // LCS: the quick brown jump the = 5.
    const s = rougeScore("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log.", { types: ["rouge1", "rougeL"], useStemmer: true });
    expectScore("rouge1", s.rouge1, [6 / 8, 6 / 9, 12 / 17]);
    expectScore("rougeL", s.rougeL, [5 / 8, 5 / 9, 10 / 17]);
    expect(s.rouge1.fmeasure).toBeCloseTo(0.7058823529411765, 12);
    expect(Object.keys(s)).toEqual(["rouge1", "rougeL"]);
  });

  it("clips n-gram counts to the other text's", () => {
    // Reference the×3 cat, prediction the×2 cat: 3 matching unigrams. Bigrams: only "the cat" is shared.
    const s = rougeScore("the the the cat", "the cat the", { types: ["rouge1", "rouge2"] });
    expectScore("rouge1", s.rouge1, [1, 3 / 4, 6 / 7]);
    expectScore("rouge2", s.rouge2, [1 / 2, 1 / 3, 0.4]);
  });

  it("scores Lin's summary-level LCS example: union LCS w1 w2 w3 w5", () => {
    // ROUGE paper §3.2: r = w1…w5, c1 = w1 w2 w6 w7 w8, c2 = w1 w3 w8 w9 w5; 4 hits of 5 and 10 tokens.
    const s = rougeScore("w1 w2 w3 w4 w5", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5", { types: ["rougeLsum"] });
    expectScore("rougeLsum", s.rougeLsum, [0.4, 0.8, 8 / 15]);
    // With c2 first the union is the same, while rougeL, blind to sentences, finds only w1 w3 w5.
    const swapped = rougeScore("w1 w2 w3 w4 w5", "w1 w3 w8 w9 w5\nw1 w2 w6 w7 w8", { types: ["rougeLsum", "rougeL"] });
    expectScore("rougeLsum swapped", swapped.rougeLsum, [0.4, 0.8, 8 / 15]);
    expectScore("rougeL swapped", swapped.rougeL, [0.3, 0.6, 0.4]);
  });

  it("counts each token at most as often as it occurs in both texts in rougeLsum", () => {
    // Both reference sentences match "a b" fully, but the prediction has one a and one b.
    const s = rougeScore("a b\na b", "a b", { types: ["rougeLsum"] });
    expectScore("rougeLsum", s.rougeLsum, [1, 0.5, 2 / 3]);
  });

  it("gives zeros for empty texts and texts with nothing in common", () => {
    for (const [ref, pred] of [
      ["", ""],
      ["", "a b"],
      ["a b", ""],
      ["!!! ...", "— 日本"],
      ["a b c", "d e f"],
    ] as const) {
      const s = rougeScore(ref, pred, { types: ["rouge1", "rouge2", "rougeL", "rougeLsum"] });
      for (const type of ["rouge1", "rouge2", "rougeL", "rougeLsum"] as const) expect(s[type], `${type} of ${ref} / ${pred}`).toEqual({ precision: 0, recall: 0, fmeasure: 0 });
    }
  });

  it("computes all four default types, and rougeN for any n", () => {
    expect(Object.keys(rougeScore("a b", "a b"))).toEqual(["rouge1", "rouge2", "rougeL", "rougeLsum"]);
    const s = rougeScore("a b c d e", "a b c d x", { types: ["rouge4", "rouge12"] });
    expectScore("rouge4", s.rouge4, [0.5, 0.5, 0.5]);
    expectScore("rouge12", s.rouge12, [0, 0, 0]);
  });

  it("refuses unknown types", () => {
    expect(() => rougeScore("a", "a", { types: ["rougeW" as RougeType] })).toThrow(/unknown ROUGE type "rougeW"/);
    expect(() => rougeScore("a", "a", { types: ["rouge0"] })).toThrow(RangeError);
  });

  it("matches a plain full-table LCS on random token sequences, for texts longer than the scratch arrays", () => {
    const rand = mulberry32(5);
    // Lengths around multiples of 32 (the bit-parallel LCS's words) first, then random ones.
    const lengths = [[1, 1], [31, 40], [32, 32], [33, 7], [64, 64], [65, 100], [96, 95], [0, 5], [5, 0]];
    for (let t = 0; t < 80; t++) {
      const vocab = 2 + (t % 7) * 3;
      const words = (n: number) => Array.from({ length: n }, () => `w${Math.floor(rand() * vocab)}`);
      const [la, lb] = lengths[t] ?? [Math.floor(rand() * 400), Math.floor(rand() * 400)];
      const a = words(la!);
      const b = words(lb!);
      const dp = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
      for (let i = 1; i <= a.length; i++) for (let j = 1; j <= b.length; j++) dp[i]![j] = a[i - 1] === b[j - 1] ? dp[i - 1]![j - 1]! + 1 : Math.max(dp[i - 1]![j]!, dp[i]![j - 1]!);
      const lcs = dp[a.length]![b.length]!;
      const s = rougeScore(a.join(" "), b.join(" "), { types: ["rougeL", "rougeLsum"] });
      const want: [number, number, number] = a.length && b.length ? [lcs / b.length, lcs / a.length, lcs ? (2 * lcs) / (a.length + b.length) : 0] : [0, 0, 0];
      expectScore(`rougeL ${t}`, s.rougeL, want);
      // One sentence each: the summary-level union is just the LCS.
      expectScore(`rougeLsum ${t}`, s.rougeLsum, want);
    }
  });

  it("falls back to the two-row LCS when the bit-parallel masks would be too big, and still finds the LCS", () => {
    // 12,000 distinct reference tokens; the prediction replaces every 10th with a word of its own.
    const n = 12_000;
    const reference = Array.from({ length: n }, (_, i) => `w${i}`);
    const prediction = reference.map((w, i) => (i % 10 === 0 ? `x${i}` : w));
    const s = rougeScore(reference.join(" "), prediction.join(" "), { types: ["rougeL"] });
    expectScore("rougeL", s.rougeL, [0.9, 0.9, 0.9]);
  });
});

describe("rougeScoreMulti", () => {
  it("takes, per type, the reference with the best fmeasure", () => {
    const s = rougeScoreMulti(["a b c d", "d c b a"], "a b c x", { types: ["rouge1", "rouge2"] });
    expectScore("rouge1", s.rouge1, [0.75, 0.75, 0.75]);
    expectScore("rouge2", s.rouge2, [2 / 3, 2 / 3, 2 / 3]);
    const t = rougeScoreMulti(["x y", "d c b a"], "a b c x", { types: ["rouge1", "rouge2"] });
    expectScore("rouge1 from the second reference", t.rouge1, [0.75, 0.75, 0.75]);
    expectScore("rouge2 from the first (all zero)", t.rouge2, [0, 0, 0]);
  });

  it("keeps the first of references with equal fmeasure", () => {
    // Against "a b c d" P = 2/3, R = 1; against "a b c d e f x y z" P = 1, R = 2/3: F = 0.8 both.
    const pred = "a b c d e f";
    expectScore("first", rougeScoreMulti(["a b c d", "a b c d e f x y z"], pred, { types: ["rouge1"] }).rouge1, [2 / 3, 1, 0.8]);
    expectScore("first", rougeScoreMulti(["a b c d e f x y z", "a b c d"], pred, { types: ["rouge1"] }).rouge1, [1, 2 / 3, 0.8]);
  });

  it("needs at least one reference", () => {
    expect(() => rougeScoreMulti([], "a")).toThrow(RangeError);
  });
});

describe("agreement with rouge_score's algorithm (dev/rouge_reference.py)", () => {
  const file = JSON.parse(readFileSync(EXPECTED, "utf8")) as ExpectedFile;

  it("gives the committed scores of every case, stemmed and not, to 1e-6", () => {
    expect(file.cases.length).toBeGreaterThanOrEqual(200);
    expect(compareAll(file)).toBe(2 * (file.cases.length + file.multi.length) * file.types.length);
  });

  it("gives the scores the Python reference gives now, run live", (ctx) => {
    const python = pythonWithNltk();
    if (python === null) ctx.skip("python3 with NLTK not found (apt-get install -y python3-nltk); the committed scores were still checked");
    const live = JSON.parse(execFileSync(python!, [REFERENCE, "--generate"], { encoding: "utf8", maxBuffer: 1 << 26 })) as ExpectedFile;
    expect(live).toEqual(file);
    compareAll(live);
  }, 60_000);
});
