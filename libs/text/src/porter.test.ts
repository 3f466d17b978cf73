// The expected stems come from NLTK itself: dev/porter_reference.py ran PorterStemmer() over the
// word list and wrote test-data/porter-expected.tsv; the last test reruns it when NLTK is here.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { porterStem } from "./porter.js";

const EXPECTED = fileURLToPath(new URL("../test-data/porter-expected.tsv", import.meta.url));
const REFERENCE = fileURLToPath(new URL("../dev/porter_reference.py", import.meta.url));

function readExpected(): Array<[word: string, stem: string]> {
  return readFileSync(EXPECTED, "utf8")
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => line.split("\t") as [string, string]);
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

/** The words whose stem differs from the expected one, as "word: got ≠ want". */
function mismatches(pairs: ReadonlyArray<readonly [string, string]>): string[] {
  return pairs.filter(([word, stem]) => porterStem(word) !== stem).map(([word, stem]) => `${word}: ${porterStem(word)} ≠ ${stem}`);
}

describe("porterStem", () => {
  it("stems the words where NLTK's mode differs from other Porter stemmers as NLTK does", () => {
    const cases: Record<string, string> = {
      dying: "die",
      lying: "lie",
      news: "news",
      enjoy: "enjoy",
      enjoyment: "enjoy",
      generously: "gener",
      happy: "happi",
      sky: "sky",
      skies: "sky",
      spy: "spi",
      dies: "die",
      died: "die",
      flies: "fli",
      spied: "spi",
      proceed: "proceed",
      geology: "geolog",
      radically: "radic",
      running: "run",
      caresses: "caress",
      ponies: "poni",
      relational: "relat",
      controlling: "control",
    };
    for (const [word, stem] of Object.entries(cases)) expect(porterStem(word), word).toBe(stem);
  });

  it("lower-cases, and leaves words of one or two characters otherwise alone", () => {
    expect(porterStem("Running")).toBe("run");
    expect(porterStem("IS")).toBe("is");
    expect(porterStem("y")).toBe("y");
    expect(porterStem("")).toBe("");
  });

  it("looks irregular forms up before lower-casing, as NLTK does", () => {
    expect(porterStem("dying")).toBe("die");
    expect(porterStem("Dying")).toBe("dy");
  });

  it("counts characters outside the BMP as one character each, as Python does", () => {
    expect(porterStem("𝒳s")).toBe("𝒳s"); // two code points: too short to stem
    expect(porterStem("hopping𝒳𝒳")).toBe("hopping𝒳𝒳");
    expect(porterStem("𝒳ing")).toBe("𝒳ing");
    expect(porterStem("𝒳a𝒳𝒳ing")).toBe("𝒳a𝒳");
  });

  it("gives NLTK's stem for every word of the committed list", () => {
    const pairs = readExpected();
    expect(pairs.length).toBeGreaterThan(5000);
    expect(mismatches(pairs)).toEqual([]);
  });

  it("gives the stems NLTK gives now, run live on the same words", (ctx) => {
    const python = pythonWithNltk();
    if (python === null) ctx.skip("python3 with NLTK not found (apt-get install -y python3-nltk); the committed stems were still checked");
    const words = readExpected().map(([word]) => word);
    const out = execFileSync(python!, [REFERENCE], { input: words.join("\n") + "\n", encoding: "utf8", maxBuffer: 1 << 26 });
    const live = out
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => line.split("\t") as [string, string]);
    expect(live.map(([word]) => word)).toEqual(words);
    expect(mismatches(live)).toEqual([]);
  });
});
