/**
 * ROUGE-N, ROUGE-L and ROUGE-Lsum with the same numbers as Google's rouge_score
 * (`rouge_scorer.RougeScorer(types, use_stemmer)` with its default tokenizer).
 *
 * Tokens: the text lower-cased, every run of characters other than a–z and 0–9 taken as a
 * separator (so "café" gives "caf", and non-Latin scripts give nothing), and with the stemmer each
 * token longer than 3 characters replaced by its NLTK Porter stem (./porter.ts).
 *
 * - rougeN: clipped n-gram overlap (each n-gram counts at most as often as it occurs in the
 *   other text); precision over the prediction's n-grams, recall over the reference's.
 * - rougeL: longest common subsequence of the two token sequences.
 * - rougeLsum: both texts split into sentences at "\n". For each reference sentence, the union of
 *   the reference positions on one LCS with each prediction sentence — the LCS rouge_score reads
 *   back from its table, whose choice among equally long ones changes the score. Each position of
 *   that union, in order, is a hit if its token still has an unused occurrence in both whole texts,
 *   and uses one of each. Recall = hits / reference tokens, precision = hits / prediction tokens.
 *   Reading the LCS back needs the whole table of each sentence pair (its rows × columns cells),
 *   as in rouge_score: texts without line breaks are one long sentence each.
 * - fmeasure = 2PR / (P + R), 0 when P + R = 0. An empty side (no tokens) scores 0 everywhere.
 *
 * Tokens are interned to integers (which also caches stems), so the dynamic programs compare
 * numbers; rougeL's LCS runs bit-parallel, 32 table cells per operation, and the tables and counts
 * live in scratch typed arrays reused across calls.
 * libs/text/dev/rouge_reference.py is the Python form of the same algorithm the tests compare with.
 */
import { porterStem } from "./porter.js";

/** A ROUGE variant: "rouge1", "rouge2", … (any n ≥ 1), "rougeL" or "rougeLsum". */
export type RougeType = "rouge1" | "rouge2" | "rougeL" | "rougeLsum" | `rouge${number}`;

/** Precision, recall and their harmonic mean, each in [0, 1]. */
export interface RougeScore {
  precision: number;
  recall: number;
  fmeasure: number;
}

/** The types scored when none are asked for. */
export const DEFAULT_ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"] as const;

/** Options of {@link rougeScore} and {@link rougeScoreMulti}. */
export interface RougeOptions<T extends RougeType = RougeType> {
  /** The variants to compute. Default {@link DEFAULT_ROUGE_TYPES}. */
  types?: readonly T[];
  /** Stem tokens longer than 3 characters with NLTK's Porter stemmer, as rouge_score's use_stemmer. Default false. */
  useStemmer?: boolean;
}

// Tokens are interned once for all calls: each distinct token (a word, or with the stemmer a
// stem) gets a global id, and with the stemmer each word longer than 3 characters remembers the
// id of its stem — the stem cache. A call renumbers the ids it meets from 0 (see Vocabulary), so
// that its tables are sized by its own vocabulary. Past INTERN_LIMIT entries everything is
// forgotten, at the start of a call, and interning begins afresh.
const INTERN_LIMIT = 1 << 19;
const idOfTerm = new Map<string, number>();
const terms: string[] = [];

function termId(term: string): number {
  let id = idOfTerm.get(term);
  if (id === undefined) {
    id = terms.length;
    idOfTerm.set(term, id);
    terms.push(term);
  }
  return id;
}

const stemIdOfWord = new Map<string, number>();

/** Global id of the token a word becomes: the word itself, or with the stemmer its stem if it is longer than 3 characters. */
function wordId(word: string, useStemmer: boolean): number {
  if (!useStemmer || word.length <= 3) return termId(word);
  let id = stemIdOfWord.get(word);
  if (id === undefined) {
    // The stem of an [a-z0-9] word is [a-z0-9] again, and never empty for words this long.
    id = termId(porterStem(word));
    stemIdOfWord.set(word, id);
  }
  return id;
}

function forgetIfFull(): void {
  if (terms.length + stemIdOfWord.size <= INTERN_LIMIT) return;
  idOfTerm.clear();
  terms.length = 0;
  stemIdOfWord.clear();
}

