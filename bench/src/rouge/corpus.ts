/**
 * Deterministic English-like texts for the ROUGE bench: sentences drawn from a few hundred words
 * with a Zipf-like frequency (function words common), inflected forms so that stemming matters,
 * some capitals, numbers and punctuation; and predictions made from them as a summariser might
 * (words dropped, swapped, replaced by another form of the word or another word).
 */
import { mulberry32 } from "@lathe/text";

const FUNCTION_WORDS = "the of and a to in is was that for it with as on by be at this from or an are were has had not but which".split(" ");
const STEMS = [
  "model train evaluat summar report market compan govern develop research result increas decreas",
  "announc expect suggest propos improv measur analys publish reduc support continu provid includ",
  "system data network city country student teacher hospital patient doctor price cost rate growth",
  "policy election council minister official worker factory product customer service energy water",
  "climate weather storm river forest school university study experiment method question answer",
].join(" ").split(" ");
const ENDINGS = ["", "s", "ed", "ing", "er", "ers", "ion", "ions", "ly", "ment", "ness", "ies", "ation", "al"];
const PUNCT = [",", ",", ".", ";", ":", "'s", "!", "?", ")"];

function words(): string[] {
  const out = [...FUNCTION_WORDS];
  for (const stem of STEMS) for (const ending of ENDINGS) out.push(stem + ending);
  return out;
}

/** `count` pairs of a reference of about `tokens` tokens (in sentences on lines) and a prediction derived from it. */
export function generatePairs(count: number, tokens: number, seed = 1): Array<[reference: string, prediction: string]> {
  const rand = mulberry32(seed);
  const vocab = words();
  // Zipf: index ~ floor(V^u) − 1 with u uniform puts most mass on the first (function) words.
  const pick = (): string => vocab[Math.min(vocab.length - 1, Math.floor(Math.pow(vocab.length, rand())) - 1)]!;
  const pairs: Array<[string, string]> = [];
  for (let p = 0; p < count; p++) {
    const ref: string[] = [];
    for (let i = 0; i < tokens; i++) {
      let w = pick();
      if (rand() < 0.05) w = w[0]!.toUpperCase() + w.slice(1);
      if (rand() < 0.02) w = String(Math.floor(rand() * 2000));
      if (rand() < 0.08) w += PUNCT[Math.floor(rand() * PUNCT.length)]!;
      ref.push(w);
      if (rand() < 0.06) ref.push("\n");
    }
    const pred: string[] = [];
    for (const w of ref) {
      const r = rand();
      if (r < 0.2) continue; // dropped
      if (r < 0.3) pred.push(pick()); // replaced
      else pred.push(w);
      if (pred.length > 2 && rand() < 0.05) {
        const i = pred.length - 1;
        [pred[i], pred[i - 1]] = [pred[i - 1]!, pred[i]!];
      }
    }
    pairs.push([ref.join(" ").replace(/ \n /g, "\n"), pred.join(" ").replace(/ \n /g, "\n")]);
  }
  return pairs;
}
