import { describe, expect, it } from "vitest";
import { ModelFormatError } from "./errors.js";
import { decodeSequences, encodeSequences } from "./sequences.js";

describe("stored training sequences", () => {
  const set = { sequences: [{ ids: [1, 2, 3], labels: [-100, 2, 3] }, { ids: [], labels: [] }, { ids: [70000, 5], labels: [70000, -100] }], truncated: 1 };

  it("round-trips sequences, the truncated count and the meta", () => {
    const bytes = encodeSequences(set, { maxSeqLength: 128, trainOnInputs: false, template: "abc" });
    expect(decodeSequences(bytes)).toEqual({ ...set, meta: { maxSeqLength: 128, trainOnInputs: false, template: "abc" } });
    expect(decodeSequences(encodeSequences({ sequences: [], truncated: 0 }))).toEqual({ sequences: [], truncated: 0, meta: {} });
  });

  it("refuses ids and labels of different lengths", () => {
    expect(() => encodeSequences({ sequences: [{ ids: [1], labels: [] }], truncated: 0 })).toThrow("sequence 0 has 1 ids and 0 labels");
  });

  it("refuses damaged blobs by what is wrong, allocating nothing from a stated size", () => {
    const good = encodeSequences(set);
    const header = good.readUInt32LE(8);
    const cases: [string, Buffer, RegExp][] = [
      ["not ours", Buffer.from("hello world, not sequences"), /not a lathe\.sequences\.v1 blob/],
      ["cut off", good.subarray(0, good.length - 3), /sequence 2 says 2 tokens, more than there are/],
      ["trailing bytes", Buffer.concat([good, Buffer.from([0])]), /1 bytes after the last sequence/],
      ["huge header", (() => { const b = Buffer.from(good); b.writeUInt32LE(0xffffffff, 8); return b; })(), /the header says 4294967295 bytes/],
      ["huge length", (() => { const b = Buffer.from(good); b.writeUInt32LE(0xfffffff0, 12 + header); return b; })(), /sequence 0 says 4294967280 tokens/],
    ];
    for (const [, bytes, message] of cases) {
      expect(() => decodeSequences(bytes, "train sequences")).toThrow(ModelFormatError);
      expect(() => decodeSequences(bytes, "train sequences")).toThrow(message);
    }
    const lying = Buffer.from(JSON.stringify({ format: "lathe.sequences.v1", count: 1e9, truncated: 0, meta: {} }));
    const b = Buffer.alloc(12 + lying.length);
    good.copy(b, 0, 0, 8);
    b.writeUInt32LE(lying.length, 8);
    lying.copy(b, 12);
    expect(() => decodeSequences(b)).toThrow(/count 1000000000 does not fit/);
  });
});
