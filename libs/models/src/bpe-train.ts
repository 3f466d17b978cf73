/**
 * Byte-level BPE training as GPT-2 and the Hugging Face `tokenizers` trainer do it: text is split
 * with GPT-2's pattern, each piece becomes its UTF-8 bytes written as printable characters, and
 * the most frequent adjacent pair is merged, step by step. Small and exact rather than fast: it
 * makes test tokenizers, not production ones.
 */

/** GPT-2's pre-tokenization pattern, the one a ByteLevel pre-tokenizer with use_regex applies. */
export const GPT2_SPLIT_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the others map to U+0100 onwards. */
export function byteLevelAlphabet(): string[] {
  const printable = (b: number): boolean =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const alphabet: string[] = [];
  let next = 0;
  for (let b = 0; b < 256; b++) {
    alphabet.push(String.fromCodePoint(printable(b) ? b : 256 + next++));
  }
  return alphabet;
}

export interface BpeModel {
  /** Tokens by id: the 256 byte symbols in byte order, then one per merge that made a new token. */
  vocab: string[];
  /** Merges in rank order. */
  merges: Array<[string, string]>;
}

/**
 * Learns merges until the vocabulary holds `vocabSize` tokens or no pair occurs twice.
 * Ties go to the pair that sorts first, so the result depends on the corpus alone.
 */
export function trainByteLevelBpe(corpus: string, vocabSize: number): BpeModel {
  const alphabet = byteLevelAlphabet();
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const piece of corpus.match(GPT2_SPLIT_PATTERN) ?? []) {
    const word = Array.from(encoder.encode(piece), (b) => alphabet[b] ?? "").join("");
    counts.set(word, (counts.get(word) ?? 0) + 1);
  }
  const words = [...counts].map(([word, count]) => ({ symbols: Array.from(word), count }));

  const vocab = [...alphabet];
  const known = new Set(vocab);
  const merges: Array<[string, string]> = [];
  while (vocab.length < vocabSize) {
    const pairs = new Map<string, { left: string; right: string; count: number }>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const left = symbols[i] ?? "";
        const right = symbols[i + 1] ?? "";
        const key = `${left} ${right}`;
        const pair = pairs.get(key);
        if (pair) pair.count += count;
        else pairs.set(key, { left, right, count });
      }
    }
    let best: { key: string; left: string; right: string; count: number } | undefined;
    for (const [key, pair] of pairs) {
      if (best === undefined || pair.count > best.count || (pair.count === best.count && key < best.key)) {
        best = { key, ...pair };
      }
    }
    if (best === undefined || best.count < 2) break;
    const { left, right } = best;
    const merged = left + right;
    merges.push([left, right]);
    if (!known.has(merged)) {
      known.add(merged);
      vocab.push(merged);
    }
    for (const word of words) word.symbols = applyMerge(word.symbols, left, right);
  }
  return { vocab, merges };
}

function applyMerge(symbols: string[], left: string, right: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (symbols[i] === left && symbols[i + 1] === right) {
      out.push(left + right);
      i++;
    } else {
      out.push(symbols[i] ?? "");
    }
  }
  return out;
}
