import { describe, expect, it } from "vitest";
import { packExamples, padExamples, shiftLabels, type LabeledSequence, type PackedRow } from "./index.js";

const PAD = 0;

/** An example of `length` tokens whose ids name it (100·n + position) and whose last half is trained. */
function example(n: number, length: number): LabeledSequence {
  const ids = Array.from({ length }, (_, p) => 100 * n + p + 1);
  return { ids, labels: ids.map((id, p) => (p >= length / 2 ? id : -100)) };
}

/** The examples (by name) in each row, in the order of their segments. */
function rowMembers(rows: readonly PackedRow[]): number[][] {
  return rows.map((row) => {
    const members: number[] = [];
    row.segments.forEach((segment, t) => {
      if (segment >= 0 && members.length === segment) members.push(Math.floor((row.tokens[t] ?? 0) / 100));
    });
    return members;
  });
}

describe("packExamples", () => {
  const lengths = [3, 7, 5, 2, 6, 4, 1, 4];
  const examples = lengths.map((length, n) => example(n, length));

  it("packs first-fit decreasing: longest first, each into the first row with room, ties in input order", () => {
    const rows = packExamples(examples, 8, PAD);
    // Sorted: 7(#1) 6(#4) 5(#2) 4(#5) 4(#7) 3(#0) 2(#3) 1(#6).
    expect(rowMembers(rows)).toEqual([[1, 6], [4, 3], [2, 0], [5, 7]]);
    expect(rows.every((row) => row.tokens.length === 8)).toBe(true);
  });

  it("keeps every example whole and once, with its labels, and positions restarting at 0", () => {
    const rows = packExamples(examples, 8, PAD);
    const seen = new Set<number>();
    for (const row of rows) {
      const segmentCount = Math.max(...row.segments) + 1;
      for (let s = 0; s < segmentCount; s++) {
        const at = row.segments.flatMap((segment, t) => (segment === s ? [t] : []));
        // One contiguous run per segment.
        expect(at).toEqual(Array.from({ length: at.length }, (_, i) => (at[0] ?? 0) + i));
        const n = Math.floor((row.tokens[at[0] ?? 0] ?? 0) / 100);
        const source = examples[n] as LabeledSequence;
        expect(at.map((t) => row.tokens[t])).toEqual(source.ids);
        expect(at.map((t) => row.labels[t])).toEqual(source.labels);
        expect(at.map((t) => row.positions[t])).toEqual(source.ids.map((_, p) => p));
        expect(seen.has(n)).toBe(false);
        seen.add(n);
      }
    }
    expect([...seen].sort()).toEqual(examples.map((_, n) => n));
  });

  it("numbers segments 0, 1, 2… in a row and fills the rest with padding that is not trained", () => {
    const rows = packExamples([example(1, 2), example(2, 3), example(3, 1)], 10, PAD);
    expect(rows).toHaveLength(1);
    const row = rows[0] as PackedRow;
    expect(row.segments).toEqual([0, 0, 0, 1, 1, 2, -1, -1, -1, -1]);
    expect(row.positions).toEqual([0, 1, 2, 0, 1, 0, 0, 0, 0, 0]);
    expect(row.tokens.slice(6)).toEqual([PAD, PAD, PAD, PAD]);
    expect(row.labels.slice(6)).toEqual([-100, -100, -100, -100]);
  });

  it("gives the same rows for the same input, and does not change its input", () => {
    const copy = structuredClone(examples);
    expect(packExamples(examples, 9, PAD)).toEqual(packExamples(copy, 9, PAD));
    expect(examples).toEqual(copy);
  });

  it("fills rows as well as first-fit decreasing can on a larger set", () => {
    const many = Array.from({ length: 2000 }, (_, n) => example(n, 1 + ((n * 37 + ((n * n) % 11)) % 64)));
    const rows = packExamples(many, 128, PAD);
    const total = many.reduce((n, ex) => n + ex.ids.length, 0);
    expect(rows.reduce((n, row) => n + row.segments.filter((s) => s >= 0).length, 0)).toBe(total);
    // FFD never uses more than 11/9 of the optimum (+ a constant); the optimum is at least total/128.
    expect(rows.length).toBeLessThanOrEqual(Math.ceil((11 / 9) * Math.ceil(total / 128)) + 1);
    // First fit: no example would have fitted in an earlier row than its own at the time it was placed,
    // so at the end no row has room for the shortest example of any later row.
    const shortestLater: number[] = [];
    for (let r = rows.length - 1, shortest = Infinity; r >= 0; r--) {
      shortestLater[r] = shortest;
      shortest = Math.min(shortest, ...segmentLengths(rows[r] as PackedRow));
    }
    const roomy = rows.filter((row, r) => row.segments.filter((s) => s < 0).length >= (shortestLater[r] ?? Infinity));
    expect(roomy).toEqual([]);
  });

  it("refuses an example longer than the row, an empty one, and ids and labels of different lengths", () => {
    expect(() => packExamples([example(0, 3), example(1, 9)], 8, PAD)).toThrow(
      "example 1 has 9 tokens, more than the row length 8; truncate it first",
    );
    expect(() => packExamples([{ ids: [], labels: [] }], 8, PAD)).toThrow("example 0 has no tokens");
    expect(() => packExamples([{ ids: [1, 2], labels: [1] }], 8, PAD)).toThrow("example 0 has 2 ids but 1 labels");
    expect(() => packExamples([], 0, PAD)).toThrow("row length must be a positive integer, got 0");
  });

  it("packs nothing into no rows", () => {
    expect(packExamples([], 8, PAD)).toEqual([]);
  });
});

