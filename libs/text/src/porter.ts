/**
 * The Porter stemmer exactly as NLTK's `PorterStemmer()` stems a word in its default
 * NLTK_EXTENSIONS mode — the stemmer Google's rouge_score applies with `use_stemmer=True`.
 *
 * That mode is Porter's 1980 algorithm plus Martin Porter's later fixes plus NLTK's own changes,
 * and npm's Porter stemmers implement other variants (they disagree on "dying", "news", "enjoy",
 * "generously", "skies", …), hence this file. What NLTK adds, in the order it is applied:
 *
 * - a pool of irregular forms looked up first ("dying" → "die", "skies" → "sky", "news" → "news");
 * - words of one or two characters are returned lower-cased and otherwise untouched;
 * - step 1a: a four-letter word ending in "ies" becomes "…ie" ("dies" → "die", "ties" → "tie");
 * - step 1b: "ied" becomes "ie" in a four-letter word and "i" otherwise, before any other rule;
 * - step 1c: "y" → "i" only after a consonant that is not the word's only letter before the y
 *   ("happy" → "happi", "enjoy" → "enjoy", "sky" → "sky" via the pool, "spy" → "spi");
 * - step 2: "alli" → "al" is tried first and, when it fires, step 2 runs again on the result;
 *   "bli" → "ble" (not "abli"), and the extra rules "fulli" → "ful" and "logi" → "log" (the
 *   latter's measure taken with the "l": "geologi" → "geolog");
 * - condition *o also holds for a two-letter stem vowel–consonant ("at", "on").
 *
 * Rules within a step are tried in order and the first whose suffix matches decides: if its
 * condition fails the word is left as it is, and no later rule of that step is tried.
 *
 * Python indexes strings by code point and JavaScript by UTF-16 unit; characters outside the
 * Basic Multilingual Plane are mapped to stand-ins for the duration of the call so that even
 * such words stem as in Python. Lower-casing is `toLowerCase`, which agrees with Python's
 * `str.lower` (both apply Unicode's full lower-case mappings).
 */

/** NLTK's irregular forms: word → stem, returned before any rule is applied. */
const IRREGULAR = new Map<string, string>([
  ["sky", "sky"],
  ["skies", "sky"],
  ["dying", "die"],
  ["lying", "lie"],
  ["tying", "tie"],
  ["news", "news"],
  ["innings", "inning"],
  ["inning", "inning"],
  ["outings", "outing"],
  ["outing", "outing"],
  ["cannings", "canning"],
  ["canning", "canning"],
  ["howe", "howe"],
  ["proceed", "proceed"],
  ["exceed", "exceed"],
  ["succeed", "succeed"],
]);

const A = 97;
const E = 101;
const I = 105;
const O = 111;
const U = 117;
const Y = 121;

/**
 * Whether w[i] is a consonant in Porter's sense: not a, e, i, o, u, and a "y" only when it starts
 * the word or follows a vowel. Every other character, digits included, counts as a consonant.
 */
function isConsonant(w: string, i: number): boolean {
  const c = w.charCodeAt(i);
  if (c === A || c === E || c === I || c === O || c === U) return false;
  if (c === Y) return i === 0 || !isConsonant(w, i - 1);
  return true;
}

/** Porter's m: the number of vowel→consonant transitions in the first `len` characters of w. */
function measure(w: string, len: number = w.length): number {
  let m = 0;
  let prevConsonant = true;
  for (let i = 0; i < len; i++) {
    const c = w.charCodeAt(i);
    const consonant: boolean = c === A || c === E || c === I || c === O || c === U ? false : c === Y ? i === 0 || !prevConsonant : true;
    if (consonant && !prevConsonant && i > 0) m++;
    prevConsonant = consonant;
  }
  return m;
}

/** Condition *v*: some character of the first `len` of w is a vowel. */
function containsVowel(w: string, len: number): boolean {
  for (let i = 0; i < len; i++) if (!isConsonant(w, i)) return true;
  return false;
}

