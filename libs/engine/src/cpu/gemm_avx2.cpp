// cpu/gemm_avx2.cpp — the AVX2+FMA GEMM micro-kernel: 6 rows x 16 columns of C in 12 ymm
// accumulators. Compiled with -mavx2 -mfma only (see gemm_kernels.h for why this file includes
// no std headers).
#include <immintrin.h>

#include "cpu/gemm_kernels.h"

namespace lathe {
namespace cpu {
namespace {

constexpr int MR = 6, NR = 16;

inline void micro(int kc, const float* __restrict Ap, long rs, long ks, const float* __restrict Bp, float alpha, float* C, int ldc, int rows, int cols, bool store) {
  __m256 c[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(Ap + i * rs);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
    Ap += ks;
    Bp += NR;
  }
  if (cols == NR) {
    const __m256 va = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      if (i >= rows) break;
      float* ci = C + static_cast<long>(i) * ldc;
      if (store) {  // beta = 0, first K slice: C is not read
        _mm256_storeu_ps(ci, _mm256_mul_ps(va, c[i][0]));
        _mm256_storeu_ps(ci + 8, _mm256_mul_ps(va, c[i][1]));
        continue;
      }
      _mm256_storeu_ps(ci, _mm256_fmadd_ps(va, c[i][0], _mm256_loadu_ps(ci)));
      _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(va, c[i][1], _mm256_loadu_ps(ci + 8)));
    }
    return;
  }
  alignas(32) float t[MR][NR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    _mm256_store_ps(t[i], c[i][0]);
    _mm256_store_ps(t[i] + 8, c[i][1]);
  }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) C[static_cast<long>(i) * ldc + j] = store ? alpha * t[i][j] : C[static_cast<long>(i) * ldc + j] + alpha * t[i][j];
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
      micro(kc, a, r_s, k_s, Bp + static_cast<long>(js) * kc, alpha, C + static_cast<long>(is) * ldc + js, ldc, rows, cols, store);
    }
  }
}

double fma_peak(int64_t iters) {
  __m256 acc[12];
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (int64_t t = 0; t < iters; ++t) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float o[8];
  _mm256_store_ps(o, s);
  volatile float sink = o[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 8 * 2;
}

}  // namespace

const GemmKernel& gemm_kernel_avx2() {
  static const GemmKernel k{"avx2", MR, NR, block, fma_peak, nullptr, nullptr};
  return k;
}

}  // namespace cpu
}  // namespace lathe
