import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { exactDuplicateClusters, NearDuplicateIndex, nearDuplicateClusters } from "./dedup.js";
import { exactJaccard, wordShingles } from "./minhash.js";

const prng = mulberry32;

/**
 * 2000 documents of 80–160 words drawn from a Zipf-like vocabulary (rank ∝ e^(u·ln V), i.e.
 * P(rank) ∝ 1/rank), rendered with random sentence breaks and capitals; 300 of them have one to
 * three near-duplicate copies with 1–3 word edits (substitution, insertion, deletion), rendered
 * with different punctuation.
 */
function corpus(): string[] {
  const rand = prng(2024);
  const V = 20000;
  const vocab = Array.from({ length: V }, () => {
    let w = "";
    const len = 2 + Math.floor(rand() * 8);
    for (let i = 0; i < len; i++) w += String.fromCharCode(97 + Math.floor(rand() * 26));
    return w;
  });
  const word = () => vocab[Math.min(V - 1, Math.floor(Math.exp(rand() * Math.log(V))) - 1)]!;
  const render = (words: string[]) => {
    let out = "";
    let capital = true;
    for (const w of words) {
      out += (out ? " " : "") + (capital ? w[0]!.toUpperCase() + w.slice(1) : w);
      capital = rand() < 0.08;
      if (capital) out += rand() < 0.5 ? "." : "!";
      else if (rand() < 0.05) out += ",";
    }
    return out + ".";
  };
  const docs: string[][] = [];
  const total = 2000;
  while (docs.length < total) {
    const base = Array.from({ length: 80 + Math.floor(rand() * 81) }, word);
    docs.push(base);
    if (docs.length <= 1200 && rand() < 0.3) {
      const copies = 1 + Math.floor(rand() * 3);
      for (let c = 0; c < copies && docs.length < total; c++) {
        const copy = [...base];
        const edits = 1 + Math.floor(rand() * 3);
        for (let e = 0; e < edits; e++) {
          const at = Math.floor(rand() * copy.length);
          const op = rand();
          if (op < 0.4) copy[at] = word();
          else if (op < 0.7) copy.splice(at, 0, word());
          else copy.splice(at, 1);
        }
        docs.push(copy);
      }
    }
  }
  // Shuffle so that copies are not next to their originals.
  for (let i = docs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [docs[i], docs[j]] = [docs[j]!, docs[i]!];
  }
  return docs.map(render);
}

/** Exact shingle Jaccard of every pair sharing at least one shingle (all other pairs have 0). */
function exactPairs(texts: string[]): Map<string, number> {
  const sets = texts.map((t) => new Set(wordShingles(t, 3)));
  const postings = new Map<number, number[]>();
  sets.forEach((set, i) => {
    for (const s of set) {
      const list = postings.get(s);
      if (list) list.push(i);
      else postings.set(s, [i]);
    }
  });
  const out = new Map<string, number>();
  for (const list of postings.values()) {
    for (let x = 0; x < list.length; x++) {
      for (let y = x + 1; y < list.length; y++) {
        const key = `${list[x]}-${list[y]}`;
        if (!out.has(key)) out.set(key, exactJaccard(sets[list[x]!]!, sets[list[y]!]!));
      }
    }
  }
  return out;
}

describe("exactDuplicateClusters", () => {
  it("groups texts equal after normalisation, clusters of two or more, by first index", () => {
    const texts = ["other", "Hello world", "x", "hello, world!", "other", "HELLO   WORLD", "y"];
    expect(exactDuplicateClusters(texts)).toEqual([
      [0, 4],
      [1, 3, 5],
    ]);
    expect(exactDuplicateClusters([])).toEqual([]);
    expect(exactDuplicateClusters(["a", "b"])).toEqual([]);
  });
});