function segmentLengths(row: PackedRow): number[] {
  const counts: number[] = [];
  for (const s of row.segments) if (s >= 0) counts[s] = (counts[s] ?? 0) + 1;
  return counts;
}

describe("padExamples", () => {
  it("puts one example per row, in input order, padded to the longest", () => {
    const rows = padExamples([example(1, 2), example(2, 4)], PAD);
    expect(rows.map((r) => r.tokens)).toEqual([
      [101, 102, PAD, PAD],
      [201, 202, 203, 204],
    ]);
    expect(rows.map((r) => r.segments)).toEqual([
      [0, 0, -1, -1],
      [0, 0, 0, 0],
    ]);
    expect(rows[0]?.labels).toEqual([-100, 102, -100, -100]);
    expect(rows[0]?.positions).toEqual([0, 1, 0, 0]);
  });

  it("pads to rowLength when given, and refuses a longer example", () => {
    expect(padExamples([example(1, 2)], PAD, 5)[0]?.tokens).toEqual([101, 102, PAD, PAD, PAD]);
    expect(() => padExamples([example(1, 6)], PAD, 5)).toThrow("example 0 has 6 tokens, more than the row length 5");
  });
});

describe("shiftLabels", () => {
  it("gives each position the next token's label, and never one from the next segment or padding", () => {
    const a = { ids: [11, 12, 13], labels: [-100, 12, 13] };
    const b = { ids: [21, 22], labels: [21, 22] };
    const [row] = packExamples([a, b], 7, PAD);
    expect(row?.segments).toEqual([0, 0, 0, 1, 1, -1, -1]);
    expect(shiftLabels(row as PackedRow)).toEqual([12, 13, -100, 22, -100, -100, -100]);
  });

  it("leaves the last position of a full row untrained", () => {
    const [row] = padExamples([{ ids: [1, 2, 3], labels: [1, 2, 3] }], PAD);
    expect(shiftLabels(row as PackedRow)).toEqual([2, 3, -100]);
  });

  it("never crosses a segment boundary in packed rows", () => {
    const examples = Array.from({ length: 50 }, (_, n) => example(n, 1 + ((n * 7) % 13)));
    for (const row of packExamples(examples, 32, PAD)) {
      const shifted = shiftLabels(row);
      shifted.forEach((label, t) => {
        if (row.segments[t] !== row.segments[t + 1] || (row.segments[t] ?? -1) < 0) expect(label).toBe(-100);
        else expect(label).toBe(row.labels[t + 1]);
      });
    }
  });
});
