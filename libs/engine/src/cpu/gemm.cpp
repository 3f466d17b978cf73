// cpu/gemm.cpp — see gemm.h. Blocking: C is cut into MC x NC tiles, one task per tile; within a
// tile, K is walked in KC slices; A and B slices are packed into MR-row / NR-column slivers
// (zero-padded at the edges) in the thread's scratch, then the micro-kernel of the CPU's ISA
// (gemm_kernels.h, chosen at run time) accumulates each MR x NR block in registers.
#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>

#include "common.h"
#include "cpu/gemm_kernels.h"
#include "threads.h"

namespace lathe {
namespace {

constexpr int MC = 96, NC = 192, KC = 256;  // MC is a multiple of every kernel's MR, NC of every NR

// Packs op(A)[i0:i0+mc, k0:k0+kc] as MR-row slivers: Ap[s*MR*kc + k*MR + r].
template <int MR>
void pack_a(bool trans, const float* A, int lda, int i0, int k0, int mc, int kc, float* Ap) {
  for (int s = 0; s < mc; s += MR) {
    const int rows = std::min(MR, mc - s);
    float* dst = Ap + static_cast<size_t>(s) * kc;
    if (!trans) {
      for (int r = 0; r < MR; ++r) {
        if (r < rows) {
          const float* src = A + static_cast<size_t>(i0 + s + r) * lda + k0;
          for (int k = 0; k < kc; ++k) dst[k * MR + r] = src[k];
        } else {
          for (int k = 0; k < kc; ++k) dst[k * MR + r] = 0.0f;
        }
      }
    } else {  // A stored [K, M]
      for (int k = 0; k < kc; ++k) {
        const float* src = A + static_cast<size_t>(k0 + k) * lda + i0 + s;
        int r = 0;
        for (; r < rows; ++r) dst[k * MR + r] = src[r];
        for (; r < MR; ++r) dst[k * MR + r] = 0.0f;
      }
    }
  }
}

// Packs op(B)[k0:k0+kc, j0:j0+nc] as NR-column slivers: Bp[s*NR*kc + k*NR + c].
template <int NR>
void pack_b(bool trans, const float* B, int ldb, int k0, int j0, int kc, int nc, float* Bp) {
  for (int s = 0; s < nc; s += NR) {
    const int cols = std::min(NR, nc - s);
    float* dst = Bp + static_cast<size_t>(s) * kc;
    if (!trans) {  // B stored [K, N]
      for (int k = 0; k < kc; ++k) {
        const float* src = B + static_cast<size_t>(k0 + k) * ldb + j0 + s;
        int c = 0;
        for (; c < cols; ++c) dst[k * NR + c] = src[c];
        for (; c < NR; ++c) dst[k * NR + c] = 0.0f;
      }
    } else {  // B stored [N, K]
      for (int c = 0; c < NR; ++c) {
        if (c < cols) {
          const float* src = B + static_cast<size_t>(j0 + s + c) * ldb + k0;
          for (int k = 0; k < kc; ++k) dst[k * NR + c] = src[k];
        } else {
          for (int k = 0; k < kc; ++k) dst[k * NR + c] = 0.0f;
        }
      }
    }
  }
}

template <int MR, int NR>
void sgemm_tiles(ThreadPool& pool, const cpu::GemmKernel& kern, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const int tiles_m = (M + MC - 1) / MC, tiles_n = (N + NC - 1) / NC;
  pool.run(static_cast<int64_t>(tiles_m) * tiles_n, [&](int64_t task, int thread) {
    const int i0 = static_cast<int>(task / tiles_n) * MC, j0 = static_cast<int>(task % tiles_n) * NC;
    const int mc = std::min(MC, M - i0), nc = std::min(NC, N - j0);
    // beta first
    for (int i = 0; i < mc; ++i) {
      float* c = C + static_cast<size_t>(i0 + i) * ldc + j0;
      if (beta == 0.0f) std::fill(c, c + nc, 0.0f);
      else if (beta != 1.0f) for (int j = 0; j < nc; ++j) c[j] *= beta;
    }
    if (K <= 0 || alpha == 0.0f) return;
    const int mc_pad = (mc + MR - 1) / MR * MR, nc_pad = (nc + NR - 1) / NR * NR;
    float* Ap = pool.scratch(thread, static_cast<size_t>(mc_pad + nc_pad) * KC);
    float* Bp = Ap + static_cast<size_t>(mc_pad) * KC;
    float* Ct = C + static_cast<size_t>(i0) * ldc + j0;
    for (int k0 = 0; k0 < K; k0 += KC) {
      const int kc = std::min(KC, K - k0);
      pack_a<MR>(trans_a, A, lda, i0, k0, mc, kc, Ap);
      pack_b<NR>(trans_b, B, ldb, k0, j0, kc, nc, Bp);
      kern.block(kc, mc, nc, Ap, Bp, alpha, Ct, ldc);
    }
  });
}

}  // namespace

void sgemm_with(ThreadPool& pool, const cpu::GemmKernel& kern, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (kern.mr == 12 && kern.nr == 32)
    sgemm_tiles<12, 32>(pool, kern, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (kern.mr == 6 && kern.nr == 16)
    sgemm_tiles<6, 16>(pool, kern, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    throw Error(LATHE_ERR_INTERNAL, std::string("GEMM kernel ") + kern.name + " has a register block this file does not pack for");
}

void sgemm(ThreadPool& pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  sgemm_with(pool, cpu::gemm_kernel_best(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace cpu {

const GemmKernel* gemm_kernel_by_name(const char* name) {
  const std::string n = name ? name : "";
  if (n == "best") return &gemm_kernel_best();
  if (n == "portable") return &gemm_kernel_portable();
#if defined(__x86_64__)
  if (n == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &gemm_kernel_avx2() : nullptr;
  if (n == "avx512") return __builtin_cpu_supports("avx512f") ? &gemm_kernel_avx512() : nullptr;
#endif
  return nullptr;
}

const GemmKernel& gemm_kernel_best() {
  // Resolved once per process (a constant of the CPU, not state).
  static const GemmKernel& best = *[] {
#if defined(__x86_64__)
    __builtin_cpu_init();
#endif
    if (const GemmKernel* k = gemm_kernel_by_name("avx512")) return k;
    if (const GemmKernel* k = gemm_kernel_by_name("avx2")) return k;
    return &gemm_kernel_portable();
  }();
  return best;
}

}  // namespace cpu
}  // namespace lathe
