/**
 * Exact and near-duplicate detection over texts.
 *
 * Exact duplicates share the same normalised text. Near duplicates are found with MinHash + LSH:
 * LSH candidates are verified by estimated Jaccard similarity ≥ threshold and the verified pairs
 * are joined into clusters with union-find, so a cluster is a connected component of verified
 * pairs (a chain a~b~c puts a and c together even when a and c alone fall below the threshold).
 */
import { LshIndex } from "./lsh.js";
import { MinHasher, normalizeText } from "./minhash.js";

/**
 * Indices of texts whose normalised texts are equal, grouped: only groups of two or more, each
 * ascending, ordered by their first index.
 */
export function exactDuplicateClusters(texts: readonly string[]): number[][] {
  const groups = new Map<string, number[]>();
  for (let i = 0; i < texts.length; i++) {
    const key = normalizeText(texts[i]!);
    const group = groups.get(key);
    if (group) group.push(i);
    else groups.set(key, [i]);
  }
  // Map iteration follows insertion, i.e. first index, and each group was filled in index order.
  return [...groups.values()].filter((g) => g.length >= 2);
}

/** Options of near-duplicate detection. */
export interface NearDuplicateOptions {
  /** MinHash permutations. Default 128. */
  numPerm?: number;
  /** Words per shingle. Default 3. */
  shingleSize?: number;
  /** Estimated Jaccard similarity at or above which two texts are near duplicates. Default 0.8. */
  threshold?: number;
  /** Seed of the MinHash permutations. Default 1. */
  seed?: number;
}

/** Two texts found to be near duplicates, a < b, with their estimated Jaccard similarity. */
export interface NearDuplicatePair {
  a: number;
  b: number;
  similarity: number;
}

/** Result of {@link nearDuplicateClusters}. */
export interface NearDuplicateResult {
  /** Indices grouped into clusters of two or more, each ascending, ordered by first index. */
  clusters: number[][];
  /**
   * The verified pairs that joined the clusters: one pair per merge, so a spanning forest of the
   * clusters rather than every similar pair.
   */
  pairs: NearDuplicatePair[];
  /**
   * The signature of every text (views into one buffer), to be kept for later comparisons, e.g.
   * with {@link NearDuplicateIndex.addSignature}, without hashing the texts again.
   */
  signatures: Uint32Array[];
}

function resolve(opts: NearDuplicateOptions): Required<NearDuplicateOptions> {
  const { numPerm = 128, shingleSize = 3, threshold = 0.8, seed = 1 } = opts;
  return { numPerm, shingleSize, threshold, seed };
}

/** Positions where two signatures in flat buffers agree. */
function agreement(x: Uint32Array, xOff: number, y: Uint32Array, yOff: number, n: number): number {
  let same = 0;
  for (let i = 0; i < n; i++) if (x[xOff + i] === y[yOff + i]) same++;
  return same;
}

/** Agreements needed to reach the threshold (with slack for 0.8·128 = 102.4000…1). */
function requiredAgreement(threshold: number, numPerm: number): number {
  return Math.ceil(threshold * numPerm - 1e-9);
}

/**
 * Clusters of near-duplicate texts: MinHash signatures, LSH candidates, verification by estimated
 * Jaccard similarity ≥ threshold, union-find.
 */