/** Condition *d: w ends in two equal consonants. */
function endsDoubleConsonant(w: string): boolean {
  const n = w.length;
  return n >= 2 && w.charCodeAt(n - 1) === w.charCodeAt(n - 2) && isConsonant(w, n - 1);
}

/** Condition *o: w ends consonant–vowel–consonant with the last not w, x or y; or (NLTK) w is vowel–consonant. */
function endsCvc(w: string): boolean {
  const n = w.length;
  if (n >= 3) {
    const last = w.charCodeAt(n - 1);
    return isConsonant(w, n - 3) && !isConsonant(w, n - 2) && isConsonant(w, n - 1) && last !== 119 && last !== 120 && last !== Y;
  }
  return n === 2 && !isConsonant(w, 0) && isConsonant(w, 1);
}

/** A rule: when the word ends in `suffix`, replace it with `replacement` if `when(stem)` holds for what precedes it. */
type Rule = readonly [suffix: string, replacement: string, when: (stem: string) => boolean];

/** Applies the first rule whose suffix matches, or none; a matching rule whose condition fails ends the step. */
function applyFirst(word: string, rules: readonly Rule[]): string {
  for (const [suffix, replacement, when] of rules) {
    if (!word.endsWith(suffix)) continue;
    const stem = word.slice(0, word.length - suffix.length);
    return when(stem) ? stem + replacement : word;
  }
  return word;
}

const mGt0 = (stem: string): boolean => measure(stem) > 0;
const mGt1 = (stem: string): boolean => measure(stem) > 1;

function step1a(w: string): string {
  if (w.length === 4 && w.endsWith("ies")) return w.slice(0, 1) + "ie";
  if (w.endsWith("sses")) return w.slice(0, -2);
  if (w.endsWith("ies")) return w.slice(0, -2);
  if (w.endsWith("ss")) return w;
  if (w.endsWith("s")) return w.slice(0, -1);
  return w;
}

function step1b(w: string): string {
  if (w.endsWith("ied")) return w.length === 4 ? w.slice(0, 1) + "ie" : w.slice(0, -3) + "i";
  if (w.endsWith("eed")) return measure(w, w.length - 3) > 0 ? w.slice(0, -1) : w;
  let stem: string;
  if (w.endsWith("ed") && containsVowel(w, w.length - 2)) stem = w.slice(0, -2);
  else if (w.endsWith("ing") && containsVowel(w, w.length - 3)) stem = w.slice(0, -3);
  else return w;
  // Tidying after -ed/-ing, again first match decides.
  if (stem.endsWith("at") || stem.endsWith("bl") || stem.endsWith("iz")) return stem + "e";
  if (endsDoubleConsonant(stem)) {
    const last = stem.charCodeAt(stem.length - 1);
    return last === 108 || last === 115 || last === 122 ? stem : stem.slice(0, -1); // keep -ll, -ss, -zz
  }
  return measure(stem) === 1 && endsCvc(stem) ? stem + "e" : stem;
}

function step1c(w: string): string {
  const n = w.length;
  if (n > 2 && w.charCodeAt(n - 1) === Y && isConsonant(w, n - 2)) return w.slice(0, -1) + "i";
  return w;
}

const STEP2: readonly Rule[] = [
  ["ational", "ate", mGt0],
  ["tional", "tion", mGt0],
  ["enci", "ence", mGt0],
  ["anci", "ance", mGt0],
  ["izer", "ize", mGt0],
  ["bli", "ble", mGt0],
  ["alli", "al", mGt0],
  ["entli", "ent", mGt0],
  ["eli", "e", mGt0],
  ["ousli", "ous", mGt0],
  ["ization", "ize", mGt0],
  ["ation", "ate", mGt0],
  ["ator", "ate", mGt0],
  ["alism", "al", mGt0],
  ["iveness", "ive", mGt0],
  ["fulness", "ful", mGt0],
  ["ousness", "ous", mGt0],
  ["aliti", "al", mGt0],
  ["iviti", "ive", mGt0],
  ["biliti", "ble", mGt0],
  ["fulli", "ful", mGt0],
  // The "l" of "logi" counts towards the measure, so that "geologi" and "theologi" qualify.
  ["logi", "log", (stem) => measure(stem + "l") > 0],
];

