import { describe, expect, it } from "vitest";
import { mulberry32 } from "./random.js";
import { estimateJaccard, exactHash, exactJaccard, MinHasher, normalizeText, wordShingles } from "./minhash.js";

const prng = mulberry32;

describe("normalizeText", () => {
  it("applies NFKC, lower-cases, turns punctuation into spaces and collapses whitespace", () => {
    expect(normalizeText("  Héllo,   WORLD!! ﬁne — ok\t\n")).toBe("héllo world fine ok");
    expect(normalizeText("don't-stop")).toBe("don t stop");
    expect(normalizeText("")).toBe("");
  });

  it("keeps symbols that are not punctuation", () => {
    expect(normalizeText("a+b = $5")).toBe("a+b = $5");
  });
});

describe("wordShingles", () => {
  it("hashes the shingles of the normalised text, whether or not the text is ASCII", () => {
    const rand = prng(7);
    const alphabet = ["a", "B", "é", "Ü", " ", "  ", ",", ".", "-", "\t", "ﬁ", "x", "ß", "ǅ", "1", "$", "'", "\u00a0", "\u2014"];
    for (let t = 0; t < 300; t++) {
      let s = "";
      const len = Math.floor(rand() * 40);
      for (let i = 0; i < len; i++) s += alphabet[Math.floor(rand() * alphabet.length)]!;
      for (const k of [1, 2, 3]) expect(wordShingles(s, k)).toEqual(wordShingles(normalizeText(s), k));
    }
  });

  it("hashes a word the same in ASCII and in non-ASCII texts", () => {
    expect(wordShingles("é Hello, world foo", 1).slice(1)).toEqual(wordShingles("hello world foo", 1));
  });

  it("ignores case, punctuation and spacing", () => {
    expect(wordShingles("The quick, brown FOX jumps.", 3)).toEqual(wordShingles("the quick brown fox   jumps", 3));
  });

  it("yields words − k + 1 shingles, or one shingle for texts shorter than k words", () => {
    expect(wordShingles("a b c d e", 3)).toHaveLength(3);
    expect(wordShingles("a b", 3)).toHaveLength(1);
    expect(wordShingles("", 3)).toHaveLength(1);
    expect(wordShingles("a b", 3)).not.toEqual(wordShingles("b a", 3));
    expect(wordShingles("a b", 3)).not.toEqual(wordShingles("a", 3));
  });

  it("is order-sensitive within a shingle and repeats repeated shingles", () => {
    const [abc, bca, cab] = wordShingles("a b c a b c", 3);
    expect(new Set([abc, bca, cab]).size).toBe(3);
    expect(wordShingles("a b c a b c", 3)[3]).toBe(abc);
  });

  it("rejects a shingle size below 1", () => {
    expect(() => wordShingles("a b", 0)).toThrow(RangeError);
  });
});