export function nearDuplicateClusters(texts: readonly string[], opts: NearDuplicateOptions = {}): NearDuplicateResult {
  const { numPerm, shingleSize, threshold, seed } = resolve(opts);
  const hasher = new MinHasher({ numPerm, shingleSize, seed });
  const lsh = new LshIndex({ numPerm, threshold });
  const n = texts.length;
  const flat = new Uint32Array(n * numPerm);
  const signatures: Uint32Array[] = new Array<Uint32Array>(n);
  for (let i = 0; i < n; i++) {
    hasher.signatureInto(texts[i]!, flat, i * numPerm);
    signatures[i] = flat.subarray(i * numPerm, (i + 1) * numPerm);
  }

  const parent = new Int32Array(n);
  for (let i = 0; i < n; i++) parent[i] = i;
  const find = (x: number): number => {
    while (parent[x] !== x) {
      const up = parent[parent[x]!]!;
      parent[x] = up;
      x = up;
    }
    return x;
  };
  const need = requiredAgreement(threshold, numPerm);
  const pairs: NearDuplicatePair[] = [];
  for (let i = 0; i < n; i++) {
    const sig = signatures[i]!;
    let twin = false;
    for (const c of lsh.query(sig)) {
      const rc = find(c);
      const ri = find(i);
      if (rc === ri) continue; // already joined: the pair adds nothing to the clusters
      const same = agreement(flat, c * numPerm, flat, i * numPerm, numPerm);
      if (same < need) continue;
      // Union towards the smaller root so that the result does not depend on probing order.
      if (rc < ri) parent[ri] = rc;
      else parent[rc] = ri;
      pairs.push({ a: c, b: i, similarity: same / numPerm });
      if (same === numPerm) twin = true;
    }
    // A text with the same signature as one already indexed has the same band keys: indexing it
    // too would only lengthen the chains (quadratic for many exact copies) without new candidates.
    if (!twin) lsh.insert(i, sig);
  }

  const byRoot = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const r = find(i);
    const group = byRoot.get(r);
    if (group) group.push(i);
    else byRoot.set(r, [i]);
  }
  const clusters = [...byRoot.values()].filter((g) => g.length >= 2);
  return { clusters, pairs, signatures };
}

/**
 * An incremental near-duplicate index: texts (or their signatures) are added one at a time and
 * each addition reports the ids already in the index that it nearly duplicates. Suited to checking
 * one dataset version against another (contamination) from stored signatures. Every candidate is
 * verified on each call, so m exact copies in the index cost O(m) per query; for clustering a
 * whole set, {@link nearDuplicateClusters} avoids that.
 */
export class NearDuplicateIndex {
  readonly hasher: MinHasher;
  readonly threshold: number;
  private readonly lsh: LshIndex;
  private readonly need: number;
  private ids: Float64Array;
  private sigs: Uint32Array;
  private count = 0;

  constructor(opts: NearDuplicateOptions = {}) {
    const { numPerm, shingleSize, threshold, seed } = resolve(opts);
    this.hasher = new MinHasher({ numPerm, shingleSize, seed });
    this.threshold = threshold;
    this.lsh = new LshIndex({ numPerm, threshold });
    this.need = requiredAgreement(threshold, numPerm);
    this.ids = new Float64Array(256);
    this.sigs = new Uint32Array(256 * numPerm);
  }

  /** Number of texts added. */
  get size(): number {
    return this.count;
  }

  /** The signature of `text` under this index's hasher. */
  signature(text: string): Uint32Array {
    return this.hasher.signature(text);
  }

  /** Ids already in the index that `text` nearly duplicates, in the order they were added; adds nothing. */
  query(text: string): number[] {
    return this.querySignature(this.hasher.signature(text));
  }

  /** As {@link query}, from a signature made with the same options. */
  querySignature(sig: Uint32Array): number[] {
    const numPerm = this.hasher.numPerm;
    const out: number[] = [];
    for (const ord of this.lsh.query(sig)) {
      if (agreement(this.sigs, ord * numPerm, sig, 0, numPerm) >= this.need) out.push(this.ids[ord]!);
    }
    return out;
  }

  /** Adds `text` under `id` and returns the ids already in the index that it nearly duplicates. */
  add(id: number, text: string): number[] {
    return this.addSignature(id, this.hasher.signature(text));
  }

  /** As {@link add}, from a signature made with the same options (e.g. kept from an earlier run). */
  addSignature(id: number, sig: Uint32Array): number[] {
    const matches = this.querySignature(sig);
    const numPerm = this.hasher.numPerm;
    const ord = this.count;
    if (ord === this.ids.length) {
      const ids = new Float64Array(ord * 2);
      ids.set(this.ids);
      this.ids = ids;
      const sigs = new Uint32Array(ord * 2 * numPerm);
      sigs.set(this.sigs);
      this.sigs = sigs;
    }
    this.ids[ord] = id;
    this.sigs.set(sig, ord * numPerm);
    this.lsh.insert(ord, sig);
    this.count = ord + 1;
    return matches;
  }
}
