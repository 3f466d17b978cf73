#!/usr/bin/env python3
r"""The algorithm of Google's rouge_score (rouge_scorer.RougeScorer, default tokenizer) in pure Python.

rouge_score itself is not installable here (no PyPI), so this is a re-implementation of what it
computes, step by step, with NLTK's PorterStemmer as it uses it; libs/text/src/rouge.ts is checked
against this file's output.

  - tokenize: lower-case; every run of characters other than a-z and 0-9 becomes a space; split on
    whitespace; with the stemmer, tokens longer than 3 characters are stemmed; tokens that are not
    entirely [a-z0-9] (the empty strings at the ends) are dropped.
  - rougeN: n-gram multisets; overlap = sum over the reference's n-grams of min(count in reference,
    count in prediction); precision = overlap / max(#prediction n-grams, 1), recall likewise.
  - rougeL: LCS length of the two token lists (0 scores when either is empty).
  - rougeLsum: both texts split on "\n", empty lines dropped, each line tokenized. For each
    reference sentence, the union of the reference positions on one LCS with each prediction
    sentence (the LCS read back from the table: equal tokens step diagonally, otherwise step left
    when the left cell is strictly greater than the upper one, else up). Each token of that union,
    in position order, is a hit when it still has an unused count in both the whole reference and
    the whole prediction, and uses one of each. Recall = hits / reference tokens, precision =
    hits / prediction tokens (0 scores when either side has no sentence or no token).
  - fmeasure = 2PR / (P + R), or 0 when P + R = 0.
  - score_multi: per rouge type, the score of the first reference with the highest fmeasure.

  /usr/bin/python3 libs/text/dev/rouge_reference.py --generate > libs/text/test-data/rouge-expected.json

(Debian: apt-get install python3-nltk.) The cases are fixed hand-written ones plus pairs drawn
from random.Random(13); bench/rouge/rouge_bench.py imports score() from here.
"""
import collections
import json
import random
import re
import sys

NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
WHITESPACE = re.compile(r"\s+")
VALID_TOKEN = re.compile(r"^[a-z0-9]+$")

_stemmer = None


def stemmer():
    global _stemmer
    if _stemmer is None:
        from nltk.stem import porter

        _stemmer = porter.PorterStemmer()
    return _stemmer


def tokenize(text, use_stemmer):
    words = WHITESPACE.split(NON_ALPHANUMERIC.sub(" ", text.lower()))
    if use_stemmer:
        stem = stemmer().stem
        words = [stem(w) if len(w) > 3 else w for w in words]
    return [w for w in words if VALID_TOKEN.match(w)]


def fmeasure(precision, recall):
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def ngram_counts(tokens, n):
    counts = collections.Counter()
    for start in range(len(tokens) - n + 1):
        counts[tuple(tokens[start : start + n])] += 1
    return counts


def score_ngrams(reference_tokens, prediction_tokens, n):
    ref = ngram_counts(reference_tokens, n)
    pred = ngram_counts(prediction_tokens, n)
    overlap = sum(min(count, pred[gram]) for gram, count in ref.items())
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return (precision, recall, fmeasure(precision, recall))


