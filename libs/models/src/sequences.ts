import { ModelFormatError } from "./errors.js";
import { LIMITS } from "./limits.js";
import type { LabeledSequence } from "./packing.js";

/**
 * Tokenized, masked training sequences as one blob: what a fine-tuning job is pinned to when it
 * is created, so the worker and the engine train on exactly the sequences that were estimated,
 * without parsing or tokenizing the rows again.
 *
 * Layout (little-endian): the 8 bytes `LSEQ\0\0\0\1`, a u32 header length, the header (UTF-8
 * JSON: `{format, count, truncated, meta}`), then per sequence a u32 length n, n i32 ids and n
 * i32 labels (-100 where not trained).
 */
export interface SequenceSet {
  sequences: LabeledSequence[];
  /** How many of them were cut to max_seq_length. */
  truncated: number;
}

/** What the sequences were made with, kept beside them (the chat template, max_seq_length, …). */
export type SequenceMeta = Record<string, string | number | boolean>;

const MAGIC = Buffer.from([0x4c, 0x53, 0x45, 0x51, 0, 0, 0, 1]);
const FORMAT = "lathe.sequences.v1";
/** The longest header a reader accepts: the JSON of a few settings. */
const MAX_HEADER = 64 * 1024;

export function encodeSequences(set: SequenceSet, meta: SequenceMeta = {}): Buffer {
  const header = Buffer.from(JSON.stringify({ format: FORMAT, count: set.sequences.length, truncated: set.truncated, meta }), "utf8");
  let size = MAGIC.length + 4 + header.length;
  for (const [i, s] of set.sequences.entries()) {
    if (s.labels.length !== s.ids.length) throw new RangeError(`sequence ${i} has ${s.ids.length} ids and ${s.labels.length} labels`);
    size += 4 + 8 * s.ids.length;
  }
  const out = Buffer.alloc(size);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(header.length, MAGIC.length);
  header.copy(out, MAGIC.length + 4);
  let at = MAGIC.length + 4 + header.length;
  for (const s of set.sequences) {
    out.writeUInt32LE(s.ids.length, at);
    at += 4;
    for (const id of s.ids) at = out.writeInt32LE(id, at);
    for (const l of s.labels) at = out.writeInt32LE(l, at);
  }
  return out;
}

/**
 * Reads what `encodeSequences` wrote. Every length is checked against the bytes there before
 * anything is allocated from it.
 * @throws ModelFormatError saying what is wrong and where.
 */
export function decodeSequences(bytes: Uint8Array, what = "sequences"): SequenceSet & { meta: SequenceMeta } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fail = (m: string): never => {
    throw new ModelFormatError(what, m);
  };
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) fail(`not a ${FORMAT} blob`);
  const headerLength = buf.readUInt32LE(MAGIC.length);
  if (headerLength > MAX_HEADER || MAGIC.length + 4 + headerLength > buf.length) fail(`the header says ${headerLength} bytes, more than there are`);
  let header: { format?: unknown; count?: unknown; truncated?: unknown; meta?: unknown };
  try {
    header = JSON.parse(buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + headerLength).toString("utf8")) as typeof header;
  } catch {
    return fail("the header is not JSON");
  }
  const { count, truncated, meta } = header;
  if (header.format !== FORMAT) fail(`format ${JSON.stringify(header.format)}, expected ${FORMAT}`);
  let at = MAGIC.length + 4 + headerLength;
  // Each sequence takes at least its 4-byte length, so the count is bounded by the bytes.
  if (typeof count !== "number" || !Number.isSafeInteger(count) || count < 0 || count > (buf.length - at) / 4) fail(`count ${String(count)} does not fit the ${buf.length} bytes`);
  if (typeof truncated !== "number" || !Number.isSafeInteger(truncated) || truncated < 0 || truncated > (count as number)) fail(`truncated ${String(truncated)} is not a count of at most ${String(count)}`);
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) fail("meta is not an object");
  const sequences: LabeledSequence[] = [];
  for (let i = 0; i < (count as number); i++) {
    if (at + 4 > buf.length) fail(`sequence ${i} is cut off`);
    const n = buf.readUInt32LE(at);
    at += 4;
    if (n > LIMITS.sequenceTokens || at + 8 * n > buf.length) fail(`sequence ${i} says ${n} tokens, more than there are`);
    const ids = new Array<number>(n);
    const labels = new Array<number>(n);
    for (let j = 0; j < n; j++) ids[j] = buf.readInt32LE(at + 4 * j);
    at += 4 * n;
    for (let j = 0; j < n; j++) labels[j] = buf.readInt32LE(at + 4 * j);
    at += 4 * n;
    sequences.push({ ids, labels });
  }
  if (at !== buf.length) fail(`${buf.length - at} bytes after the last sequence`);
  return { sequences, truncated: truncated as number, meta: meta as SequenceMeta };
}