function step2(w: string): string {
  if (w.endsWith("alli") && measure(w, w.length - 4) > 0) return step2(w.slice(0, -2));
  return applyFirst(w, STEP2);
}

const STEP3: readonly Rule[] = [
  ["icate", "ic", mGt0],
  ["ative", "", mGt0],
  ["alize", "al", mGt0],
  ["iciti", "ic", mGt0],
  ["ical", "ic", mGt0],
  ["ful", "", mGt0],
  ["ness", "", mGt0],
];

const STEP4: readonly Rule[] = [
  ["al", "", mGt1],
  ["ance", "", mGt1],
  ["ence", "", mGt1],
  ["er", "", mGt1],
  ["ic", "", mGt1],
  ["able", "", mGt1],
  ["ible", "", mGt1],
  ["ant", "", mGt1],
  ["ement", "", mGt1],
  ["ment", "", mGt1],
  ["ent", "", mGt1],
  ["ion", "", (stem) => measure(stem) > 1 && (stem.endsWith("s") || stem.endsWith("t"))],
  ["ou", "", mGt1],
  ["ism", "", mGt1],
  ["ate", "", mGt1],
  ["iti", "", mGt1],
  ["ous", "", mGt1],
  ["ive", "", mGt1],
  ["ize", "", mGt1],
];

function step5a(w: string): string {
  if (!w.endsWith("e")) return w;
  const stem = w.slice(0, -1);
  const m = measure(stem);
  return m > 1 || (m === 1 && !endsCvc(stem)) ? stem : w;
}

function step5b(w: string): string {
  return w.endsWith("ll") && measure(w, w.length - 1) > 1 ? w.slice(0, -1) : w;
}

function stemBmp(lower: string): string {
  return step5b(step5a(applyFirst(applyFirst(step2(step1c(step1b(step1a(lower)))), STEP3), STEP4)));
}

const ASTRAL = /[\uD800-\uDBFF][\uDC00-\uDFFF]/;

/**
 * Runs the steps on a word holding characters outside the BMP: each such character becomes one
 * private-use character not otherwise in the word (a consonant, as the original is), and back.
 */
function stemWithAstral(lower: string): string {
  const toStandIn = new Map<string, string>();
  const fromStandIn = new Map<string, string>();
  let next = 0xe000;
  let mapped = "";
  for (const ch of lower) {
    if (ch.length === 1) {
      mapped += ch;
      continue;
    }
    let standIn = toStandIn.get(ch);
    if (standIn === undefined) {
      while (lower.includes(String.fromCharCode(next))) next++;
      standIn = String.fromCharCode(next++);
      toStandIn.set(ch, standIn);
      fromStandIn.set(standIn, ch);
    }
    mapped += standIn;
  }
  let out = "";
  for (const ch of stemBmp(mapped)) out += fromStandIn.get(ch) ?? ch;
  return out;
}

/** Number of code points (Python's len) of a string. */
function codePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff || i + 1 >= s.length) n++;
    else {
      const d = s.charCodeAt(i + 1);
      n++;
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  return n;
}

/**
 * Stems one word as NLTK's `PorterStemmer().stem(word)` does (NLTK_EXTENSIONS mode, lower-casing
 * on): "running" → "run", "generously" → "gener", "dying" → "die", "enjoy" → "enjoy".
 *
 * The word is not split or trimmed; any characters are accepted, and characters other than
 * a, e, i, o, u and y count as consonants, as in NLTK.
 */
export function porterStem(word: string): string {
  // NLTK looks the word up before lower-casing it, and measures its length before as well.
  const irregular = IRREGULAR.get(word);
  if (irregular !== undefined) return irregular;
  const lower = word.toLowerCase();
  if (codePoints(word) <= 2) return lower;
  return ASTRAL.test(lower) ? stemWithAstral(lower) : stemBmp(lower);
}