def lcs_table(ref, can):
    """(len(ref)+1) x (len(can)+1) table; cell [i][j] is the LCS length of ref[:i] and can[:j]."""
    table = [[0] * (len(can) + 1) for _ in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        row, above = table[i], table[i - 1]
        for j in range(1, len(can) + 1):
            if ref[i - 1] == can[j - 1]:
                row[j] = above[j - 1] + 1
            else:
                row[j] = max(above[j], row[j - 1])
    return table


def lcs_positions(ref, can):
    """Positions in ref of one LCS, read back from the bottom-right corner of the table."""
    table = lcs_table(ref, can)
    i, j = len(ref), len(can)
    positions = []
    while i > 0 and j > 0:
        if ref[i - 1] == can[j - 1]:
            positions.append(i - 1)
            i -= 1
            j -= 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    positions.reverse()
    return positions


def score_lcs(reference_tokens, prediction_tokens):
    if not reference_tokens or not prediction_tokens:
        return (0.0, 0.0, 0.0)
    length = lcs_table(reference_tokens, prediction_tokens)[-1][-1]
    precision = length / len(prediction_tokens)
    recall = length / len(reference_tokens)
    return (precision, recall, fmeasure(precision, recall))


def sentences(text):
    return [line for line in text.split("\n") if len(line)]


def score_summary_lcs(reference, prediction, use_stemmer):
    ref_sents = [tokenize(s, use_stemmer) for s in sentences(reference)]
    pred_sents = [tokenize(s, use_stemmer) for s in sentences(prediction)]
    if not ref_sents or not pred_sents:
        return (0.0, 0.0, 0.0)
    ref_total = sum(len(s) for s in ref_sents)
    pred_total = sum(len(s) for s in pred_sents)
    if not ref_total or not pred_total:
        return (0.0, 0.0, 0.0)
    ref_left = collections.Counter()
    pred_left = collections.Counter()
    for s in ref_sents:
        ref_left.update(s)
    for s in pred_sents:
        pred_left.update(s)
    hits = 0
    for r in ref_sents:
        union = set()
        for c in pred_sents:
            union.update(lcs_positions(r, c))
        for position in sorted(union):
            token = r[position]
            if pred_left[token] > 0 and ref_left[token] > 0:
                hits += 1
                pred_left[token] -= 1
                ref_left[token] -= 1
    recall = hits / ref_total
    precision = hits / pred_total
    return (precision, recall, fmeasure(precision, recall))


ROUGE_N = re.compile(r"rouge([0-9])$")


def score(reference, prediction, types, use_stemmer):
    """{type: (precision, recall, fmeasure)} as RougeScorer(types, use_stemmer).score(reference, prediction)."""
    ref_tokens = tokenize(reference, use_stemmer)
    pred_tokens = tokenize(prediction, use_stemmer)
    result = {}
    for rouge_type in types:
        if rouge_type == "rougeL":
            result[rouge_type] = score_lcs(ref_tokens, pred_tokens)
        elif rouge_type == "rougeLsum":
            result[rouge_type] = score_summary_lcs(reference, prediction, use_stemmer)
        elif ROUGE_N.match(rouge_type) and int(rouge_type[5:]) > 0:
            result[rouge_type] = score_ngrams(ref_tokens, pred_tokens, int(rouge_type[5:]))
        else:
            raise ValueError("Invalid rouge type: %s" % rouge_type)
    return result


def score_multi(references, prediction, types, use_stemmer):
    """Per type, the score of the first reference with the highest fmeasure (numpy's argmax)."""
    all_scores = [score(r, prediction, types, use_stemmer) for r in references]
    best = {}
    for rouge_type in types:
        fs = [s[rouge_type][2] for s in all_scores]
        best[rouge_type] = all_scores[fs.index(max(fs))][rouge_type]
    return best


# ---------------------------------------------------------------------------------------------
# Test cases.

TYPES = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]

HAND_WRITTEN = [
    ("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log."),
    ("", ""),
    ("", "something here"),
    ("something here", ""),
    ("   \n\n  ", "a b c"),
    ("!!! ??? ...", "--- ,,,"),
    ("a b c", "a b c"),
    ("a b c", "d e f"),
    ("the the the cat", "the cat the"),
    ("w1 w2 w3 w4 w5", "w1 w2 w6 w7 w8\nw1 w3 w8 w9 w5"),
    ("a b\na b", "a b"),
    ("a b", "a b\na b"),
    ("Hello, World! It's 2024-01-15; version 3.14.", "hello world its 2024 01 15 version 3 14"),
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber", "cafe naive resume uber"),
    ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 and english", "english \u65e5\u672c"),
    ("emoji \U0001f600 test \U0001f680\U0001f680 done", "emoji test done"),
    ("\u0130stanbul KELVIN \u212a ok", "istanbul kelvin k ok"),
    ("The runners were running quickly", "A runner runs quick"),
    ("dying lying tying", "die lie tie"),
    ("The skies were generously sunny", "sky generous sun"),
    ("news enjoy enjoyed enjoying", "news enjoys enjoyment"),
    ("cats dogs and the hat", "cat dog and the hats"),
    ("first line\nsecond line\nthird line", "third line\nfirst line"),
    ("first line\r\nsecond line\r\n", "first line\nsecond line"),
    ("one\n\n\ntwo\n", "two\none"),
    ("\nleading and trailing\n", "leading\ntrailing"),
    ("a a a a a\na a", "a a\na a a"),
    ("x y x y x y", "y x y x"),
    ("police killed the gunman", "police kill the gunman"),
    ("police killed the gunman", "the gunman kill police"),
    ("the cat was found under the bed", "the cat was under the bed"),
    ("the cat was found under the bed", "the tiny little cat was found under the big funny bed"),
    ("word", "word"),
    ("word", "words"),
    ("one two three four five six seven", "seven six five four three two one"),
    ("100 200 300 100", "100 100 200"),
    ("UPPER lower MiXeD", "upper LOWER mixed"),
    ("tab\tseparated\twords", "tab separated words"),
    ("hyphen-ated co-operation e-mail", "hyphen ated co operation e mail"),
    ("a\nb\nc\nd", "d\nc\nb\na"),
]

