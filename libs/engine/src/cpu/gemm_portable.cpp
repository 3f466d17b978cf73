// cpu/gemm_portable.cpp — the portable GEMM micro-kernel (6 rows x 16 columns with GCC/Clang
// vector extensions; the compiler lowers them to whatever the baseline ISA has, SSE2 on x86-64).
// Compiled without ISA flags; see gemm_kernels.h.
#include "cpu/gemm_kernels.h"

namespace lathe {
namespace cpu {
namespace {

constexpr int MR = 6, NR = 16;
typedef float v8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline v8 load8(const float* p) {
  v8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

inline void micro(int kc, const float* __restrict Ap, long rs, long ks, const float* __restrict Bp, float alpha, float* C, int ldc, int rows, int cols, bool store) {
  v8 c[MR][2];
  for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = v8{};
  for (int k = 0; k < kc; ++k) {
    const v8 b0 = load8(Bp), b1 = load8(Bp + 8);
    for (int i = 0; i < MR; ++i) {
      const v8 a = v8{} + Ap[i * rs];
      c[i][0] += a * b0;
      c[i][1] += a * b1;
    }
    Ap += ks;
    Bp += NR;
  }
  float t[MR][NR];
  for (int i = 0; i < MR; ++i) {
    __builtin_memcpy(t[i], &c[i][0], sizeof(v8));
    __builtin_memcpy(t[i] + 8, &c[i][1], sizeof(v8));
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
  v8 acc[12];
  const v8 x = v8{} + 0.999999f, y = v8{} + 1e-7f;
  for (int i = 0; i < 12; ++i) acc[i] = v8{} + static_cast<float>(i);
  for (int64_t t = 0; t < iters; ++t)
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * x + y;
  v8 s = acc[0];
  for (int i = 1; i < 12; ++i) s += acc[i];
  volatile float sink = s[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 8 * 2;
}

}  // namespace

const GemmKernel& gemm_kernel_portable() {
  static const GemmKernel k{"portable", MR, NR, block, fma_peak, nullptr, nullptr};
  return k;
}

}  // namespace cpu
}  // namespace lathe
