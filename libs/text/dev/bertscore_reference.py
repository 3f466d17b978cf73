#!/usr/bin/env python3
"""Reference BERTScore, written straight from the formulas with numpy, for libs/text/src/bertscore.ts.

It draws seeded random token embeddings for sets of candidate/reference texts and prints, as
JSON, the embeddings together with the precision, recall and F1 that the formulas give, with
and without IDF weights and with and without baseline rescaling. bertscore.test.ts checks the
TypeScript implementation against the committed output (test-data/bertscore-expected.json) and,
when python3 with numpy is present, against a fresh run with another seed.

    python3 libs/text/dev/bertscore_reference.py --seed 13 > libs/text/test-data/bertscore-expected.json

The definitions followed (the same as bertscore.ts states at its top):
  * tokens flagged `skip` are removed first (from matching and from document frequencies);
  * vectors are scaled to unit L2 norm (a zero vector stays zero); sim = C @ R^T;
  * P = sum_c w(c) max_r sim / sum_c w(c), R = sum_r w(r) max_c sim / sum_r w(r),
    F = 2PR/(P+R), and F = 0 when P + R = 0;
  * w = 1, or idf(t) = ln((M+1)/(df(t)+1)) over the M reference texts of the call, df(t) the
    number of reference texts containing t; a side whose weights sum to 0 uses equal weights;
  * an empty candidate or reference (no tokens left) gives P = R = F = 0;
  * with several references, the one with the highest raw F (the first on a tie);
  * rescaling (s - b)/(1 - b) per P, R, F, applied after choosing the reference.

Vectors are written with 4 decimals and read by both sides as float32, so both start from the
same numbers; everything after that is float64.
"""

import argparse
import json
import math
import sys

import numpy as np

DIM = 8
VOCAB = [f"w{i}" for i in range(20)]
BASELINE = {"precision": 0.31, "recall": 0.29, "f1": 0.30}


class Corpus:
    """Texts by name: tokens, vectors (lists of 4-decimal floats) and skip flags or None."""

    def __init__(self, rng):
        self.rng = rng
        self.word_vectors = {w: rng.standard_normal(DIM) for w in VOCAB}
        self.special_vectors = {t: rng.standard_normal(DIM) for t in ("[CLS]", "[SEP]")}
        self.texts = {}

    def random_words(self, low, high):
        n = int(self.rng.integers(low, high + 1))
        # A skewed choice, so that some words occur in many texts and IDF weights vary.
        p = np.array([1.0 / (i + 1) for i in range(len(VOCAB))])
        return [VOCAB[i] for i in self.rng.choice(len(VOCAB), size=n, p=p / p.sum())]

    def edit(self, words):
        """A candidate made from a reference: some words kept, some replaced, some added or dropped."""
        out = []
        for w in words:
            u = self.rng.random()
            if u < 0.15:
                continue
            out.append(w if u < 0.75 else VOCAB[int(self.rng.integers(len(VOCAB)))])
            if self.rng.random() < 0.1:
                out.append(VOCAB[int(self.rng.integers(len(VOCAB)))])
        return out

    def add(self, name, words, specials=True, copy_of=None):
        if copy_of is not None:
            self.texts[name] = dict(self.texts[copy_of])
            return name
        tokens, vectors, skip = [], [], []
        if specials:
            tokens.append("[CLS]")
            vectors.append(self.special_vectors["[CLS]"] + 0.1 * self.rng.standard_normal(DIM))
            skip.append(True)
        for w in words:
            tokens.append(w)
            # Contextual: the word's vector plus noise, so equal words are similar, not identical.
            vectors.append(self.word_vectors[w] + 0.6 * self.rng.standard_normal(DIM))
            skip.append(False)
        if specials:
            tokens.append("[SEP]")
            vectors.append(self.special_vectors["[SEP]"] + 0.1 * self.rng.standard_normal(DIM))
            skip.append(True)
        self.texts[name] = {
            "tokens": tokens,
            "vectors": [[round(float(x), 4) for x in v] for v in vectors],
            "skip": skip if specials else None,
        }
        return name


def content(text):
    vectors = np.array(text["vectors"], dtype=np.float32).astype(np.float64).reshape(-1, DIM)
    keep = [True] * len(text["tokens"]) if text["skip"] is None else [not s for s in text["skip"]]
    tokens = [t for t, k in zip(text["tokens"], keep) if k]
    return tokens, vectors[np.array(keep, dtype=bool)] if len(keep) else vectors


def idf_weights(ref_token_lists):
    m = len(ref_token_lists)
    df = {}
    for tokens in ref_token_lists:
        for t in set(tokens):
            df[t] = df.get(t, 0) + 1
    return lambda t: math.log((m + 1) / (df.get(t, 0) + 1))


def weighted_mean(values, weights):
    if weights is None or weights.sum() == 0:
        return float(values.mean())
    return float((weights * values).sum() / weights.sum())


def score(c_vecs, r_vecs, c_w=None, r_w=None):
    if len(c_vecs) == 0 or len(r_vecs) == 0:
        return 0.0, 0.0, 0.0

    def unit(x):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)

    sim = unit(c_vecs) @ unit(r_vecs).T
    p = weighted_mean(sim.max(axis=1), c_w)
    r = weighted_mean(sim.max(axis=0), r_w)
    f = 0.0 if p + r == 0 else 2 * p * r / (p + r)
    return p, r, f


