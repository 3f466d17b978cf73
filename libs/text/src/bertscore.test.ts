import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  bertScore,
  bertScoreFromEmbeddings,
  type BertScoreBaseline,
  type BertScoreValues,
  type EmbeddingProvider,
  referenceIdf,
  rescaleBertScore,
  type TokenEmbeddings,
} from "./bertscore.js";

// The fixture and the script that writes it: libs/text/dev/bertscore_reference.py computes
// BERTScore from the formulas with numpy over seeded random embeddings.
const fixturePath = fileURLToPath(new URL("../test-data/bertscore-expected.json", import.meta.url));
const scriptPath = fileURLToPath(new URL("../dev/bertscore_reference.py", import.meta.url));

interface FixtureText {
  tokens: string[];
  vectors: number[][];
  skip: boolean[] | null;
}
interface ExpectedScore extends BertScoreValues {
  referenceIndex: number;
}
interface Fixture {
  seed: number;
  baseline: BertScoreBaseline;
  texts: Record<string, FixtureText>;
  suites: {
    name: string;
    candidates: string[];
    references: string[] | string[][];
    idf: Record<string, number>;
    expected: Record<"plain" | "idf" | "rescaled" | "idfRescaled", ExpectedScore[]>;
  }[];
}

/** A provider serving the fixture's embeddings by text, recording what it was asked. */
function fixtureProvider(fixture: Fixture): EmbeddingProvider & { calls: string[][] } {
  const calls: string[][] = [];
  return {
    id: `fixture/seed${fixture.seed}`,
    calls,
    embed(texts) {
      calls.push(texts);
      return Promise.resolve(
        texts.map((t): TokenEmbeddings => {
          const e = fixture.texts[t];
          if (!e) throw new Error(`no text ${t} in the fixture`);
          return { tokens: e.tokens, vectors: e.vectors.map((v) => Float32Array.from(v)), skip: e.skip };
        }),
      );
    },
  };
}

function expectClose(actual: number, expected: number, what: string, tolerance = 1e-9): void {
  if (!(Math.abs(actual - expected) <= tolerance)) expect.fail(`${what}: got ${actual}, expected ${expected} (±${tolerance})`);
}

async function checkAgainstReference(fixture: Fixture): Promise<void> {
  for (const suite of fixture.suites) {
    const flatRefs = suite.references.flat();
    const contentTokens = (name: string) => {
      const t = fixture.texts[name]!;
      return t.tokens.filter((_, i) => !t.skip?.[i]);
    };
    const table = referenceIdf(flatRefs.map(contentTokens));
    for (const [token, weight] of Object.entries(suite.idf)) expectClose(table.weight(token), weight, `${suite.name} idf(${token})`);

    const configs = {
      plain: { idf: false, baseline: null },
      idf: { idf: true, baseline: null },
      rescaled: { idf: false, baseline: fixture.baseline },
      idfRescaled: { idf: true, baseline: fixture.baseline },
    } as const;
    for (const [config, opts] of Object.entries(configs)) {
      const result = await bertScore(suite.candidates, suite.references, fixtureProvider(fixture), opts);
      const expected = suite.expected[config as keyof typeof configs];
      expect(result.scores).toHaveLength(expected.length);
      result.scores.forEach((got, i) => {
        const want = expected[i]!;
        const what = `${suite.name} ${config} candidate ${i}`;
        expectClose(got.precision, want.precision, `${what} precision`);
        expectClose(got.recall, want.recall, `${what} recall`);
        expectClose(got.f1, want.f1, `${what} f1`);
        expect(got.referenceIndex, `${what} reference`).toBe(want.referenceIndex);
      });
    }
  }
}

const e = (...xs: number[]) => Float32Array.from(xs);