describe("nearDuplicateClusters", () => {
  const texts = corpus();
  const truth = exactPairs(texts);
  const similar = [...truth].filter(([, j]) => j >= 0.95).map(([k]) => k);

  it("has planted near duplicates at Jaccard ≥ 0.95 to find", () => {
    expect(similar.length).toBeGreaterThan(80);
  });

  it("finds at least 95% of the pairs at exact Jaccard ≥ 0.95 and reports pairs at ≥ 0.8 with precision ≥ 0.9", () => {
    const index = new NearDuplicateIndex();
    const reported: string[] = [];
    texts.forEach((t, i) => {
      for (const j of index.add(i, t)) reported.push(`${j}-${i}`);
    });
    const reportedSet = new Set(reported);
    const recall = similar.filter((k) => reportedSet.has(k)).length / similar.length;
    const precision = reported.filter((k) => (truth.get(k) ?? 0) >= 0.8).length / reported.length;
    expect(recall).toBeGreaterThanOrEqual(0.95);
    expect(precision).toBeGreaterThanOrEqual(0.9);
  });

  it("puts the pairs at Jaccard ≥ 0.95 in common clusters, with precise joining pairs", () => {
    const { clusters, pairs, signatures } = nearDuplicateClusters(texts);
    const clusterOf = new Map<number, number>();
    clusters.forEach((c, ci) => c.forEach((i) => clusterOf.set(i, ci)));
    const together = similar.filter((k) => {
      const [a, b] = k.split("-").map(Number);
      return clusterOf.get(a!) !== undefined && clusterOf.get(a!) === clusterOf.get(b!);
    });
    expect(together.length / similar.length).toBeGreaterThanOrEqual(0.95);
    const precise = pairs.filter((p) => (truth.get(`${p.a}-${p.b}`) ?? 0) >= 0.8);
    expect(precise.length / pairs.length).toBeGreaterThanOrEqual(0.9);
    expect(pairs.every((p) => p.a < p.b && p.similarity >= 0.8)).toBe(true);
    expect(signatures).toHaveLength(texts.length);
    for (const c of clusters) {
      expect(c.length).toBeGreaterThanOrEqual(2);
      expect([...c].sort((x, y) => x - y)).toEqual(c);
    }
    expect(clusters.map((c) => c[0]!)).toEqual([...clusters.map((c) => c[0]!)].sort((x, y) => x - y));
  });

  it("is deterministic", () => {
    const sample = texts.slice(0, 500);
    expect(nearDuplicateClusters(sample).clusters).toEqual(nearDuplicateClusters(sample).clusters);
  });

  it("clusters many exact copies together", () => {
    const copies = Array.from({ length: 3000 }, (_, i) => (i % 3 === 2 ? "a different line of text altogether here" : "The same line, repeated many times over."));
    const { clusters } = nearDuplicateClusters(copies);
    expect(clusters).toHaveLength(2);
    expect(clusters[0]).toHaveLength(2000);
    expect(clusters[1]).toHaveLength(1000);
  });

  it("returns no clusters for no texts or distinct texts", () => {
    expect(nearDuplicateClusters([]).clusters).toEqual([]);
    expect(nearDuplicateClusters(["one two three four", "five six seven eight"]).clusters).toEqual([]);
  });
});

describe("NearDuplicateIndex", () => {
  const base = "the committee approved the budget for the new library after a long debate about parking and the opening hours of the reading room on weekends";
  const edited = base.replace("weekends", "sundays");
  const other = "a recipe for bread needs flour water salt and yeast and a warm place for the dough to rise for two hours before baking";

  it("reports on add the ids already added that the text nearly duplicates", () => {
    const index = new NearDuplicateIndex();
    expect(index.add(10, base)).toEqual([]);
    expect(index.add(11, other)).toEqual([]);
    expect(index.add(12, edited)).toEqual([10]);
    expect(index.size).toBe(3);
  });

  it("queries without adding", () => {
    const index = new NearDuplicateIndex();
    index.add(1, base);
    expect(index.query(edited)).toEqual([1]);
    expect(index.query(other)).toEqual([]);
    expect(index.size).toBe(1);
  });

  it("accepts stored signatures in place of texts, e.g. to check one version against another", () => {
    const train = [base, other];
    const { signatures } = nearDuplicateClusters(train);
    const index = new NearDuplicateIndex();
    signatures.forEach((sig, i) => index.addSignature(i, sig));
    expect(index.query(edited)).toEqual([0]);
    expect(index.querySignature(index.signature(other))).toEqual([1]);
  });
});