VOCAB = (
    "the a an of to in and is was were be been has have had it this that on for with as by at from "
    "run runs running ran runner runners happy happiness happily sky skies die dying dies died "
    "enjoy enjoys enjoyed enjoyment generous generously generate generation news cat cats dog dogs "
    "connect connected connecting connection connections relate relational relation police kill "
    "killed killing gunman quick quickly brown fox jump jumps jumped lazy log model models trained "
    "training train evaluation evaluate evaluating summary summaries summarize summarization fly "
    "flies flying spy spied city cities study studies studied studying agree agreed feed feeding "
    "hope hoped hoping hop hopped hopping file filing fail failing"
).split()
PUNCTUATION = [",", ".", "!", "?", ";", ":", "'s", "-", "(", ")", '"', "...", "/", "%", "&"]
ODD = ["42", "3.14", "2024", "x86", "covid-19", "caf\u00e9", "na\u00efve", "\u00fcber", "\u65e5\u672c", "\U0001f600", "\u00c9cole", "\u0130zmir", "\u00df", "\u2019"]


def random_sentence(rng, length):
    words = []
    for _ in range(length):
        roll = rng.random()
        if roll < 0.08:
            words.append(rng.choice(ODD))
        else:
            word = rng.choice(VOCAB[:40] if rng.random() < 0.3 else VOCAB)
            if rng.random() < 0.1:
                word = word.capitalize() if rng.random() < 0.7 else word.upper()
            words.append(word)
        if rng.random() < 0.12:
            words[-1] += rng.choice(PUNCTUATION)
    return " ".join(words)


def mutate(rng, sentence):
    """A prediction-like variant: words dropped, repeated, swapped or replaced."""
    words = sentence.split(" ")
    out = []
    for word in words:
        roll = rng.random()
        if roll < 0.15:
            continue
        if roll < 0.25:
            out.append(rng.choice(VOCAB))
        elif roll < 0.32:
            out.extend([word, word])
        else:
            out.append(word)
    if len(out) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def random_text(rng):
    return [random_sentence(rng, rng.randint(1, 9)) for _ in range(rng.randint(1, 4))]


def join_lines(rng, sentences):
    separator = rng.choice(["\n", "\n", "\n", "\n\n", " \n", "\n", "\n", "\n", "\n", " "])
    text = separator.join(sentences)
    if rng.random() < 0.1:
        text += "\n"
    return text


def generated_pairs(rng, count):
    pairs = []
    for k in range(count):
        ref_sentences = random_text(rng)
        kind = k % 4
        if kind == 3:
            pred_sentences = random_text(rng)
        else:
            pred_sentences = [mutate(rng, s) for s in ref_sentences]
            if kind == 1:
                rng.shuffle(pred_sentences)
            if kind == 2 and len(pred_sentences) > 1:
                pred_sentences = pred_sentences[:-1] + [mutate(rng, s) for s in random_text(rng)]
        pairs.append((join_lines(rng, ref_sentences), join_lines(rng, pred_sentences)))
    return pairs


def both_ways(fn):
    return {"plain": fn(False), "stemmed": fn(True)}


def generate():
    rng = random.Random(13)
    pairs = HAND_WRITTEN + generated_pairs(rng, 200)
    cases = [
        {"reference": r, "prediction": p, "scores": both_ways(lambda stem, r=r, p=p: score(r, p, TYPES, stem))}
        for r, p in pairs
    ]
    multi_inputs = [
        (["a b c", "a b d", "a b c"], "a b c"),
        (["x y z", "p q r"], "a b c"),
        (["The cat sat on the mat", "A cat was sitting on a mat", "the dog"], "the cat is sitting on the mat"),
    ]
    for _ in range(30):
        refs = [join_lines(rng, random_text(rng)) for _ in range(rng.randint(1, 4))]
        base = rng.choice(refs)
        multi_inputs.append((refs, join_lines(rng, [mutate(rng, s) for s in base.split("\n")])))
    multi = [
        {"references": refs, "prediction": p, "scores": both_ways(lambda stem, refs=refs, p=p: score_multi(refs, p, TYPES, stem))}
        for refs, p in multi_inputs
    ]
    return {
        "about": "rouge_score's algorithm (libs/text/dev/rouge_reference.py --generate, NLTK PorterStemmer); scores are [precision, recall, fmeasure]",
        "types": TYPES,
        "cases": cases,
        "multi": multi,
    }


def main():
    if sys.argv[1:] == ["--generate"]:
        # One case a line, so that a change shows as a readable diff.
        data = generate()
        compact = lambda value: json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        lines = ["{", '"about":%s,' % compact(data["about"]), '"types":%s,' % compact(data["types"])]
        for key in ("cases", "multi"):
            items = data[key]
            lines.append('"%s":[' % key)
            lines.extend(compact(item) + ("," if i + 1 < len(items) else "") for i, item in enumerate(items))
            lines.append("]," if key == "cases" else "]")
        lines.append("}")
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