describe("MinHasher", () => {
  it("gives the same signature on every run and machine for a seed", () => {
    const sig = new MinHasher().signature("The quick brown fox jumps over the lazy dog");
    expect(sig).toHaveLength(128);
    // Pinned values: a change here silently invalidates every stored signature.
    expect(Array.from(sig.slice(0, 4))).toEqual([2205526687, 2423952319, 2581253806, 2252741149]);
    expect(new MinHasher({ seed: 1 }).signature("The quick brown fox jumps over the lazy dog")).toEqual(sig);
    expect(new MinHasher({ seed: 2 }).signature("The quick brown fox jumps over the lazy dog")).not.toEqual(sig);
  });

  it("supports permutation counts that are not a multiple of four", () => {
    const h = new MinHasher({ numPerm: 7 });
    const sig = h.signature("one two three four five");
    expect(sig).toHaveLength(7);
    expect(Array.from(sig)).toEqual(Array.from(new MinHasher({ numPerm: 8 }).signature("one two three four five").slice(0, 7)));
  });

  it("computes the same signatures in the WebAssembly SIMD kernel and in JavaScript", () => {
    expect(new MinHasher().simd).toBe(true);
    expect(new MinHasher({ simd: false }).simd).toBe(false);
    const rand = prng(3);
    const text = (words: number) => Array.from({ length: words }, () => `w${Math.floor(rand() * 50000)}`).join(" ");
    // Short texts, a text that grows the kernel's memory, one too large for the kernel.
    const texts = [...Array.from({ length: 200 }, () => text(Math.floor(rand() * 150))), text(30000), text(300000)];
    for (const numPerm of [1, 7, 16, 100, 128, 200]) {
      const simd = new MinHasher({ numPerm, seed: numPerm });
      const js = new MinHasher({ numPerm, seed: numPerm, simd: false });
      for (const t of texts) expect(simd.signature(t)).toEqual(js.signature(t));
    }
  });

  it("writes into a flat buffer at an offset", () => {
    const h = new MinHasher({ numPerm: 16 });
    const flat = new Uint32Array(48);
    h.signatureInto("alpha beta gamma delta", flat, 16);
    expect(flat.subarray(16, 32)).toEqual(h.signature("alpha beta gamma delta"));
    expect(flat.subarray(0, 16).every((v) => v === 0)).toBe(true);
    expect(() => h.signatureInto("x", flat, 40)).toThrow(RangeError);
  });

  it("estimates Jaccard similarity within the error of independent permutations", () => {
    const rand = prng(42);
    const vocab = Array.from({ length: 5000 }, (_, i) => `w${i}`);
    const pick = () => vocab[Math.floor(rand() * vocab.length)]!;
    const hasher = new MinHasher();
    let absError = 0;
    let signedError = 0;
    let squaredError = 0;
    let expectedVariance = 0;
    const pairs = 600;
    for (let p = 0; p < pairs; p++) {
      const words = Array.from({ length: 60 + Math.floor(rand() * 120) }, pick);
      const changed = rand() * 0.4;
      const other = words.map((w) => (rand() < changed ? pick() : w));
      const exact = exactJaccard(new Set(wordShingles(words.join(" "), 3)), new Set(wordShingles(other.join(" "), 3)));
      const estimate = estimateJaccard(hasher.signature(words.join(" ")), hasher.signature(other.join(" ")));
      absError += Math.abs(estimate - exact);
      signedError += estimate - exact;
      squaredError += (estimate - exact) ** 2;
      expectedVariance += (exact * (1 - exact)) / 128;
    }
    expect(absError / pairs).toBeLessThan(0.05);
    expect(Math.abs(signedError / pairs)).toBeLessThan(0.01);
    // Correlated permutations would show as a variance above the binomial one of 128 independent draws.
    expect(squaredError / expectedVariance).toBeGreaterThan(0.75);
    expect(squaredError / expectedVariance).toBeLessThan(1.3);
  });

  it("gives identical signatures to texts that differ only in case and punctuation", () => {
    const h = new MinHasher();
    expect(estimateJaccard(h.signature("Hello, World! How are you?"), h.signature("hello world how are you"))).toBe(1);
  });
});

describe("estimateJaccard and exactJaccard", () => {
  it("compute the fraction of agreeing positions and |A∩B|/|A∪B|", () => {
    expect(estimateJaccard(Uint32Array.of(1, 2, 3, 4), Uint32Array.of(1, 2, 0, 0))).toBe(0.5);
    expect(() => estimateJaccard(Uint32Array.of(1), Uint32Array.of(1, 2))).toThrow(RangeError);
    expect(exactJaccard(new Set([1, 2, 3]), new Set([2, 3, 4]))).toBe(0.5);
    expect(exactJaccard(new Set(), new Set())).toBe(1);
  });
});

describe("exactHash", () => {
  it("is equal for texts equal after normalisation and differs otherwise", () => {
    expect(exactHash("Hello, World")).toBe(exactHash("hello world"));
    expect(exactHash("hello world")).not.toBe(exactHash("hello word"));
    expect(exactHash("x")).toMatch(/^[0-9a-f]{16}$/);
  });
});
