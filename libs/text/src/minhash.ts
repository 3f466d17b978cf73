/**
 * MinHash signatures over hashed word shingles.
 *
 * A text is normalised (NFKC, lower case, punctuation to spaces, whitespace collapsed), split into
 * words, each word hashed once (FNV-1a over UTF-16 code units, then a murmur3 finaliser), and the
 * k-word shingles hashed by combining k word hashes (murmur3 block mixing) — no shingle string is
 * ever built. ASCII texts are tokenised straight from their bytes without building the normalised
 * string; only texts with non-ASCII characters go through `String.prototype.normalize`.
 *
 * The permutation family is h_i(x) = (a_i·x + b_i) mod 2^32 with a_i odd, computed with
 * `Math.imul`. With a_i odd this is a bijection of the 32-bit integers, i.e. a true permutation,
 * and the minimum is decided by the high bits, which are those of a multiply-shift hash
 * (Dietzfelbinger et al.): 2-universal up to a factor 2. That is a weak guarantee for adversarial
 * sets, but the inputs x are already murmur-finalised shingle hashes, so they behave as random
 * keys and the estimate is as good as with fully random permutations (minhash.test.ts checks the
 * mean absolute error against exact Jaccard, that it is unbiased and that its variance is the
 * binomial one of independent permutations). datasketch's mod 2^61−1 scheme needs 93-bit products,
 * which JavaScript numbers cannot hold (BigInt or split arithmetic: many times slower). Minima are
 * taken in signed int32 order, just another fixed total order of the same range, so it is an
 * equally valid min-wise hash and needs no unsigned conversion per step.
 *
 * The permutation loop (numPerm × shingles multiply-add-min steps, most of the time) runs in a
 * small WebAssembly SIMD kernel, four permutations per instruction, assembled below; a plain
 * JavaScript loop computing the same values is the fallback.
 *
 * Everything is integer arithmetic from a seeded generator, so a signature is the same on every run
 * and machine for a given seed — except that NFKC of characters newer than the runtime's Unicode
 * tables may differ between Node versions.
 */

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
const C1 = 0xcc9e2d51 | 0;
const C2 = 0x1b873593;

const PUNCTUATION = /\p{P}+/gu;
const WHITESPACE = /\s+/g;

/**
 * Normalises text for exact-duplicate hashing and shingling: Unicode NFKC, lower case, every run
 * of punctuation replaced by a space, whitespace runs collapsed to one space, ends trimmed.
 */
export function normalizeText(s: string): string {
  return s.normalize("NFKC").toLowerCase().replace(PUNCTUATION, " ").replace(WHITESPACE, " ").trim();
}

