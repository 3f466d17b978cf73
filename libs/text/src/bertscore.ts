// BERTScore (Zhang et al., "BERTScore: Evaluating Text Generation with BERT", ICLR 2020) over
// token embeddings from a scorer model behind an EmbeddingProvider.
//
// Each token vector is scaled to unit length, so the similarity of two tokens is the cosine of
// their vectors. Recall matches every reference token to its most similar candidate token,
// precision every candidate token to its most similar reference token:
//
//   R = Σ_r w(r) · max_c cos(r, c) / Σ_r w(r)      P = Σ_c w(c) · max_r cos(r, c) / Σ_c w(c)
//   F = 2PR / (P + R)
//
// with w ≡ 1, or with IDF weights w(t) = log((M + 1) / (df(t) + 1)) computed over the M reference
// texts of the call (df(t): how many of them contain token t): the paper's IDF with plus-one
// smoothing, as the bert-score package computes it. Optional baseline rescaling maps s to (s − b)/(1 − b) per P, R and F, to spread the
// scores over a readable range; it is monotone, so it never changes a ranking.
//
// Where the paper leaves a choice, this module chooses, and bertscore_reference.py in dev/
// computes the same:
// - Tokens the provider marks `skip` (the [CLS]/[SEP]/<s> markers) are dropped before anything
//   else: they take part neither in the matching nor in the document frequencies. bert-score
//   keeps them in the matching with IDF weight 0; dropping them also keeps them out of the
//   unweighted score, where the paper counts only the sentence's own tokens.
// - A text with no tokens left scores P = R = F = 0 against anything (bert-score warns and gives
//   0 too); with a baseline, those zeros are rescaled like any score, so an empty answer stays
//   below every answer that has tokens.
// - When every weight of a side is 0 (with IDF: every token occurs in every reference text, which
//   always happens with a single reference), that side falls back to equal weights instead of
//   dividing 0 by 0.
// - F = 0 when P + R = 0. P and R lie in [−1, 1]; F is their harmonic mean when both are
//   positive, as they are with real encoders, whose token vectors all point into one narrow cone.
//   With a negative one (possible with arbitrary vectors) F is just the formula's value, as in
//   bert-score, and may fall outside [−1, 1].
// - A zero vector stays zero: its cosine with anything is 0.
// - With several references for a candidate, the pair with the highest F (before rescaling, which
//   keeps the order) is reported, the first one on a tie; all of them count in M and df.

/** The token embeddings of one text, as the scorer model produced them. */
export interface TokenEmbeddings {
  /**
   * The tokens as the scorer's tokenizer gives them; they are the keys of the IDF weights, so
   * two tokens are the same word piece exactly when their strings are equal (a provider whose
   * token strings are ambiguous may return its token ids as strings instead).
   */
  readonly tokens: readonly string[];
  /** One vector per token, all of the same dimension; they need not be normalised. */
  readonly vectors: readonly Float32Array[];
  /**
   * Per token, whether to leave it out (special tokens such as [CLS] and [SEP]). Absent or null:
   * keep every token, for providers that return content tokens only.
   */
  readonly skip?: readonly boolean[] | null;
}

/** The scorer model: turns texts into contextual token embeddings. */
export interface EmbeddingProvider {
  /**
   * What produced the embeddings, recorded with every score: the model, its digest and the
   * layer, for example "models/roberta-large@sha256:…#layer17". Scores are only comparable for
   * equal ids.
   */
  readonly id: string;
  /** The token embeddings of each text, in the order of `texts`. */
  embed(texts: string[]): Promise<TokenEmbeddings[]>;
}

/** Precision, recall and F1 of a candidate against a reference. */
export interface BertScoreValues {
  precision: number;
  recall: number;
  f1: number;
}

/** The baseline scores b of the rescaling (s − b)/(1 − b), each below 1. */
export type BertScoreBaseline = BertScoreValues;

/** Options of {@link bertScore}. */
export interface BertScoreOptions {
  /** Whether to weight tokens by their IDF over the call's reference texts. Default false. */
  idf?: boolean;
  /** Rescale every score with these baseline values. Default null: no rescaling. */
  baseline?: BertScoreBaseline | null;
  /** At most this many texts per `embed` call. Default 64. */
  batchSize?: number;
}

/** The score of one candidate: against its best reference, when it had several. */
export interface BertScorePair extends BertScoreValues {
  /** Which of the candidate's references gave the score (0 with a single reference). */
  referenceIndex: number;
}

/** The result of {@link bertScore}. */
export interface BertScoreResult {
  /** The `id` of the provider that embedded the texts. */
  providerId: string;
  /** Whether IDF weights were used. */
  idf: boolean;
  /** The baseline the scores were rescaled with, or null. */
  baseline: BertScoreBaseline | null;
  /** One score per candidate, in order. */
  scores: BertScorePair[];
}