/**
 * The global ids of the tokens of `text`, as rouge_score's tokenizer makes them, into `ids`; and
 * into `breaks` the index in `ids` of each token that a "\n" precedes (besides the first).
 * Tokens are the maximal runs of a–z and 0–9 in the lower-cased text.
 */
function scanIds(text: string, useStemmer: boolean, ids: number[], breaks: number[] | null): void {
  const lower = text.toLowerCase();
  const n = lower.length;
  let start = -1;
  let newLine = false;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? lower.charCodeAt(i) : 32;
    if ((c >= 97 && c <= 122) || (c >= 48 && c <= 57)) {
      if (start < 0) start = i;
      continue;
    }
    if (start >= 0) {
      if (newLine && breaks !== null && ids.length > 0) breaks.push(ids.length);
      ids.push(wordId(lower.slice(start, i), useStemmer));
      start = -1;
      newLine = false;
    }
    if (c === 10) newLine = true;
  }
}

/**
 * rouge_score's default tokenizer: lower-case, split on anything but a–z and 0–9, and with
 * `useStemmer` stem the tokens longer than 3 characters.
 *
 * @example rougeTokenize("The runners' 2 dogs!", true) // ["the", "runner", "2", "dog"]
 */
export function rougeTokenize(text: string, useStemmer = false): string[] {
  forgetIfFull();
  const ids: number[] = [];
  scanIds(text, useStemmer, ids, null);
  return ids.map((id) => terms[id]!);
}

/** A text as the call's token ids, with the (exclusive) end of each sentence that has tokens. */
interface Encoded {
  ids: number[];
  sentenceEnds: number[];
}

// Global id → the call's id, valid where stampOf holds the call's stamp.
let localOf = new Int32Array(1024);
let stampOf = new Int32Array(1024);
let lastStamp = 0;

/** The ids of one call: global ids renumbered 0, 1, … in the order the call meets them. */
class Vocabulary {
  size = 0;
  private readonly stamp: number;

  constructor() {
    forgetIfFull();
    if (++lastStamp === 0x40000000) {
      stampOf.fill(0);
      lastStamp = 1;
    }
    this.stamp = lastStamp;
  }

  encode(text: string, useStemmer: boolean): Encoded {
    const ids: number[] = [];
    const sentenceEnds: number[] = [];
    scanIds(text, useStemmer, ids, sentenceEnds);
    if (ids.length > 0) sentenceEnds.push(ids.length);
    if (terms.length > stampOf.length) {
      // Both copied: ids of this call's earlier texts stay valid.
      const stamps = new Int32Array(capacity(terms.length));
      stamps.set(stampOf);
      stampOf = stamps;
      const locals = new Int32Array(stamps.length);
      locals.set(localOf);
      localOf = locals;
    }
    for (let i = 0; i < ids.length; i++) {
      const global = ids[i]!;
      if (stampOf[global] !== this.stamp) {
        stampOf[global] = this.stamp;
        localOf[global] = this.size++;
      }
      ids[i] = localOf[global]!;
    }
    return { ids, sentenceEnds };
  }
}

function score(overlap: number, predictionCount: number, referenceCount: number): RougeScore {
  const precision = predictionCount > 0 ? overlap / predictionCount : 0;
  const recall = referenceCount > 0 ? overlap / referenceCount : 0;
  const fmeasure = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, fmeasure };
}

// Scratch arrays reused across calls (everything here is synchronous).
let countsA = new Int32Array(256);
let countsB = new Int32Array(256);
let rowA = new Int32Array(256);
let rowB = new Int32Array(256);
let table = new Int32Array(4096);
let marks = new Uint8Array(256);

/** Grown scratch arrays bigger than this are dropped after the call that needed them. */
const MAX_KEPT_SCRATCH = 1 << 22;