// Character classes of ASCII for the tokeniser, derived from the same regular expressions as
// normalizeText so that the fast path and the normalised path can never disagree.
const WORD = 0;
const UPPER = 1;
const SEPARATOR = 2;
const ASCII_CLASS = new Uint8Array(128);
for (let c = 0; c < 128; c++) {
  const ch = String.fromCharCode(c);
  ASCII_CLASS[c] = /^[\s\p{P}]$/u.test(ch) ? SEPARATOR : c >= 65 && c <= 90 ? UPPER : WORD;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** Scratch buffers reused across calls (all callers are synchronous, so sharing is safe). */
let wordBuf = new Int32Array(1024);
let shingleBuf = new Int32Array(1024);
let textBytes = new Uint8Array(4096);
const encoder = new TextEncoder();

/** Scratch buffers grown past this many elements for one huge text are dropped after it. */
const MAX_KEPT_SCRATCH = 1 << 20;

function releaseLargeScratch(): void {
  if (wordBuf.length > MAX_KEPT_SCRATCH) wordBuf = new Int32Array(1024);
  if (shingleBuf.length > MAX_KEPT_SCRATCH) shingleBuf = new Int32Array(1024);
  if (textBytes.length > MAX_KEPT_SCRATCH) textBytes = new Uint8Array(4096);
}

function ensureWordCapacity(len: number): Int32Array {
  // A word takes at least one character and a separator, so this bounds the word count.
  if (wordBuf.length <= len >> 1) wordBuf = new Int32Array((len >> 1) + 1024);
  return wordBuf;
}

/**
 * Hashes the words of an ASCII `text` into wordBuf, normalising on the fly, and returns their
 * count; returns -1 when the text has a non-ASCII character (it then has to be normalised first).
 * It reads the text as bytes: `TextEncoder.encodeInto` copies an ASCII string several times faster
 * than a `charCodeAt` loop reads it, and a byte is the UTF-16 code unit for ASCII, so the hashes
 * are those of {@link hashWordsUtf16}.
 */
function hashWordsAscii(text: string): number {
  const len = text.length;
  if (textBytes.length < len) textBytes = new Uint8Array(len + 4096);
  // A non-ASCII character takes two or more bytes: then more bytes are written than characters
  // read, or the buffer fills before the end of the text.
  const { read, written } = encoder.encodeInto(text, textBytes);
  if (read !== len || written !== len) return -1;
  const bytes = textBytes;
  const words = ensureWordCapacity(len);
  let n = 0;
  let h = FNV_OFFSET;
  let inWord = false;
  for (let i = 0; i < len; i++) {
    let c = bytes[i]!;
    // Lower-case letters first: they are most of the characters.
    if (c >= 97 && c <= 122) {
      h = Math.imul(h ^ c, FNV_PRIME);
      inWord = true;
      continue;
    }
    const cls = ASCII_CLASS[c];
    if (cls === SEPARATOR) {
      if (inWord) {
        words[n++] = fmix32(h);
        h = FNV_OFFSET;
        inWord = false;
      }
      continue;
    }
    if (cls === UPPER) c += 32;
    h = Math.imul(h ^ c, FNV_PRIME);
    inWord = true;
  }
  if (inWord) words[n++] = fmix32(h);
  return n;
}

/**
 * Hashes the words of a normalised text (words separated by single spaces, no upper-case ASCII or
 * punctuation left) into wordBuf, over UTF-16 code units, and returns their count.
 */
function hashWordsUtf16(text: string): number {
  const len = text.length;
  const words = ensureWordCapacity(len);
  let n = 0;
  let h = FNV_OFFSET;
  let inWord = false;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    if (c < 128 && ASCII_CLASS[c] === SEPARATOR) {
      if (inWord) {
        words[n++] = fmix32(h);
        h = FNV_OFFSET;
        inWord = false;
      }
      continue;
    }
    h = Math.imul(h ^ c, FNV_PRIME);
    inWord = true;
  }
  if (inWord) words[n++] = fmix32(h);
  return n;
}

/** Hashes the words of `text` into wordBuf and returns their count. */
function hashWords(text: string): number {
  const n = hashWordsAscii(text);
  return n >= 0 ? n : hashWordsUtf16(normalizeText(text));
}

/** Shingles of a text of nWords words: words − k + 1, or one of all words when fewer than k. */
function shingleCount(nWords: number, k: number): number {
  return nWords < k ? 1 : nWords - k + 1;
}

/**
 * Hashes the k-word shingles of the nWords words in wordBuf into `dest` from `at` (which has room
 * for shingleCount of them). A text of fewer than k words is one shingle of all its words, an
 * empty text one shingle of nothing.
 */
function writeShingles(nWords: number, k: number, dest: Int32Array, at: number): void {
  const nShingles = shingleCount(nWords, k);
  const width = nWords < k ? nWords : k;
  const words = wordBuf;
  for (let i = 0; i < nShingles; i++) {
    // murmur3_32 over `width` 32-bit blocks (the word hashes), seeded with k.
    let h = k;
    for (let j = 0; j < width; j++) {
      let b = Math.imul(words[i + j]!, C1);
      b = (b << 15) | (b >>> 17);
      h ^= Math.imul(b, C2);
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    dest[at + i] = fmix32(h ^ (width << 2));
  }
}

/** Hashes the shingles of `text` into shingleBuf and returns their count. */
function hashShingles(text: string, k: number): number {
  const nWords = hashWords(text);
  const n = shingleCount(nWords, k);
  if (shingleBuf.length < n) shingleBuf = new Int32Array(Math.max(n, shingleBuf.length * 2));
  writeShingles(nWords, k, shingleBuf, 0);
  return n;
}

/**
 * The k-word shingles of the normalised text, each hashed to an unsigned 32-bit integer, in text
 * order (repeated shingles repeat). A text with fewer than k words is one shingle of all its words.
 */
export function wordShingles(text: string, k: number): Uint32Array {
  if (!Number.isInteger(k) || k < 1) throw new RangeError(`shingle size must be a positive integer, got ${k}`);
  const n = hashShingles(text, k);
  const out = new Uint32Array(shingleBuf.buffer, 0, n).slice();
  releaseLargeScratch();
  return out;
}

/** Options of {@link MinHasher}. */
export interface MinHasherOptions {
  /** Number of permutations, i.e. the signature length. Default 128. */
  numPerm?: number;
  /** Words per shingle. Default 3. */
  shingleSize?: number;
  /** Seed of the permutation coefficients; signatures compare only under the same seed. Default 1. */
  seed?: number;
  /**
   * Run the permutation loop in the WebAssembly SIMD kernel when the runtime supports it, else in
   * plain JavaScript. Both give identical signatures; false is for comparing them. Default true.
   */
  simd?: boolean;
}

/** splitmix32: a small, well-mixed deterministic generator for the permutation coefficients. */
function splitmix32(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return z ^ (z >>> 16);
  };
}

