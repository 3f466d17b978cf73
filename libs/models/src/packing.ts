import { IGNORE_INDEX } from "./examples.js";

/** A training row of one or more sequences, all arrays of the row's length. */
export interface PackedRow {
  tokens: number[];
  /** Unshifted labels; -100 where not trained and on padding. */
  labels: number[];
  /** Position ids, restarting at 0 for each sequence; 0 on padding. */
  positions: number[];
  /** 0, 1, 2… per sequence in the row, in the order they were placed; -1 for padding. */
  segments: number[];
}

/** What packing and padding need of a tokenized example. */
export interface LabeledSequence {
  ids: number[];
  labels: number[];
}

/**
 * First-fit decreasing packing of examples into rows of `rowLength` tokens: longest first (ties in
 * input order), each into the first row with room; positions restart at 0 per example; padding
 * (pad id, label -100, position 0, segment -1) fills each row. Deterministic. No example is split:
 * one longer than rowLength is an error (truncate first), as is an empty one.
 */
export function packExamples(examples: readonly LabeledSequence[], rowLength: number, padId: number): PackedRow[] {
  checkRowLength(rowLength);
  examples.forEach((ex, i) => {
    checkExample(ex, i);
    if (ex.ids.length > rowLength) {
      throw new Error(`example ${i} has ${ex.ids.length} tokens, more than the row length ${rowLength}; truncate it first`);
    }
  });
  const order = examples.map((_, i) => i).sort((a, b) => (examples[b]?.ids.length ?? 0) - (examples[a]?.ids.length ?? 0) || a - b);

  // The leftmost row with room, found in O(log n) over rows that are all open from the start (an
  // unused row has the full length free), so packing a large dataset stays O(n log n).
  const free = new FreeSpaceTree(examples.length, rowLength);
  const placed: number[][] = [];
  for (const index of order) {
    const length = examples[index]?.ids.length ?? 0;
    const row = free.firstWithRoom(length);
    free.take(row, length);
    (placed[row] ??= []).push(index);
  }
  return placed.map((members) => buildRow(members.map((i) => examples[i] as LabeledSequence), rowLength, padId));
}

/**
 * Without packing: one example per row (in input order), padded to the longest example, or to
 * `rowLength` when given (then a longer example is an error).
 */
export function padExamples(examples: readonly LabeledSequence[], padId: number, rowLength?: number): PackedRow[] {
  if (rowLength !== undefined) checkRowLength(rowLength);
  examples.forEach((ex, i) => {
    checkExample(ex, i);
    if (rowLength !== undefined && ex.ids.length > rowLength) {
      throw new Error(`example ${i} has ${ex.ids.length} tokens, more than the row length ${rowLength}; truncate it first`);
    }
  });
  const length = rowLength ?? examples.reduce((n, ex) => Math.max(n, ex.ids.length), 0);
  return examples.map((ex) => buildRow([ex], length, padId));
}

/**
 * Labels shifted for a causal LM: the label at position t is labels[t+1], and -100 at the last
 * position and wherever t+1 is in another segment (the last token of a sequence predicts nothing,
 * in particular not the first token of the next packed sequence) or is padding.
 */
export function shiftLabels(row: PackedRow): number[] {
  const { labels, segments } = row;
  return labels.map((_, t) => {
    const segment = segments[t];
    if (segment === undefined || segment < 0 || segments[t + 1] !== segment) return IGNORE_INDEX;
    return labels[t + 1] ?? IGNORE_INDEX;
  });
}

function buildRow(members: readonly LabeledSequence[], rowLength: number, padId: number): PackedRow {
  const row: PackedRow = { tokens: [], labels: [], positions: [], segments: [] };
  members.forEach((ex, segment) => {
    row.tokens.push(...ex.ids);
    row.labels.push(...ex.labels);
    for (let p = 0; p < ex.ids.length; p++) {
      row.positions.push(p);
      row.segments.push(segment);
    }
  });
  while (row.tokens.length < rowLength) {
    row.tokens.push(padId);
    row.labels.push(IGNORE_INDEX);
    row.positions.push(0);
    row.segments.push(-1);
  }
  return row;
}

function checkRowLength(rowLength: number): void {
  if (!Number.isInteger(rowLength) || rowLength < 1) throw new RangeError(`row length must be a positive integer, got ${rowLength}`);
}

function checkExample(ex: LabeledSequence, index: number): void {
  if (ex.ids.length !== ex.labels.length) {
    throw new Error(`example ${index} has ${ex.ids.length} ids but ${ex.labels.length} labels`);
  }
  if (ex.ids.length === 0) throw new Error(`example ${index} has no tokens`);
}

/** A max segment tree over the free space of `rows` rows, each starting with `capacity`. */
class FreeSpaceTree {
  private readonly size: number;
  private readonly max: Int32Array;

  constructor(rows: number, capacity: number) {
    let size = 1;
    while (size < Math.max(rows, 1)) size *= 2;
    this.size = size;
    this.max = new Int32Array(2 * size).fill(capacity);
  }

  /** The leftmost row with at least `length` free; the caller guarantees one exists. */
  firstWithRoom(length: number): number {
    let node = 1;
    while (node < this.size) {
      node = (this.max[2 * node] ?? 0) >= length ? 2 * node : 2 * node + 1;
    }
    return node - this.size;
  }

  take(row: number, length: number): void {
    let node = row + this.size;
    this.max[node] = (this.max[node] ?? 0) - length;
    for (node >>= 1; node >= 1; node >>= 1) {
      this.max[node] = Math.max(this.max[2 * node] ?? 0, this.max[2 * node + 1] ?? 0);
    }
  }
}
