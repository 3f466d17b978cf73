// nf4.cpp — see nf4.h. Quantisation runs once (at lathe_model_quantize_nf4); dequantize_rows
// of a Tensor4 is what the matmuls of cpu/nf4_matmul.cpp call tile by tile. Compiled with -ffp-contract=off
// (CMakeLists.txt): map[q]*scale and +offset round separately, as in bitsandbytes.
#include "nf4.h"

#include <algorithm>
#include <cmath>

namespace lathe {
namespace nf4 {

// NormalFloat4: bitsandbytes' published NF4 values (csrc kernels and backends' CODE["nf4"]),
// written with the digits bitsandbytes prints; each rounds to the same f32.
const float kCodebook[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

namespace {

// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for each
// exponent i in 0..6, 2^i fraction values = midpoints of linspace(0.1, 1, 2^i + 1), times
// 10^(i-6), with both signs; plus 0 and 1; sorted. Built here in f64 (linspace as
// start + k*step) and rounded to f32 (bitsandbytes builds it in f32 torch: entries agree to
// within one f32 ulp).
struct DynamicMap {
  float v[256];
  DynamicMap() {
    std::vector<double> d;
    for (int i = 0; i < 7; ++i) {
      const int items = (1 << i) + 1;
      const double step = (1.0 - 0.1) / (items - 1);
      const double scale = std::pow(10.0, i - 6);
      for (int k = 0; k + 1 < items; ++k) {
        const double lo = 0.1 + k * step, hi = k + 1 == items - 1 ? 1.0 : 0.1 + (k + 1) * step;
        const double mean = (lo + hi) / 2.0;
        d.push_back(scale * mean);
        d.push_back(-scale * mean);
      }
    }
    d.push_back(0.0);
    d.push_back(1.0);
    std::sort(d.begin(), d.end());
    for (int i = 0; i < 256; ++i) v[i] = static_cast<float>(d[i]);
  }
};

const DynamicMap kDynamic;  // constant data (like kCodebook), built once at load

inline uint8_t code_at(const uint8_t* codes, int64_t i) {
  const uint8_t byte = codes[i >> 1];
  return (i & 1) ? (byte & 0x0F) : (byte >> 4);
}

}  // namespace

const float* dynamic_map() { return kDynamic.v; }

int nearest(const float* table, int size, float v) {
  // The table is sorted: find the first entry >= v, then compare it with its left neighbour the
  // way argmin(|v - table|) would (f32 differences; the lower index wins ties).
  const int hi = static_cast<int>(std::lower_bound(table, table + size, v) - table);
  if (hi == 0) return 0;
  if (hi == size) return size - 1;
  int best = hi - 1;
  float bd = std::fabs(v - table[best]);
  // entries equal to table[hi] further right cannot be closer; earlier equal entries of table[hi-1] come first
  while (best > 0 && table[best - 1] == table[best]) --best;
  const float dh = std::fabs(v - table[hi]);
  return dh < bd ? hi : best;
}

void quantize(const float* x, int64_t n, uint8_t* codes, float* absmax) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::fill(codes, codes + (n + 1) / 2, uint8_t{0});
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t s = b * kBlock, e = std::min<int64_t>(n, s + kBlock);
    float m = 0.0f;
    for (int64_t i = s; i < e; ++i) m = std::max(m, std::fabs(x[i]));
    absmax[b] = m;
    const float inv = m > 0.0f ? 1.0f / m : 0.0f;
    for (int64_t i = s; i < e; ++i) {
      const float v = std::min(1.0f, std::max(-1.0f, x[i] * inv));
      const uint8_t q = static_cast<uint8_t>(nearest(kCodebook, 16, v));
      codes[i >> 1] |= (i & 1) ? q : static_cast<uint8_t>(q << 4);
    }
  }
  if (n & 1) codes[n >> 1] |= 7;  // the pad element: 0.0
}

void dequantize(const uint8_t* codes, const float* absmax, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = kCodebook[code_at(codes, i)] * absmax[i / kBlock];
}

QuantAbsmax quantize_absmax(const float* absmax, int64_t count) {
  QuantAbsmax qa;
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i) sum += absmax[i];
  qa.offset = count > 0 ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
  const int64_t nc = (count + kAbsmaxBlock - 1) / kAbsmaxBlock;
  qa.q.resize(count);
  qa.scale.resize(nc);
  const float* map = dynamic_map();
  const int zero = nearest(map, 256, 0.0f);
  for (int64_t c = 0; c < nc; ++c) {
    const int64_t s = c * kAbsmaxBlock, e = std::min<int64_t>(count, s + kAbsmaxBlock);
    float m = 0.0f;
    for (int64_t i = s; i < e; ++i) m = std::max(m, std::fabs(absmax[i] - qa.offset));
    qa.scale[c] = m;
    if (m == 0.0f) {
      for (int64_t i = s; i < e; ++i) qa.q[i] = static_cast<uint8_t>(zero);
      continue;
    }
    const float inv = 1.0f / m;
    for (int64_t i = s; i < e; ++i) {
      const float v = std::min(1.0f, std::max(-1.0f, (absmax[i] - qa.offset) * inv));
      qa.q[i] = static_cast<uint8_t>(nearest(map, 256, v));
    }
  }
  return qa;
}

Quantized quantize_tensor(const float* w, int64_t rows, int64_t cols) {
  Quantized t;
  t.rows = rows;
  t.cols = cols;
  const int64_t n = rows * cols, nb = (n + kBlock - 1) / kBlock;
  t.codes.resize((n + 1) / 2);
  std::vector<float> absmax(nb);
  quantize(w, n, t.codes.data(), absmax.data());
  t.absmax = quantize_absmax(absmax.data(), nb);
  return t;
}

Tensor4 to_backend(const Backend& be, const Quantized& q) {
  Tensor4 t;
  t.rows = q.rows;
  t.cols = q.cols;
  t.codes.assign(be, q.codes.data(), q.codes.size());
  t.absmax_q.assign(be, q.absmax.q.data(), q.absmax.q.size());
  t.absmax_scale.assign(be, q.absmax.scale.data(), q.absmax.scale.size());
  t.offset = q.absmax.offset;
  return t;
}

namespace {

// Both dequantize_rows: absmax' = map[q] * scale + offset, as QuantAbsmax::get.
void dequantize_range(const uint8_t* codes, const uint8_t* absmax_q, const float* absmax_scale, float offset, int64_t cols, int64_t r0,
                      int64_t r1, float* out) {
  const int64_t s = r0 * cols, e = r1 * cols;
  const float* map = dynamic_map();
  int64_t i = s;
  while (i < e) {
    const int64_t b = i / kBlock, be = std::min(e, (b + 1) * kBlock);
    const float a = map[absmax_q[b]] * absmax_scale[b / kAbsmaxBlock] + offset;
    for (; i < be; ++i) out[i - s] = kCodebook[code_at(codes, i)] * a;
  }
}

}  // namespace

void dequantize_rows(const Quantized& t, int64_t r0, int64_t r1, float* out) {
  dequantize_range(t.codes.data(), t.absmax.q.data(), t.absmax.scale.data(), t.absmax.offset, t.cols, r0, r1, out);
}

void dequantize_rows(const Tensor4& t, int64_t r0, int64_t r1, float* out) {
  dequantize_range(t.codes.data(), t.absmax_q.data(), t.absmax_scale.data(), t.offset, t.cols, r0, r1, out);
}

}  // namespace nf4
}  // namespace lathe