function releaseLargeScratch(): void {
  if (countsA.length > MAX_KEPT_SCRATCH) countsA = new Int32Array(256);
  if (countsB.length > MAX_KEPT_SCRATCH) countsB = new Int32Array(256);
  if (rowA.length > MAX_KEPT_SCRATCH) rowA = new Int32Array(256);
  if (rowB.length > MAX_KEPT_SCRATCH) rowB = new Int32Array(256);
  if (table.length > MAX_KEPT_SCRATCH) table = new Int32Array(4096);
  if (marks.length > MAX_KEPT_SCRATCH) marks = new Uint8Array(256);
  if (masks.length > MAX_KEPT_SCRATCH) masks = new Int32Array(4096);
  if (bits.length > MAX_KEPT_SCRATCH) bits = new Int32Array(64);
}

function capacity(n: number): number {
  return 1 << Math.ceil(Math.log2(Math.max(n, 2)));
}

/** Zeroed occurrence counts of ids in countsA (reference) and countsB (prediction). */
function countIds(reference: readonly number[], prediction: readonly number[], vocabSize: number): void {
  if (countsA.length < vocabSize) {
    countsA = new Int32Array(capacity(vocabSize));
    countsB = new Int32Array(capacity(vocabSize));
  }
  countsA.fill(0, 0, vocabSize);
  countsB.fill(0, 0, vocabSize);
  for (const id of reference) countsA[id]!++;
  for (const id of prediction) countsB[id]!++;
}

function scoreUnigrams(reference: readonly number[], prediction: readonly number[], vocabSize: number): RougeScore {
  countIds(reference, prediction, vocabSize);
  let overlap = 0;
  for (let id = 0; id < vocabSize; id++) overlap += Math.min(countsA[id]!, countsB[id]!);
  return score(overlap, prediction.length, reference.length);
}