describe("bertScoreFromEmbeddings", () => {
  it("scores identical token vectors 1, with or without weights", () => {
    const v = [e(1, 2, 3), e(-1, 0.5, 2), e(0, 0, 4)];
    for (const idf of [undefined, { cand: [0.5, 1, 2], ref: [0.5, 1, 2] }]) {
      const s = bertScoreFromEmbeddings(v, v, idf);
      expectClose(s.precision, 1, "precision", 1e-12);
      expectClose(s.recall, 1, "recall", 1e-12);
      expectClose(s.f1, 1, "f1", 1e-12);
    }
  });

  it("scores orthogonal texts 0, and F1 0 rather than 0/0", () => {
    expect(bertScoreFromEmbeddings([e(1, 0, 0), e(0, 2, 0)], [e(0, 0, 5)])).toEqual({ precision: 0, recall: 0, f1: 0 });
  });

  it("matches a hand-computed case: precision averages the candidate's best matches, recall the reference's", () => {
    // cos(c0, r0) = 1, cos(c1, r0) = 0: P = (1 + 0)/2, R = 1, F = 2·0.5·1/1.5.
    const s = bertScoreFromEmbeddings([e(3, 0), e(0, 1)], [e(1, 0)]);
    expect(s.precision).toBeCloseTo(0.5, 12);
    expect(s.recall).toBeCloseTo(1, 12);
    expect(s.f1).toBeCloseTo(2 / 3, 12);
    // Weighting the unmatched candidate token 3× lowers precision to (1·1 + 3·0)/4.
    expect(bertScoreFromEmbeddings([e(3, 0), e(0, 1)], [e(1, 0)], { cand: [1, 3], ref: [1] }).precision).toBeCloseTo(0.25, 12);
  });

  it("uses cosine similarity, so scaling a vector changes nothing", () => {
    const a = bertScoreFromEmbeddings([e(1, 2), e(3, -1)], [e(2, 2), e(-1, 0.5)]);
    const b = bertScoreFromEmbeddings([e(8, 16), e(0.75, -0.25)], [e(2, 2), e(-100, 50)]);
    expectClose(b.precision, a.precision, "precision", 1e-12);
    expectClose(b.recall, a.recall, "recall", 1e-12);
  });

  it("scores an empty candidate or reference 0", () => {
    expect(bertScoreFromEmbeddings([], [e(1, 0)])).toEqual({ precision: 0, recall: 0, f1: 0 });
    expect(bertScoreFromEmbeddings([e(1, 0)], [])).toEqual({ precision: 0, recall: 0, f1: 0 });
  });

  it("gives a zero vector similarity 0 with everything", () => {
    const s = bertScoreFromEmbeddings([e(0, 0), e(1, 0)], [e(1, 0)]);
    expect(s.precision).toBeCloseTo(0.5, 12);
    expect(s.recall).toBeCloseTo(1, 12);
  });

  it("falls back to equal weights when every weight of a side is 0", () => {
    const plain = bertScoreFromEmbeddings([e(1, 0), e(1, 1)], [e(1, 0)]);
    const zero = bertScoreFromEmbeddings([e(1, 0), e(1, 1)], [e(1, 0)], { cand: [0, 0], ref: [0] });
    expect(zero).toEqual(plain);
  });

  it("refuses vectors of different dimensions, non-finite values and weights that do not fit", () => {
    expect(() => bertScoreFromEmbeddings([e(1, 0)], [e(1, 0, 0)])).toThrow(/reference vector 0 has dimension 3, expected 2/);
    expect(() => bertScoreFromEmbeddings([e(1, NaN)], [e(1, 0)])).toThrow(/candidate vector 0 holds a non-finite value/);
    expect(() => bertScoreFromEmbeddings([e(1, 0)], [e(1, 0)], { cand: [1, 1], ref: [1] })).toThrow(/idf.cand has 2 weights for 1 vectors/);
    expect(() => bertScoreFromEmbeddings([e(1, 0)], [e(1, 0)], { cand: [1], ref: [-1] })).toThrow(RangeError);
  });
});

describe("referenceIdf", () => {
  it("counts each reference once per token and smooths with +1", () => {
    const t = referenceIdf([["a", "b", "a"], ["a"], ["c"]]);
    expect(t.documentCount).toBe(3);
    expect(t.documentFrequency.get("a")).toBe(2);
    expect(t.weight("a")).toBeCloseTo(Math.log(4 / 3), 12);
    expect(t.weight("b")).toBeCloseTo(Math.log(4 / 2), 12);
    expect(t.weight("unseen")).toBeCloseTo(Math.log(4), 12);
  });
});

describe("rescaleBertScore", () => {
  it("maps the baseline to 0 and 1 to 1", () => {
    const b = { precision: 0.8, recall: 0.7, f1: 0.75 };
    expect(rescaleBertScore(b, b)).toEqual({ precision: 0, recall: 0, f1: 0 });
    const one = rescaleBertScore({ precision: 1, recall: 1, f1: 1 }, b);
    expect(one.precision).toBeCloseTo(1, 12);
    expect(one.recall).toBeCloseTo(1, 12);
    expect(one.f1).toBeCloseTo(1, 12);
  });
});