/** Per-token weights of both sides of a pair, in the order of their vectors. */
export interface BertScoreWeights {
  cand: readonly number[];
  ref: readonly number[];
}

/** Inverse document frequencies over a set of reference texts. */
export interface IdfTable {
  /** M, the number of reference texts. */
  readonly documentCount: number;
  /** df(t): how many reference texts contain token t at least once. */
  readonly documentFrequency: ReadonlyMap<string, number>;
  /** log((M + 1)/(df(t) + 1)); log(M + 1) for a token no reference contains. */
  weight(token: string): number;
}

/**
 * The IDF table of a reference corpus, one token list per reference text (repeated texts count
 * each time, as bert-score counts them).
 */
export function referenceIdf(references: readonly (readonly string[])[]): IdfTable {
  const df = new Map<string, number>();
  for (const tokens of references) for (const t of new Set(tokens)) df.set(t, (df.get(t) ?? 0) + 1);
  const m = references.length;
  return { documentCount: m, documentFrequency: df, weight: (t) => Math.log((m + 1) / ((df.get(t) ?? 0) + 1)) };
}

/**
 * BERTScore of one candidate against one reference from their token vectors (special tokens
 * already removed), without rescaling. `idf`, when given, holds one non-negative weight per
 * vector of each side; without it every token weighs the same. See the top of this file for the
 * edge cases. Throws RangeError on vectors of different dimensions, a non-finite value or
 * weights that do not fit.
 */
export function bertScoreFromEmbeddings(cand: readonly Float32Array[], ref: readonly Float32Array[], idf?: BertScoreWeights | null): BertScoreValues {
  if (idf) {
    checkWeights(idf.cand, cand.length, "cand");
    checkWeights(idf.ref, ref.length, "ref");
  }
  if (cand.length === 0 || ref.length === 0) return { precision: 0, recall: 0, f1: 0 };
  const dim = cand[0]!.length;
  const c = unitRows(cand, dim, "candidate");
  const r = unitRows(ref, dim, "reference");
  const m = cand.length;
  const n = ref.length;
  // Best match of each candidate token among the reference's, and of each reference token.
  const bestOfCand = new Float64Array(m).fill(-Infinity);
  const bestOfRef = new Float64Array(n).fill(-Infinity);
  for (let i = 0; i < m; i++) {
    const ci = i * dim;
    for (let j = 0; j < n; j++) {
      const rj = j * dim;
      let s = 0;
      for (let k = 0; k < dim; k++) s += c[ci + k]! * r[rj + k]!;
      if (s > bestOfCand[i]!) bestOfCand[i] = s;
      if (s > bestOfRef[j]!) bestOfRef[j] = s;
    }
  }
  const precision = weightedMean(bestOfCand, idf?.cand);
  const recall = weightedMean(bestOfRef, idf?.ref);
  return { precision, recall, f1: f1Of(precision, recall) };
}

/** Rescales scores with a baseline: (s − b)/(1 − b) for each of P, R and F. */
export function rescaleBertScore(values: BertScoreValues, baseline: BertScoreBaseline): BertScoreValues {
  return {
    precision: (values.precision - baseline.precision) / (1 - baseline.precision),
    recall: (values.recall - baseline.recall) / (1 - baseline.recall),
    f1: (values.f1 - baseline.f1) / (1 - baseline.f1),
  };
}

/**
 * BERTScore of each candidate against its reference, or against the best of its references when
 * `references` holds a list per candidate. Every distinct text is embedded once, in batches of
 * `batchSize`. With `idf`, the weights come from all the reference texts of this call, so scores
 * with IDF depend on the whole set and are comparable only within it. Throws RangeError on
 * inputs that do not line up (counts, an empty reference list, a bad baseline) and on embeddings
 * the provider returned malformed, naming the text.
 */
