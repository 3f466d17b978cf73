/**
 * ggml's Q8_0 block format: each run of 32 consecutive values along a row is one 34-byte block,
 * an f16 scale d = max|x| / 127 followed by 32 int8 quants q = round(x / d), so x ≈ d·q. A row's
 * length must be a multiple of 32: blocks never span rows.
 */
import { decodeToF32, f32BitsToF16 } from "./safetensors.js";

/** Values per Q8_0 block. */
export const Q8_0_BLOCK = 32;
/** Bytes per Q8_0 block: the f16 scale and 32 int8 quants. */
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

const scratchF32 = new Float32Array(1);
const scratchBits = new Uint32Array(scratchF32.buffer);

/**
 * Quantizes f32 values to Q8_0 as llama.cpp's reference quantizer does, so the bytes match the
 * ones its tools write: per block, amax = max|x|, d = amax/127 in f32, the inverse 1/d in f32 (0
 * for an all-zero block), each quant x·(1/d) rounded to nearest with halves away from zero (C's
 * roundf); d itself is stored rounded to f16, ties to even.
 * @throws RangeError when the count is not a multiple of 32 or a value is not finite.
 */
export function quantizeQ8_0(data: Float32Array): Uint8Array {
  if (data.length % Q8_0_BLOCK !== 0) throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${data.length}`);
  const blocks = data.length / Q8_0_BLOCK;
  const out = new Uint8Array(blocks * Q8_0_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const from = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(data[from + j]!));
    if (!Number.isFinite(amax)) throw new RangeError(`Q8_0: the block of values ${from}..${from + Q8_0_BLOCK - 1} holds a NaN or an infinity`);
    const d = Math.fround(amax / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    scratchF32[0] = d;
    const at = b * Q8_0_BLOCK_BYTES;
    view.setUint16(at, f32BitsToF16(scratchBits[0]!), true);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const v = Math.fround(data[from + j]! * id);
      // Math.round sends halves up; on |v| that is away from zero, as roundf does.
      view.setInt8(at + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

/** Q8_0 blocks back to f32: d (widened from f16) times each quant, as ggml dequantizes them. */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % Q8_0_BLOCK_BYTES !== 0) throw new RangeError(`Q8_0 data is whole ${Q8_0_BLOCK_BYTES}-byte blocks, got ${bytes.byteLength} bytes`);
  const blocks = bytes.byteLength / Q8_0_BLOCK_BYTES;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(blocks * Q8_0_BLOCK);
  for (let b = 0; b < blocks; b++) {
    const at = b * Q8_0_BLOCK_BYTES;
    const d = decodeToF32(bytes.slice(at, at + 2), "F16")[0]!;
    for (let j = 0; j < Q8_0_BLOCK; j++) out[b * Q8_0_BLOCK + j] = d * view.getInt8(at + 2 + j);
  }
  return out;
}
