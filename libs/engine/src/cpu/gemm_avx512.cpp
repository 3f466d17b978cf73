// cpu/gemm_avx512.cpp — the AVX-512F GEMM micro-kernel: 12 rows x 32 columns of C in 24 zmm
// accumulators, one broadcast of A and two loads of B per k. Compiled with -mavx512f only (see
// gemm_kernels.h for why this file includes no std headers).
// GCC 12 warns inside its own AVX-512 headers (the unpack intrinsics' undefined pass-through
// operand) once they are inlined here; the values are all defined.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "cpu/avx512_transpose.h"
#include "cpu/gemm_kernels.h"

namespace lathe {
namespace cpu {
namespace {

constexpr int MR = 12, NR = 32;

// R rows (4, 8 or 12) x 16 H columns (H 1 or 2) of C: the narrow forms keep the FMAs of LoRA's
// products (r = 8 or 16 columns, or rows) from running on zero padding. Every element's k-sum is
// the same chain of FMAs in the same order in every form, so the form never changes a bit.
template <int R, int H>
inline void micro(int kc, const float* __restrict Ap, long rs, long ks, const float* __restrict Bp, float alpha, float* C, int ldc, int rows, int cols, bool store) {
  __m512 c[R][H];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) c[i][h] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    __m512 b[H];
#pragma GCC unroll 2
    for (int h = 0; h < H; ++h) b[h] = _mm512_loadu_ps(Bp + 16 * h);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512 a = _mm512_set1_ps(Ap[i * rs]);
#pragma GCC unroll 2
      for (int h = 0; h < H; ++h) c[i][h] = _mm512_fmadd_ps(a, b[h], c[i][h]);
    }
    Ap += ks;
    Bp += NR;
  }
  const __m512 va = _mm512_set1_ps(alpha);
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : static_cast<__mmask16>((1u << (cols - 16)) - 1);
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    if (i >= rows) break;
    float* ci = C + static_cast<long>(i) * ldc;
    if (store) {  // beta = 0, first K slice: C is not read (nor zero-filled before)
      _mm512_mask_storeu_ps(ci, m0, _mm512_mul_ps(va, c[i][0]));
      if (H == 2) _mm512_mask_storeu_ps(ci + 16, m1, _mm512_mul_ps(va, c[i][H - 1]));
      continue;
    }
    _mm512_mask_storeu_ps(ci, m0, _mm512_fmadd_ps(va, c[i][0], _mm512_maskz_loadu_ps(m0, ci)));
    if (H == 2) _mm512_mask_storeu_ps(ci + 16, m1, _mm512_fmadd_ps(va, c[i][H - 1], _mm512_maskz_loadu_ps(m1, ci + 16)));
  }
}

template <int R>
inline void micro_cols(int kc, const float* Ap, long rs, long ks, const float* Bp, float alpha, float* C, int ldc, int rows, int cols, bool store) {
  if (cols <= 16) micro<R, 1>(kc, Ap, rs, ks, Bp, alpha, C, ldc, rows, cols, store);
  else micro<R, 2>(kc, Ap, rs, ks, Bp, alpha, C, ldc, rows, cols, store);
}

void block(int kc, int mc, int nc, const float* A, long rs, long ks, const float* Bp, float alpha, float* C, int ldc, float* edge, bool store) {
  for (int is = 0; is < mc; is += MR) {
    const int rows = mc - is < MR ? mc - is : MR;
    // Full row panels read A in place (broadcasts need no packing); a partial one is copied,
    // zero-padded, so that no row past the matrix is read.
    const float* a = A + is * rs;
    long r_s = rs, k_s = ks;
    if (rows < MR) {
      for (int k = 0; k < kc; ++k)
        for (int r = 0; r < MR; ++r) edge[k * MR + r] = r < rows ? a[r * rs + k * ks] : 0.0f;
      a = edge;
      r_s = 1;
      k_s = MR;
    }
    for (int js = 0; js < nc; js += NR) {
      const int cols = nc - js < NR ? nc - js : NR;
      const float* b = Bp + static_cast<long>(js) * kc;
      float* c = C + static_cast<long>(is) * ldc + js;
      if (rows > 8) micro_cols<12>(kc, a, r_s, k_s, b, alpha, c, ldc, rows, cols, store);
      else if (rows > 4) micro_cols<8>(kc, a, r_s, k_s, b, alpha, c, ldc, rows, cols, store);
      else micro_cols<4>(kc, a, r_s, k_s, b, alpha, c, ldc, rows, cols, store);
    }
  }
}

// Bp[s*NR*kc + k*NR + c] = B[(j0 + s + c) * ldb + k0 + k] (B stored [N, K]), zero past nc.
void pack_bt(const float* B, int ldb, int k0, int j0, int kc, int nc, float* Bp) {
  for (int s = 0; s < nc; s += NR) {
    float* dst = Bp + static_cast<long>(s) * kc;
    for (int half = 0; half < 2; ++half) {
      const int c0 = s + 16 * half;
      for (int kb = 0; kb < kc; kb += 16) {
        const int kn = kc - kb < 16 ? kc - kb : 16;
        const __mmask16 km = kn == 16 ? 0xFFFF : static_cast<__mmask16>((1u << kn) - 1);
        __m512 r[16];
        for (int c = 0; c < 16; ++c)
          r[c] = c0 + c < nc ? _mm512_maskz_loadu_ps(km, B + static_cast<long>(j0 + c0 + c) * ldb + k0 + kb) : _mm512_setzero_ps();
        transpose16(r);
        for (int k = 0; k < kn; ++k) _mm512_storeu_ps(dst + static_cast<long>(kb + k) * NR + 16 * half, r[k]);
      }
    }
  }
}

// Bp[s*NR*kc + k*NR + c] = B[(k0 + k) * ldb + j0 + s + c] (B stored [K, N]), zero past nc: row
// by row of B (one contiguous read of nc floats each, which the prefetcher follows), each sliver's
// part two (masked) 16-float copies.
void pack_bn(const float* B, int ldb, int k0, int j0, int kc, int nc, float* Bp) {
  const int full = nc / NR, rest = nc - full * NR;
  const __mmask16 m0 = rest >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << rest) - 1);
  const __mmask16 m1 = rest <= 16 ? 0 : static_cast<__mmask16>((1u << (rest - 16)) - 1);
  const long sliver = static_cast<long>(NR) * kc;
  for (int k = 0; k < kc; ++k) {
    const float* src = B + static_cast<long>(k0 + k) * ldb + j0;
    float* dst = Bp + static_cast<long>(k) * NR;
    for (int s = 0; s < full; ++s, src += NR, dst += sliver) {
      _mm512_storeu_ps(dst, _mm512_loadu_ps(src));
      _mm512_storeu_ps(dst + 16, _mm512_loadu_ps(src + 16));
    }
    if (rest) {
      _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(m0, src));
      _mm512_storeu_ps(dst + 16, _mm512_maskz_loadu_ps(m1, src + 16));
    }
  }
}

double fma_peak(int64_t iters) {
  __m512 acc[12];
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float o[16];
  _mm512_store_ps(o, s);
  volatile float sink = o[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 16 * 2;
}

}  // namespace

const GemmKernel& gemm_kernel_avx512() {
  static const GemmKernel k{"avx512", MR, NR, block, fma_peak, pack_bt, pack_bn};
  return k;
}

}  // namespace cpu
}  // namespace lathe
