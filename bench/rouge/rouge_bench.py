#!/usr/bin/env python3
"""Python side of bench/rouge: rouge_score's algorithm (libs/text/dev/rouge_reference.py, the same
steps as rouge_scorer.RougeScorer(["rougeL"], use_stemmer).score) timed on the pairs given.

Reads {"pairs": [[reference, prediction], ...], "useStemmer": bool, "rounds": int} on stdin and
writes {"seconds": [one per round], "checksum": sum of rougeL fmeasures} on stdout. Startup and
imports are outside the timing; each round scores every pair once. NLTK is imported only for
useStemmer, and, as in rouge_score, stems are not cached.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "libs", "text", "dev"))
import rouge_reference  # noqa: E402


def main():
    request = json.load(sys.stdin)
    pairs = request["pairs"]
    use_stemmer = request["useStemmer"]
    if use_stemmer:
        rouge_reference.stemmer()  # the import and construction, as RougeScorer's constructor does
    seconds = []
    checksum = 0.0
    for _ in range(request["rounds"]):
        checksum = 0.0
        start = time.perf_counter()
        for reference, prediction in pairs:
            checksum += rouge_reference.score(reference, prediction, ["rougeL"], use_stemmer)["rougeL"][2]
        seconds.append(time.perf_counter() - start)
    json.dump({"seconds": seconds, "checksum": checksum}, sys.stdout)


if __name__ == "__main__":
    main()