/** n-gram → count, keyed by a number when every key fits in 2^53, else by a string of ids. */
function ngramCounts(ids: readonly number[], n: number, vocabSize: number): Map<number | string, number> {
  const counts = new Map<number | string, number>();
  const numeric = Math.pow(vocabSize, n) <= Number.MAX_SAFE_INTEGER;
  for (let i = 0; i + n <= ids.length; i++) {
    let key: number | string;
    if (numeric) {
      key = 0;
      for (let k = 0; k < n; k++) key = key * vocabSize + ids[i + k]!;
    } else {
      key = ids.slice(i, i + n).join(",");
    }
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

function scoreNgrams(reference: readonly number[], prediction: readonly number[], n: number, vocabSize: number): RougeScore {
  if (n === 1) return scoreUnigrams(reference, prediction, vocabSize);
  const ref = ngramCounts(reference, n, vocabSize);
  const pred = ngramCounts(prediction, n, vocabSize);
  let overlap = 0;
  for (const [key, count] of ref) overlap += Math.min(count, pred.get(key) ?? 0);
  return score(overlap, Math.max(prediction.length - n + 1, 0), Math.max(reference.length - n + 1, 0));
}

/** Bit-parallel LCS is used while its match masks (vocabulary × words of the shorter text) stay this small. */
const MAX_MASK_WORDS = 1 << 22;
let masks = new Int32Array(4096);
let bits = new Int32Array(64);

/**
 * Length of the longest common subsequence of a and b: the bit-parallel form of the LCS dynamic
 * program (Allison & Dix 1986; Crochemore et al. 2001; Hyyrö 2004), 32 cells of a table row per
 * machine word, so ⌈|short| / 32⌉ word operations per token of the longer text.
 *
 * Bit i of the row vector V is 1 where the table row does not step up between columns i and
 * i + 1; for each token of the longer text, with U = V & match(token), V becomes (V + U) | (V & ~match),
 * the addition carrying across words. The LCS length is the number of 0 bits of V.
 */
function lcsLength(a: readonly number[], b: readonly number[], vocabSize: number): number {
  // The shorter sequence runs along the bits.
  if (b.length < a.length) [a, b] = [b, a];
  const m = a.length;
  const words = (m + 31) >>> 5;
  if (vocabSize * words > MAX_MASK_WORDS) return lcsLengthRows(a, b);
  if (masks.length < vocabSize * words) masks = new Int32Array(capacity(vocabSize * words));
  masks.fill(0, 0, vocabSize * words);
  for (let i = 0; i < m; i++) masks[a[i]! * words + (i >>> 5)]! |= 1 << (i & 31);
  if (bits.length < words) bits = new Int32Array(capacity(words));
  const v = bits;
  v.fill(-1, 0, words);
  for (let j = 0; j < b.length; j++) {
    const row = b[j]! * words;
    let carry = 0;
    for (let w = 0; w < words; w++) {
      const vw = v[w]!;
      const match = masks[row + w]!;
      // Unsigned 32-bit halves; the sum of two of them and a carry is exact in a double.
      const sum = (vw >>> 0) + ((vw & match) >>> 0) + carry;
      carry = sum > 0xffffffff ? 1 : 0;
      v[w] = sum | (vw & ~match);
    }
  }
  let ones = 0;
  for (let w = 0; w < words; w++) {
    // Bits at and above m in the last word are not table columns.
    let x = w === words - 1 && (m & 31) !== 0 ? v[w]! & ((1 << (m & 31)) - 1) : v[w]!;
    x -= (x >>> 1) & 0x55555555;
    x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
    ones += (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
  }
  return m - ones;
}

/** Length of the longest common subsequence of a and b, two rows of the table at a time. */
function lcsLengthRows(a: readonly number[], b: readonly number[]): number {
  // The shorter sequence runs along the row.
  if (b.length > a.length) [a, b] = [b, a];
  const cols = b.length;
  if (rowA.length < cols + 1) {
    rowA = new Int32Array(capacity(cols + 1));
    rowB = new Int32Array(capacity(cols + 1));
  }
  let prev = rowA;
  let cur = rowB;
  prev.fill(0, 0, cols + 1);
  cur[0] = 0;
  for (let i = 0; i < a.length; i++) {
    const ai = a[i]!;
    for (let j = 1; j <= cols; j++) {
      if (ai === b[j - 1]) cur[j] = prev[j - 1]! + 1;
      else {
        const up = prev[j]!;
        const left = cur[j - 1]!;
        cur[j] = up > left ? up : left;
      }
    }
    const t = prev;
    prev = cur;
    cur = t;
  }
  return prev[cols]!;
}

function scoreLcs(reference: readonly number[], prediction: readonly number[], vocabSize: number): RougeScore {
  if (reference.length === 0 || prediction.length === 0) return score(0, 0, 0);
  return score(lcsLength(reference, prediction, vocabSize), prediction.length, reference.length);
}

/**
 * Marks in `marks[0 … re−rs)` the positions of reference[rs … re) on the LCS with
 * prediction[ps … pe) that rouge_score reads back: from the table's last cell, equal tokens step
 * diagonally, otherwise left when the left cell is strictly greater than the upper one, else up.
 */
function markLcs(reference: readonly number[], rs: number, re: number, prediction: readonly number[], ps: number, pe: number): void {
  const rows = re - rs;
  const cols = pe - ps;
  const width = cols + 1;
  if (table.length < (rows + 1) * width) table = new Int32Array(capacity((rows + 1) * width));
  table.fill(0, 0, width);
  for (let i = 1; i <= rows; i++) {
    const ri = reference[rs + i - 1]!;
    const row = i * width;
    const above = row - width;
    table[row] = 0;
    for (let j = 1; j <= cols; j++) {
      if (ri === prediction[ps + j - 1]) table[row + j] = table[above + j - 1]! + 1;
      else {
        const up = table[above + j]!;
        const left = table[row + j - 1]!;
        table[row + j] = up > left ? up : left;
      }
    }
  }
  let i = rows;
  let j = cols;
  while (i > 0 && j > 0) {
    if (reference[rs + i - 1] === prediction[ps + j - 1]) {
      marks[i - 1] = 1;
      i--;
      j--;
    } else if (table[i * width + j - 1]! > table[(i - 1) * width + j]!) j--;
    else i--;
  }
}

function scoreSummaryLcs(reference: Encoded, prediction: Encoded, vocabSize: number): RougeScore {
  const ref = reference.ids;
  const pred = prediction.ids;
  if (ref.length === 0 || pred.length === 0) return score(0, 0, 0);
  // Occurrences not yet used as hits: countsA for the reference, countsB for the prediction.
  countIds(ref, pred, vocabSize);
  let hits = 0;
  let rs = 0;
  for (const re of reference.sentenceEnds) {
    if (marks.length < re - rs) marks = new Uint8Array(capacity(re - rs));
    marks.fill(0, 0, re - rs);
    let ps = 0;
    for (const pe of prediction.sentenceEnds) {
      markLcs(ref, rs, re, pred, ps, pe);
      ps = pe;
    }
    for (let k = 0; k < re - rs; k++) {
      if (marks[k] === 0) continue;
      const id = ref[rs + k]!;
      if (countsA[id]! > 0 && countsB[id]! > 0) {
        hits++;
        countsA[id]!--;
        countsB[id]!--;
      }
    }
    rs = re;
  }
  return score(hits, pred.length, ref.length);
}

const NGRAM_TYPE = /^rouge([1-9][0-9]*)$/;

/** 0 for rougeL, −1 for rougeLsum, n for rougeN; throws for anything else. */
function parseType(type: string): number {
  if (type === "rougeL") return 0;
  if (type === "rougeLsum") return -1;
  const m = NGRAM_TYPE.exec(type);
  if (m === null) throw new RangeError(`unknown ROUGE type "${type}": expected rouge1, rouge2, … rougeN, rougeL or rougeLsum`);
  return Number(m[1]);
}

function scoreEncoded<T extends RougeType>(types: readonly T[], kinds: readonly number[], reference: Encoded, prediction: Encoded, vocabSize: number): Record<T, RougeScore> {
  const result = {} as Record<T, RougeScore>;
  try {
    for (let t = 0; t < types.length; t++) {
      const kind = kinds[t]!;
      result[types[t]!] =
        kind === 0 ? scoreLcs(reference.ids, prediction.ids, vocabSize) : kind < 0 ? scoreSummaryLcs(reference, prediction, vocabSize) : scoreNgrams(reference.ids, prediction.ids, kind, vocabSize);
    }
  } finally {
    releaseLargeScratch();
  }
  return result;
}

/**
 * ROUGE scores of `prediction` against `reference`, as rouge_score's
 * `RougeScorer(types, use_stemmer).score(reference, prediction)`.
 *
 * @example
 * rougeScore("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log.", { types: ["rouge1"] })
 * // { rouge1: { precision: 0.75, recall: 0.6667, fmeasure: 0.7059 } }
 * @throws RangeError for a type other than rougeN (n ≥ 1), rougeL and rougeLsum.
 */
export function rougeScore<T extends RougeType = (typeof DEFAULT_ROUGE_TYPES)[number]>(reference: string, prediction: string, opts: RougeOptions<T> = {}): Record<T, RougeScore> {
  const types = opts.types ?? (DEFAULT_ROUGE_TYPES as unknown as readonly T[]);
  const kinds = types.map(parseType);
  const vocab = new Vocabulary();
  const useStemmer = opts.useStemmer ?? false;
  const ref = vocab.encode(reference, useStemmer);
  const pred = vocab.encode(prediction, useStemmer);
  return scoreEncoded(types, kinds, ref, pred, vocab.size);
}

/**
 * ROUGE scores of `prediction` against several references: for each type, the score against the
 * reference with the highest fmeasure (the first of equals), as rouge_score's `score_multi`.
 *
 * @throws RangeError when `references` is empty, or for an unknown type.
 */
export function rougeScoreMulti<T extends RougeType = (typeof DEFAULT_ROUGE_TYPES)[number]>(references: readonly string[], prediction: string, opts: RougeOptions<T> = {}): Record<T, RougeScore> {
  if (references.length === 0) throw new RangeError("rougeScoreMulti needs at least one reference");
  const types = opts.types ?? (DEFAULT_ROUGE_TYPES as unknown as readonly T[]);
  const kinds = types.map(parseType);
  const vocab = new Vocabulary();
  const useStemmer = opts.useStemmer ?? false;
  const pred = vocab.encode(prediction, useStemmer);
  let best: Record<T, RougeScore> | null = null;
  for (const reference of references) {
    const scores = scoreEncoded(types, kinds, vocab.encode(reference, useStemmer), pred, vocab.size);
    if (best === null) best = scores;
    else for (const type of types) if (scores[type].fmeasure > best[type].fmeasure) best[type] = scores[type];
  }
  return best!;
}