// ---------------------------------------------------------------------------------------------
// The SIMD kernel. The permutation loop is ~13k multiply-add-min steps per 100-word text, the bulk
// of the work; JavaScript does one per `Math.imul`, WebAssembly SIMD four per i32x4.mul. The
// module is assembled here from its instructions (no toolchain, no binary blob) and is, in WAT:
//
//   (func (export "minhash") (param $xs i32) (param $n i32) (param $a i32) (param $b i32)
//                            (param $out i32) (param $np i32)   ;; pointers and $np in bytes
//     $end = $xs + $n * 4
//     loop $perm                       ;; 16 permutations (four i32x4 lanes) per pass
//       $a0..$a3 = v128.load ($a + $p) offset 0,16,32,48;  $b0..$b3 likewise from $b
//       $m0..$m3 = i32x4 0x7fffffff
//       $xp = $xs
//       loop $shingle                  ;; every text has at least one shingle
//         $x = i32x4.splat (i32.load $xp)
//         $mk = i32x4.min_s ($mk, i32x4.add (i32x4.mul ($ak, $x), $bk))   for k = 0..3
//         br_if $shingle (($xp += 4) < $end)
//       v128.store ($out + $p) offset 0,16,32,48 $m0..$m3
//       br_if $perm (($p += 64) < $np))
//
// i32x4.mul and i32x4.add wrap modulo 2^32 and i32x4.min_s is the signed minimum, exactly the
// JavaScript loop's `(Math.imul(a, x) + b) | 0` and `<`; minhash.test.ts checks they agree.

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