export async function bertScore(
  candidates: readonly string[],
  references: readonly string[] | readonly (readonly string[])[],
  provider: EmbeddingProvider,
  opts: BertScoreOptions = {},
): Promise<BertScoreResult> {
  if (candidates.length !== references.length)
    throw new RangeError(`there are ${candidates.length} candidates and ${references.length} references; each candidate needs its reference (or list of references)`);
  const refLists = references.map((r, i) => {
    const list = typeof r === "string" ? [r] : r;
    if (list.length === 0) throw new RangeError(`references[${i}] is an empty list; each candidate needs at least one reference`);
    return list;
  });
  const useIdf = opts.idf ?? false;
  const baseline = opts.baseline ?? null;
  if (baseline) {
    for (const key of ["precision", "recall", "f1"] as const)
      if (!(baseline[key] < 1 && Number.isFinite(baseline[key]))) throw new RangeError(`baseline.${key} must be a finite number below 1, got ${baseline[key]}`);
  }
  const batchSize = opts.batchSize ?? 64;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);

  const embedded = await embedAll([...candidates, ...refLists.flat()], provider, batchSize);
  const table = useIdf ? referenceIdf(refLists.flat().map((t) => embedded.get(t)!.tokens)) : null;
  const weightsOf = (e: ContentTokens) => (table ? e.tokens.map((t) => table.weight(t)) : null);

  const scores = candidates.map((candText, i): BertScorePair => {
    const cand = embedded.get(candText)!;
    const candWeights = weightsOf(cand);
    let best: BertScorePair | null = null;
    for (const [j, refText] of refLists[i]!.entries()) {
      const ref = embedded.get(refText)!;
      const refWeights = weightsOf(ref);
      const values = bertScoreFromEmbeddings(cand.vectors, ref.vectors, candWeights && refWeights ? { cand: candWeights, ref: refWeights } : null);
      if (best === null || values.f1 > best.f1) best = { ...values, referenceIndex: j };
    }
    const chosen = best!;
    return baseline ? { ...rescaleBertScore(chosen, baseline), referenceIndex: chosen.referenceIndex } : chosen;
  });
  return { providerId: provider.id, idf: useIdf, baseline, scores };
}

/** A text's tokens and vectors with the skipped tokens removed. */
interface ContentTokens {
  tokens: string[];
  vectors: Float32Array[];
}

async function embedAll(texts: readonly string[], provider: EmbeddingProvider, batchSize: number): Promise<Map<string, ContentTokens>> {
  const distinct = [...new Set(texts)];
  const out = new Map<string, ContentTokens>();
  for (let start = 0; start < distinct.length; start += batchSize) {
    const batch = distinct.slice(start, start + batchSize);
    const results = await provider.embed(batch);
    if (results.length !== batch.length)
      throw new RangeError(`embedding provider ${provider.id} returned ${results.length} results for ${batch.length} texts`);
    batch.forEach((text, k) => out.set(text, contentTokens(results[k]!, provider.id, start + k, text)));
  }
  return out;
}

function contentTokens(e: TokenEmbeddings, providerId: string, index: number, text: string): ContentTokens {
  const where = () => `embedding provider ${providerId}, text ${index} (${JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}…` : text)})`;
  if (e.vectors.length !== e.tokens.length) throw new RangeError(`${where()}: ${e.tokens.length} tokens but ${e.vectors.length} vectors`);
  const skip = e.skip ?? null;
  if (skip !== null && skip.length !== e.tokens.length) throw new RangeError(`${where()}: ${e.tokens.length} tokens but ${skip.length} skip flags`);
  const tokens: string[] = [];
  const vectors: Float32Array[] = [];
  for (let i = 0; i < e.tokens.length; i++) {
    if (skip?.[i]) continue;
    tokens.push(e.tokens[i]!);
    vectors.push(e.vectors[i]!);
  }
  const dim = vectors[0]?.length ?? 0;
  const odd = vectors.findIndex((v) => v.length !== dim);
  if (odd >= 0) throw new RangeError(`${where()}: vector ${odd} has dimension ${vectors[odd]!.length}, the first has ${dim}`);
  return { tokens, vectors };
}

/** The rows scaled to unit length, in one row-major array; a zero row stays zero. */
function unitRows(rows: readonly Float32Array[], dim: number, side: string): Float64Array {
  const out = new Float64Array(rows.length * dim);
  rows.forEach((row, i) => {
    if (row.length !== dim) throw new RangeError(`${side} vector ${i} has dimension ${row.length}, expected ${dim} as the first candidate vector`);
    let sq = 0;
    for (let k = 0; k < dim; k++) sq += row[k]! * row[k]!;
    if (!Number.isFinite(sq)) throw new RangeError(`${side} vector ${i} holds a non-finite value`);
    const scale = sq > 0 ? 1 / Math.sqrt(sq) : 0;
    for (let k = 0; k < dim; k++) out[i * dim + k] = row[k]! * scale;
  });
  return out;
}

function weightedMean(values: Float64Array, weights: readonly number[] | undefined): number {
  let total = 0;
  if (weights) for (const w of weights) total += w;
  if (!weights || total === 0) {
    let sum = 0;
    for (const v of values) sum += v;
    return sum / values.length;
  }
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += weights[i]! * values[i]!;
  return sum / total;
}

function f1Of(p: number, r: number): number {
  return p + r === 0 ? 0 : (2 * p * r) / (p + r);
}

function checkWeights(weights: readonly number[], count: number, side: string): void {
  if (weights.length !== count) throw new RangeError(`idf.${side} has ${weights.length} weights for ${count} vectors`);
  weights.forEach((w, i) => {
    if (!(w >= 0 && Number.isFinite(w))) throw new RangeError(`idf.${side}[${i}] is ${w}; weights must be finite and ≥ 0`);
  });
}