describe("bertScore", () => {
  const fixture = JSON.parse(readFileSync(fixturePath, "utf8")) as Fixture;

  it("matches the numpy reference (test-data/bertscore-expected.json) with and without IDF and rescaling", async () => {
    await checkAgainstReference(fixture);
  });

  it("reports the provider id and settings, embedding each distinct text once in batches", async () => {
    const provider = fixtureProvider(fixture);
    const suite = fixture.suites.find((s) => s.name === "multi")!;
    const result = await bertScore(suite.candidates, suite.references, provider, { idf: true, baseline: fixture.baseline, batchSize: 5 });
    expect(result.providerId).toBe("fixture/seed13");
    expect(result.idf).toBe(true);
    expect(result.baseline).toEqual(fixture.baseline);
    const distinct = new Set([...suite.candidates, ...suite.references.flat()]);
    expect(provider.calls.flat().sort()).toEqual([...distinct].sort());
    expect(Math.max(...provider.calls.map((c) => c.length))).toBe(5);
  });

  it("scores a candidate against its best reference and says which", async () => {
    const texts: Record<string, TokenEmbeddings> = {
      cand: { tokens: ["x", "y"], vectors: [e(1, 0), e(0, 1)] },
      far: { tokens: ["z"], vectors: [e(-1, 0)] },
      near: { tokens: ["x", "y"], vectors: [e(1, 0.1), e(0.1, 1)] },
    };
    const provider: EmbeddingProvider = { id: "test", embed: (ts) => Promise.resolve(ts.map((t) => texts[t]!)) };
    const { scores } = await bertScore(["cand"], [["far", "near", "near"]], provider);
    expect(scores[0]!.referenceIndex).toBe(1);
    expect(scores[0]!.f1).toBeGreaterThan(0.99);
  });

  it("drops the tokens the provider marks skip", async () => {
    const texts: Record<string, TokenEmbeddings> = {
      a: { tokens: ["[CLS]", "x", "[SEP]"], vectors: [e(0, 1), e(1, 0), e(0, -1)], skip: [true, false, true] },
      b: { tokens: ["[CLS]", "x", "[SEP]"], vectors: [e(5, 5), e(2, 0), e(-5, 5)], skip: [true, false, true] },
    };
    const provider: EmbeddingProvider = { id: "test", embed: (ts) => Promise.resolve(ts.map((t) => texts[t]!)) };
    const { scores } = await bertScore(["a"], ["b"], provider);
    expect(scores[0]).toEqual({ precision: 1, recall: 1, f1: 1, referenceIndex: 0 });
  });

  it("rescales an empty candidate's zeros like any score", async () => {
    const texts: Record<string, TokenEmbeddings> = {
      "": { tokens: ["[CLS]", "[SEP]"], vectors: [e(1, 0), e(0, 1)], skip: [true, true] },
      ref: { tokens: ["x"], vectors: [e(1, 0)] },
    };
    const provider: EmbeddingProvider = { id: "test", embed: (ts) => Promise.resolve(ts.map((t) => texts[t]!)) };
    const baseline = { precision: 0.5, recall: 0.5, f1: 0.5 };
    expect((await bertScore([""], ["ref"], provider)).scores[0]).toEqual({ precision: 0, recall: 0, f1: 0, referenceIndex: 0 });
    expect((await bertScore([""], ["ref"], provider, { baseline })).scores[0]).toEqual({ precision: -1, recall: -1, f1: -1, referenceIndex: 0 });
  });

  it("refuses inputs that do not line up and malformed embeddings, naming the text", async () => {
    const ok: EmbeddingProvider = { id: "ok", embed: (ts) => Promise.resolve(ts.map(() => ({ tokens: ["x"], vectors: [e(1, 0)] }))) };
    await expect(bertScore(["a", "b"], ["r"], ok)).rejects.toThrow(/2 candidates and 1 references/);
    await expect(bertScore(["a"], [[]], ok)).rejects.toThrow(/references\[0\] is an empty list/);
    await expect(bertScore(["a"], ["r"], ok, { baseline: { precision: 1, recall: 0, f1: 0 } })).rejects.toThrow(/baseline.precision must be a finite number below 1/);
    const short: EmbeddingProvider = { id: "short", embed: () => Promise.resolve([]) };
    await expect(bertScore(["a"], ["r"], short)).rejects.toThrow(/provider short returned 0 results for 2 texts/);
    const badSkip: EmbeddingProvider = { id: "bad", embed: (ts) => Promise.resolve(ts.map(() => ({ tokens: ["x"], vectors: [e(1, 0)], skip: [] }))) };
    await expect(bertScore(["a"], ["r"], badSkip)).rejects.toThrow(/provider bad, text 0 \("a"\): 1 tokens but 0 skip flags/);
  });

  // A fresh run of the reference script with another seed, so the check is not limited to the
  // committed numbers. Needs python3 with numpy; skipped (with the reason in its name) without.
  const missing = numpyMissing();
  it.skipIf(missing !== null)(`matches a fresh numpy run of dev/bertscore_reference.py${missing ? ` — skipped: ${missing}` : ""}`, async () => {
    const run = spawnSync("python3", [scriptPath, "--seed", "20240613"], { encoding: "utf8", maxBuffer: 64 << 20 });
    expect(run.status, run.stderr).toBe(0);
    const fresh = JSON.parse(run.stdout) as Fixture;
    expect(fresh.seed).toBe(20240613);
    await checkAgainstReference(fresh);
  });
});

function numpyMissing(): string | null {
  const probe = spawnSync("python3", ["-c", "import numpy"], { encoding: "utf8" });
  if (probe.error) return `python3 cannot be run (${probe.error.message})`;
  if (probe.status !== 0) return "numpy cannot be imported by python3";
  return null;
}
