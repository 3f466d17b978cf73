import { describe, expect, it } from "vitest";
import { crc32c, maskedCrc32c, tfRecord } from "./tensorboard.js";

describe("TFRecord framing", () => {
  it("checks with CRC-32C (the standard check value of 123456789) and TFRecord's mask", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283);
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa);
    const c = 0xe3069283;
    expect(maskedCrc32c(Buffer.from("123456789"))).toBe(((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  });

  it("frames data as length, masked CRC of the length, data, masked CRC of the data", () => {
    const data = Buffer.from("event");
    const r = tfRecord(data);
    expect(r.length).toBe(8 + 4 + data.length + 4);
    expect(r.readBigUInt64LE(0)).toBe(5n);
    expect(r.readUInt32LE(8)).toBe(maskedCrc32c(r.subarray(0, 8)));
    expect(r.subarray(12, 17).toString()).toBe("event");
    expect(r.readUInt32LE(17)).toBe(maskedCrc32c(data));
  });
});
