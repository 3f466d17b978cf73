// cpu/avx512_transpose.h — a 16 x 16 transpose of 32-bit lanes in zmm registers, for the AVX-512
// translation units only (gemm_avx512.cpp, gemm_avx512bf16.cpp): static inline, so each keeps its
// own copy and nothing compiled for AVX-512 can be shared with baseline code.
#pragma once
#include <immintrin.h>

namespace lathe {
namespace cpu {
namespace {

// out[i] = column i of the 16 x 16 block in r (r[i] row i), by the usual unpack/shuffle network.
static inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  // u[4g + m] holds, in each 128-bit lane L, column 4L + m of rows 4g..4g+3
  for (int m = 0; m < 4; ++m) {
    const __m512 a = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88);       // lanes 0,2 of g0 | lanes 0,2 of g1
    const __m512 b = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd);       // lanes 1,3 of g0 | lanes 1,3 of g1
    const __m512 c = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88);  // lanes 0,2 of g2 | g3
    const __m512 d = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
    r[m] = _mm512_shuffle_f32x4(a, c, 0x88);       // column m: lane 0 of g0, g1, g2, g3
    r[8 + m] = _mm512_shuffle_f32x4(a, c, 0xdd);   // column 8 + m: lane 2
    r[4 + m] = _mm512_shuffle_f32x4(b, d, 0x88);   // column 4 + m: lane 1
    r[12 + m] = _mm512_shuffle_f32x4(b, d, 0xdd);  // column 12 + m: lane 3
  }
}

}  // namespace
}  // namespace cpu
}  // namespace lathe