def evaluate(texts, candidates, references, use_idf, baseline):
    idf = idf_weights([content(texts[r])[0] for refs in references for r in refs]) if use_idf else None
    out = []
    for cand, refs in zip(candidates, references):
        c_tokens, c_vecs = content(texts[cand])
        best = None
        for j, ref in enumerate(refs):
            r_tokens, r_vecs = content(texts[ref])
            if idf is None:
                p, r, f = score(c_vecs, r_vecs)
            else:
                p, r, f = score(c_vecs, r_vecs, np.array([idf(t) for t in c_tokens]), np.array([idf(t) for t in r_tokens]))
            if best is None or f > best[2]:
                best = (p, r, f, j)
        p, r, f, j = best
        if baseline is not None:
            p = (p - baseline["precision"]) / (1 - baseline["precision"])
            r = (r - baseline["recall"]) / (1 - baseline["recall"])
            f = (f - baseline["f1"]) / (1 - baseline["f1"])
        out.append({"precision": p, "recall": r, "f1": f, "referenceIndex": j})
    return out


def build(seed):
    rng = np.random.default_rng(seed)
    corpus = Corpus(rng)
    suites = []

    # 20 pairs, one reference each: an identical pair, an empty candidate, an empty reference,
    # texts without special tokens (skip null), and edited copies of lengths 1 to 14.
    cands, refs = [], []
    for i in range(20):
        ref_words = corpus.random_words(1, 14)
        specials = i % 5 != 4
        ref = corpus.add(f"single/ref{i}", [] if i == 2 else ref_words, specials)
        if i == 0:
            cand = corpus.add(f"single/cand{i}", [], copy_of=ref)
        else:
            cand = corpus.add(f"single/cand{i}", [] if i == 1 else corpus.edit(ref_words) or ref_words[:1], specials)
        cands.append(cand)
        refs.append([ref])
    suites.append(("single", cands, refs, "strings"))

    # 8 candidates with 1 to 3 references each; one list holds the same text twice.
    cands, refs = [], []
    for i in range(8):
        base = corpus.random_words(2, 12)
        cands.append(corpus.add(f"multi/cand{i}", corpus.edit(base) or base[:1]))
        k = int(rng.integers(1, 4))
        names = [corpus.add(f"multi/ref{i}.{j}", corpus.edit(base) if j else base) for j in range(k)]
        if i == 3:
            names.append(names[0])
        refs.append(names)
    suites.append(("multi", cands, refs, "lists"))

    # One reference: every reference token has df = M = 1, so IDF weights of that side are all 0
    # and fall back to equal weights.
    ref_words = corpus.random_words(4, 8)
    suites.append(("one-reference", [corpus.add("one/cand", corpus.edit(ref_words) or ref_words[:1])], [[corpus.add("one/ref", ref_words)]], "strings"))

    out_suites = []
    for name, cands, ref_lists, shape in suites:
        flat = [r for refs in ref_lists for r in refs]
        idf = idf_weights([content(corpus.texts[r])[0] for r in flat])
        seen = sorted({t for n in cands + flat for t in content(corpus.texts[n])[0]})
        out_suites.append({
            "name": name,
            "candidates": cands,
            # "strings": bertScore is called with one reference string per candidate.
            "references": [refs[0] for refs in ref_lists] if shape == "strings" else ref_lists,
            "idf": {t: idf(t) for t in seen},
            "expected": {
                "plain": evaluate(corpus.texts, cands, ref_lists, False, None),
                "idf": evaluate(corpus.texts, cands, ref_lists, True, None),
                "rescaled": evaluate(corpus.texts, cands, ref_lists, False, BASELINE),
                "idfRescaled": evaluate(corpus.texts, cands, ref_lists, True, BASELINE),
            },
        })
    return {
        "description": "BERTScore expected values from libs/text/dev/bertscore_reference.py (numpy); regenerate with that script.",
        "seed": seed,
        "dim": DIM,
        "baseline": BASELINE,
        "texts": corpus.texts,
        "suites": out_suites,
    }


def dump(fixture):
    """JSON with one text and one suite per line, so that a diff of the fixture stays readable."""
    lines = ["{"]
    keys = list(fixture)
    for i, key in enumerate(keys):
        comma = "," if i + 1 < len(keys) else ""
        value = fixture[key]
        if key == "texts":
            lines.append(f'  "texts": {{')
            names = list(value)
            for j, n in enumerate(names):
                lines.append(f"    {json.dumps(n)}: {json.dumps(value[n], separators=(',', ':'))}{',' if j + 1 < len(names) else ''}")
            lines.append(f"  }}{comma}")
        elif key == "suites":
            lines.append('  "suites": [')
            for j, s in enumerate(value):
                lines.append(f"    {json.dumps(s, separators=(',', ':'))}{',' if j + 1 < len(value) else ''}")
            lines.append(f"  ]{comma}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    sys.stdout.write(dump(build(args.seed)))


if __name__ == "__main__":
    main()