function minhashModule(): Uint8Array {
  const I32 = 0x7f;
  const V128 = 0x7b;
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const tee = (i: number) => [0x22, i];
  const i32Const = (n: number) => [0x41, ...sleb(n)];
  const i32Add = [0x6a];
  const i32Shl = [0x74];
  const i32LtU = [0x49];
  const i32Load = [0x28, 2, 0];
  const v128Load = (offset: number) => [0xfd, 0x00, 4, ...uleb(offset)];
  const v128Store = (offset: number) => [0xfd, 0x0b, 4, ...uleb(offset)];
  const v128Max = [0xfd, 0x0c, ...Array.from({ length: 4 }, () => [0xff, 0xff, 0xff, 0x7f]).flat()];
  const splat = [0xfd, 0x11];
  const add = [0xfd, 0xae, 0x01];
  const mul = [0xfd, 0xb5, 0x01];
  const minS = [0xfd, 0xb6, 0x01];
  const loop = [0x03, 0x40];
  const end = [0x0b];
  const brIf0 = [0x0d, 0];
  // Locals: params 0 xs, 1 n, 2 a, 3 b, 4 out, 5 np; 6 p, 7 xp, 8 end; 9 x; 10-13 a; 14-17 b; 18-21 m.
  const [XS, N, A, B, OUT, NP, P, XP, END, X] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const lanes = [0, 1, 2, 3];
  const body = [
    ...[2, 3, I32, 13, V128], // local declarations: 3 × i32, 13 × v128
    ...get(XS), ...get(N), ...i32Const(2), ...i32Shl, ...i32Add, ...set(END),
    ...loop,
    ...lanes.flatMap((k) => [...get(A), ...get(P), ...i32Add, ...v128Load(16 * k), ...set(10 + k)]),
    ...lanes.flatMap((k) => [...get(B), ...get(P), ...i32Add, ...v128Load(16 * k), ...set(14 + k)]),
    ...lanes.flatMap((k) => [...v128Max, ...set(18 + k)]),
    ...get(XS), ...set(XP),
    ...loop,
    ...get(XP), ...i32Load, ...splat, ...set(X),
    ...lanes.flatMap((k) => [...get(18 + k), ...get(10 + k), ...get(X), ...mul, ...get(14 + k), ...add, ...minS, ...set(18 + k)]),
    ...get(XP), ...i32Const(4), ...i32Add, ...tee(XP), ...get(END), ...i32LtU, ...brIf0,
    ...end,
    ...lanes.flatMap((k) => [...get(OUT), ...get(P), ...i32Add, ...get(18 + k), ...v128Store(16 * k)]),
    ...get(P), ...i32Const(64), ...i32Add, ...tee(P), ...get(NP), ...i32LtU, ...brIf0,
    ...end,
    ...end,
  ];
  const section = (id: number, bytes: number[]) => [id, ...uleb(bytes.length), ...bytes];
  const name = (s: string) => [...uleb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
  return Uint8Array.from([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [1, 0x60, 6, I32, I32, I32, I32, I32, I32, 0]), // type: (i32 × 6) → ()
    ...section(3, [1, 0]), // one function of type 0
    ...section(5, [1, 0x00, 1]), // one memory, at least one page
    ...section(7, [2, ...name("minhash"), 0x00, 0, ...name("memory"), 0x02, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

// The few WebAssembly declarations used here: the workspace compiles without the DOM library, and
// @types/node for Node 20 does not declare the WebAssembly global.
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: Record<string, unknown> };
};

interface SimdKernel {
  memory: WasmMemory;
  minhash: (xs: number, n: number, a: number, b: number, out: number, np: number) => void;
  i32: Int32Array;
  /** The hasher whose coefficients are in memory now, and a view of its output. */
  owner: MinHasher | null;
  out: Uint32Array;
}

let kernel: SimdKernel | null | undefined;

/** Texts with more shingles than this (about 1 MB of text) are signed by the JavaScript loop. */
const SIMD_MAX_SHINGLES = 1 << 18;

/** The SIMD kernel, instantiated on first use; null where WebAssembly SIMD is unavailable. */
function simdKernel(): SimdKernel | null {
  if (kernel !== undefined) return kernel;
  kernel = null;
  try {
    const bytes = minhashModule();
    if (typeof WebAssembly === "object" && WebAssembly.validate(bytes)) {
      const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
      const memory = instance.exports.memory as WasmMemory;
      const minhash = instance.exports.minhash as SimdKernel["minhash"];
      kernel = { memory, minhash, i32: new Int32Array(memory.buffer), owner: null, out: new Uint32Array(0) };
    }
  } catch {
    kernel = null;
  }
  return kernel;
}

/** Computes MinHash signatures of texts over hashed word shingles. */
export class MinHasher {
  readonly numPerm: number;
  readonly shingleSize: number;
  readonly seed: number;
  /** Whether signatures are computed by the WebAssembly SIMD kernel. */
  readonly simd: boolean;
  // Coefficients padded to a multiple of 16 for the unrolled loops; the padding is discarded.
  private readonly padded: number;
  private readonly a: Int32Array;
  private readonly b: Int32Array;

  constructor(opts: MinHasherOptions = {}) {
    const { numPerm = 128, shingleSize = 3, seed = 1, simd = true } = opts;
    if (!Number.isInteger(numPerm) || numPerm < 1) throw new RangeError(`numPerm must be a positive integer, got ${numPerm}`);
    if (!Number.isInteger(shingleSize) || shingleSize < 1) throw new RangeError(`shingleSize must be a positive integer, got ${shingleSize}`);
    this.numPerm = numPerm;
    this.shingleSize = shingleSize;
    this.seed = seed;
    this.simd = simd && simdKernel() !== null;
    this.padded = (numPerm + 15) & ~15;
    this.a = new Int32Array(this.padded);
    this.b = new Int32Array(this.padded);
    const next = splitmix32(seed);
    for (let i = 0; i < this.padded; i++) {
      this.a[i] = next() | 1;
      this.b[i] = next();
    }
  }

  /** The MinHash signature of `text`: `numPerm` unsigned 32-bit minima. */
  signature(text: string): Uint32Array {
    const out = new Uint32Array(this.numPerm);
    this.signatureInto(text, out, 0);
    return out;
  }

  /**
   * Writes the signature of `text` into `out[offset .. offset + numPerm)`, so that a corpus can be
   * hashed into one flat buffer without an allocation per text.
   */
  signatureInto(text: string, out: Uint32Array, offset = 0): void {
    if (offset < 0 || offset + this.numPerm > out.length) throw new RangeError(`signature does not fit at offset ${offset} of ${out.length}`);
    const k = this.shingleSize;
    const nWords = hashWords(text);
    const n = shingleCount(nWords, k);
    // Huge texts stay out of the kernel's memory, which can grow but never shrink.
    if (this.simd && n <= SIMD_MAX_SHINGLES) {
      const xs = this.loadKernel(n);
      writeShingles(nWords, k, kernel!.i32, xs);
      const p = this.padded;
      kernel!.minhash(xs * 4, n, 0, p * 4, 2 * p * 4, p * 4);
      out.set(kernel!.out, offset);
    } else {
      if (shingleBuf.length < n) shingleBuf = new Int32Array(Math.max(n, shingleBuf.length * 2));
      writeShingles(nWords, k, shingleBuf, 0);
      this.jsLoop(n, out, offset);
    }
    releaseLargeScratch();
  }

  /**
   * Makes the kernel's memory hold this hasher's coefficients and room for n shingles; returns
   * where the shingles go. Layout, in 32-bit words: a, b, out (padded each), then the shingles.
   */
  private loadKernel(n: number): number {
    const k = kernel!;
    const p = this.padded;
    const xs = 3 * p;
    const needBytes = (xs + n) * 4;
    let fresh = k.owner !== this;
    if (needBytes > k.memory.buffer.byteLength) {
      k.memory.grow(Math.ceil((needBytes - k.memory.buffer.byteLength) / 65536));
      k.i32 = new Int32Array(k.memory.buffer);
      fresh = true;
    }
    if (fresh) {
      k.i32.set(this.a, 0);
      k.i32.set(this.b, p);
      k.out = new Uint32Array(k.memory.buffer, 2 * p * 4, this.numPerm);
      k.owner = this;
    }
    return xs;
  }

  private jsLoop(n: number, out: Uint32Array, offset: number): void {
    const xs = shingleBuf;
    const A = this.a;
    const B = this.b;
    const numPerm = this.numPerm;
    // Four permutations per pass over the shingles: each shingle is loaded once per four
    // permutations and the minima stay in registers.
    for (let p = 0; p < numPerm; p += 4) {
      const a0 = A[p]!, a1 = A[p + 1]!, a2 = A[p + 2]!, a3 = A[p + 3]!;
      const b0 = B[p]!, b1 = B[p + 1]!, b2 = B[p + 2]!, b3 = B[p + 3]!;
      let m0 = 0x7fffffff, m1 = 0x7fffffff, m2 = 0x7fffffff, m3 = 0x7fffffff;
      for (let j = 0; j < n; j++) {
        const x = xs[j]!;
        const h0 = (Math.imul(a0, x) + b0) | 0;
        const h1 = (Math.imul(a1, x) + b1) | 0;
        const h2 = (Math.imul(a2, x) + b2) | 0;
        const h3 = (Math.imul(a3, x) + b3) | 0;
        if (h0 < m0) m0 = h0;
        if (h1 < m1) m1 = h1;
        if (h2 < m2) m2 = h2;
        if (h3 < m3) m3 = h3;
      }
      out[offset + p] = m0;
      if (p + 1 < numPerm) out[offset + p + 1] = m1;
      if (p + 2 < numPerm) out[offset + p + 2] = m2;
      if (p + 3 < numPerm) out[offset + p + 3] = m3;
    }
  }
}

/**
 * Estimated Jaccard similarity of the sets behind two signatures (made with the same hasher): the
 * fraction of positions where they agree.
 */
export function estimateJaccard(a: Uint32Array, b: Uint32Array): number {
  if (a.length !== b.length) throw new RangeError(`signatures differ in length: ${a.length} and ${b.length}`);
  if (a.length === 0) return 0;
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

/** Exact Jaccard similarity |A ∩ B| / |A ∪ B| of two sets; two empty sets are identical (1). */
export function exactJaccard<T>(setA: ReadonlySet<T>, setB: ReadonlySet<T>): number {
  const [small, large] = setA.size <= setB.size ? [setA, setB] : [setB, setA];
  let inter = 0;
  for (const x of small) if (large.has(x)) inter++;
  const union = setA.size + setB.size - inter;
  return union === 0 ? 1 : inter / union;
}

/**
 * A 64-bit hash of the normalised text as 16 hex digits, for exact-duplicate detection when the
 * texts themselves are not all kept in memory (e.g. while streaming an upload).
 */
export function exactHash(text: string): string {
  const s = normalizeText(text);
  let h1 = FNV_OFFSET;
  let h2 = 0x3c6ef372;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, FNV_PRIME);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  h1 = fmix32(h1 ^ s.length);
  h2 = fmix32(h2 ^ h1);
  return (h1 >>> 0).toString(16).padStart(8, "0") + (h2 >>> 0).toString(16).padStart(8, "0");
}
