/**
 * TensorBoard event files, written without TensorFlow: a file is a sequence of TFRecords, each
 * `uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)` (little
 * endian), whose data is a serialized `tensorflow.Event`. The first event names the file version
 * (`brain.Event:2`); each later one carries a `Summary` of scalar values (`simple_value`) at a step.
 * Only the few protobuf fields TensorBoard reads for scalars are encoded (tensorflow/core/util/event.proto
 * and framework/summary.proto):
 *
 *   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
 *   Summary { repeated Value value = 1; }
 *   Value   { string tag = 1; float simple_value = 2; }
 */

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord checks its frames with. */
const table = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) c = table[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotated right by 15 bits plus a constant, so a CRC of CRCs stays useful. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** The few protobuf wire encodings an Event needs. */
class Writer {
  private readonly parts: Buffer[] = [];

  private varint(n: bigint): void {
    const bytes: number[] = [];
    let v = BigInt.asUintN(64, n);
    do {
      let b = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) b |= 0x80;
      bytes.push(b);
    } while (v !== 0n);
    this.parts.push(Buffer.from(bytes));
  }

  private key(field: number, wire: 0 | 1 | 2 | 5): void {
    this.varint(BigInt((field << 3) | wire));
  }

  double(field: number, v: number): this {
    this.key(field, 1);
    const b = Buffer.alloc(8);
    b.writeDoubleLE(v);
    this.parts.push(b);
    return this;
  }

  float(field: number, v: number): this {
    this.key(field, 5);
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.parts.push(b);
    return this;
  }

  int64(field: number, v: number): this {
    this.key(field, 0);
    this.varint(BigInt(Math.trunc(v)));
    return this;
  }

  bytes(field: number, v: Uint8Array): this {
    this.key(field, 2);
    this.varint(BigInt(v.length));
    this.parts.push(Buffer.from(v));
    return this;
  }

  string(field: number, v: string): this {
    return this.bytes(field, Buffer.from(v, "utf8"));
  }

  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** One TFRecord frame around `data`. */
export function tfRecord(data: Uint8Array): Buffer {
  const header = Buffer.alloc(12);
  header.writeBigUInt64LE(BigInt(data.length), 0);
  header.writeUInt32LE(maskedCrc32c(header.subarray(0, 8)), 8);
  const footer = Buffer.alloc(4);
  footer.writeUInt32LE(maskedCrc32c(data), 0);
  return Buffer.concat([header, data, footer]);
}

/** The scalars logged at one step, by tag (e.g. `train/loss`); a value that is not finite is left out. */
export interface ScalarStep {
  step: number;
  /** Seconds since the epoch. */
  wallTime: number;
  scalars: Record<string, number | null | undefined>;
}

/** A whole event file: the version event, then one event per step with its finite scalars. */
export function tensorboardEvents(steps: readonly ScalarStep[], startTime: number): Buffer {
  const records = [tfRecord(new Writer().double(1, startTime).string(3, "brain.Event:2").finish())];
  for (const s of steps) {
    const summary = new Writer();
    for (const [tag, value] of Object.entries(s.scalars)) {
      if (value === null || value === undefined || !Number.isFinite(value)) continue;
      summary.bytes(1, new Writer().string(1, tag).float(2, value).finish());
    }
    records.push(tfRecord(new Writer().double(1, s.wallTime).int64(2, s.step).bytes(5, summary.finish()).finish()));
  }
  return Buffer.concat(records);
}

/** The name TensorBoard's writers give a file: `events.out.tfevents.<seconds>.<host>`. */
export function tensorboardFileName(startTime: number, host: string): string {
  return `events.out.tfevents.${Math.floor(startTime)}.${host}`;
}
