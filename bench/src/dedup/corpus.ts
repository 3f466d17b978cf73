/**
 * Deterministic synthetic corpora for the dedup benchmark: documents of about 100 words from a
 * Zipf-like vocabulary, some with near-duplicate copies, some with planted PII.
 */

import { mulberry32 } from "@lathe/text";

/** The seeded PRNG of @lathe/text (mulberry32). */
export const prng = mulberry32;

/**
 * `count` documents of 80–120 words (P(rank) ∝ 1/rank over a vocabulary of 50k random words),
 * rendered with sentence breaks, capitals and commas; about `dupRate` of them are copies of an
 * earlier document with 1–3 word edits.
 */
export function generateDocs(count: number, seed = 1, dupRate = 0.1): string[] {
  const rand = prng(seed);
  const V = 50_000;
  const vocab = Array.from({ length: V }, () => {
    let w = "";
    const len = 2 + Math.floor(rand() * 8);
    for (let i = 0; i < len; i++) w += String.fromCharCode(97 + Math.floor(rand() * 26));
    return w;
  });
  const logV = Math.log(V);
  const word = () => vocab[Math.min(V - 1, Math.floor(Math.exp(rand() * logV)) - 1)]!;
  const bases: string[][] = [];
  const docs: string[] = [];
  for (let d = 0; d < count; d++) {
    let words: string[];
    if (bases.length > 0 && rand() < dupRate) {
      words = [...bases[Math.floor(rand() * bases.length)]!];
      const edits = 1 + Math.floor(rand() * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * words.length);
        const op = rand();
        if (op < 0.4) words[at] = word();
        else if (op < 0.7) words.splice(at, 0, word());
        else words.splice(at, 1);
      }
    } else {
      words = Array.from({ length: 80 + Math.floor(rand() * 41) }, word);
      if (bases.length < 10_000) bases.push(words);
    }
    let out = "";
    let capital = true;
    for (const w of words) {
      out += (out ? " " : "") + (capital ? w[0]!.toUpperCase() + w.slice(1) : w);
      capital = rand() < 0.08;
      if (capital) out += rand() < 0.5 ? "." : "!";
      else if (rand() < 0.05) out += ",";
    }
    docs.push(out + ".");
  }
  return docs;
}

/** Inserts one piece of PII (e-mail, phone, card, SSN, IBAN, IP, API key) into about `rate` of the docs. */
export function plantPii(docs: readonly string[], seed = 2, rate = 0.05): string[] {
  const rand = prng(seed);
  const samples = [
    "jane.doe@example.com",
    "+1 (415) 555-0132",
    "4111 1111 1111 1111",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "192.168.10.24",
    "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
  ];
  return docs.map((d) => {
    if (rand() >= rate) return d;
    const at = d.indexOf(" ", Math.floor(rand() * d.length));
    const pii = samples[Math.floor(rand() * samples.length)]!;
    return at < 0 ? `${d} ${pii}` : `${d.slice(0, at)} ${pii}${d.slice(at)}`;
  });
}
