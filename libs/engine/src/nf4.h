// nf4.h — QLoRA's 4-bit NormalFloat (NF4) storage of a frozen weight, with double quantisation.
// The matmuls that dequantise it on the fly are backend ops (CPU: cpu/nf4_matmul.h).
// Quantisation runs on the host (Quantized); the model then keeps the arrays in memory of its
// backend (Tensor4), where the matmuls read them.
//
// Layout (bitsandbytes' quantize_4bit with quant_type="nf4", blocksize=64,
// compress_statistics=True), over the row-major flattened weight of n elements:
// - blocks of 64 consecutive elements (the last may be partial); absmax_b = max |w| in block b;
// - code(w) = the index of the nearest kCodebook entry to clamp(w * (1/absmax_b), -1, 1)
//   (ties: the lower index; an all-zero block codes to index 7, the value 0.0);
// - two codes per byte, bitsandbytes' nibble order: element 2i in the HIGH nibble, element 2i+1
//   in the low nibble (packed = q[0::2] << 4 | q[1::2]); an odd n pads one 0.0 (code 7);
// - double quantisation of the absmax values: offset = mean(absmax) (accumulated in f64, rounded
//   to f32), then absmax - offset in blocks of 256 with one f32 scale s_c = max |absmax - offset|
//   per block and one 8-bit code per absmax: the index of the nearest entry of bitsandbytes'
//   signed dynamic map (create_dynamic_map(signed=True): 8-bit dynamic exponent/fraction values
//   in [-1, 1], 256 sorted entries including 0 and 1) to (absmax - offset) * (1/s_c);
//   reconstruction absmax' = map[q] * s_c + offset. The map's widest gap is 0.9/64 (at
//   magnitudes 0.1..1), so |absmax' - absmax| <= s_c * 0.9/128 (+ f32 rounding).
// - dequantised w' = kCodebook[code] * absmax'.
// Memory: n/2 bytes of codes + 1 byte per 64 elements + 4 bytes per 64*256 elements
// (+ the f32 offset): about 0.5159 bytes per parameter.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"

namespace lathe {

namespace nf4 {

constexpr int kBlock = 64;         // elements per NF4 block (one absmax)
constexpr int kAbsmaxBlock = 256;  // absmax values per 8-bit double-quantisation block

// The 16 NF4 values, from -1 to 1, as bitsandbytes publishes them (index 7 is 0.0).
extern const float kCodebook[16];

// bitsandbytes' signed 8-bit dynamic map (256 entries, sorted, from -1 to 1).
const float* dynamic_map();

// Nearest entry of a sorted table (first of equals), searching |v - table[i]| in f32.
int nearest(const float* table, int size, float v);

// Single-level NF4: codes [(n+1)/2] bytes, absmax [ceil(n/64)].
void quantize(const float* x, int64_t n, uint8_t* codes, float* absmax);
void dequantize(const uint8_t* codes, const float* absmax, int64_t n, float* out);

// 8-bit double quantisation of `count` absmax values.
struct QuantAbsmax {
  std::vector<uint8_t> q;      // [count], index into dynamic_map()
  std::vector<float> scale;    // [ceil(count/256)]
  float offset = 0.0f;
  float get(int64_t b) const { return dynamic_map()[q[b]] * scale[b / kAbsmaxBlock] + offset; }
};
QuantAbsmax quantize_absmax(const float* absmax, int64_t count);

// A weight [rows, cols] quantised on the host: NF4 codes with double-quantised absmax.
struct Quantized {
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;  // [(rows*cols+1)/2]
  QuantAbsmax absmax;
};
Quantized quantize_tensor(const float* w, int64_t rows, int64_t cols);
// Rows [r0, r1) of the weight into out ([r1-r0, cols]), in f32.
void dequantize_rows(const Quantized& t, int64_t r0, int64_t r1, float* out);

// The same weight in memory of a backend, as the nf4 matmul ops (backend.h) take it: the arrays
// of Quantized, uploaded once. Owns them (lathe::Buffer); moved, never copied.
struct Tensor4 {
  int64_t rows = 0, cols = 0;
  Buffer<uint8_t> codes;         // [(rows*cols+1)/2], two codes per byte, element 2i in the high nibble
  Buffer<uint8_t> absmax_q;      // [ceil(rows*cols/64)], indices into dynamic_map()
  Buffer<float> absmax_scale;    // [ceil(absmax_q.size()/256)]
  float offset = 0.0f;           // absmax' = dynamic_map()[absmax_q[b]] * absmax_scale[b/256] + offset
  // Elements per dequantised tile (whole rows; at least one row). Tests lower it.
  int64_t tile_elems = int64_t{1} << 16;
  // Products round the dequantised tile (and the activation or gradient) to bf16 and sum in f32,
  // as a bf16 base weight's do (lathe_model_convert_bf16 on an NF4 linear). The CUDA backend's
  // tiles are always bf16.
  bool bf16_tiles = false;
  uint64_t bytes() const { return codes.bytes() + absmax_q.bytes() + absmax_scale.bytes() + sizeof(float); }
};
Tensor4 to_backend(const Backend& be, const Quantized& q);
// Rows [r0, r1) of the weight into out ([r1-r0, cols]), in f32, reading the arrays in place: for
// backends with host_memory only (the CPU backend's matmuls call it tile by tile).
void dequantize_rows(const Tensor4& t, int64_t r0, int64_t r1, float* out);

}  // namespace nf4
}  // namespace lathe
