// cpu/gemm.cpp — see gemm.h. Blocking: C is cut into MC x NC tiles, one task per tile; within a
// tile, K is walked in KC slices; the B slice is packed into NR-column slivers (zero-padded at
// the edge) in the thread's scratch, A is read in place, and the micro-kernel of the CPU's ISA
// (gemm_kernels.h, chosen at run time) accumulates each MR x NR block in registers.
#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>

#include "common.h"
#include "cpu/gemm_kernels.h"
#include "threads.h"

namespace lathe {
namespace {

constexpr int MC = 96, NC = 384, KC = 256;  // MC is a multiple of every kernel's MR

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

// C[i0:i0+mg, j0:j0+nc] (= beta C) += alpha op(A) op(B) for those rows and columns, in the caller's
// thread: each K slice of the B panel is packed once into Bp and run over the rows, MC at a time.
// Bp holds (round_up(nc, NR) + MR) * KC floats.
template <int MR, int NR>
void gemm_panel(const cpu::GemmKernel& kern, bool trans_a, bool trans_b, int i0, int mg, int j0, int nc, int K, float alpha,
                const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc, float* Bp) {
  const bool store = gemm_prepare_c(beta, alpha, K, C, ldc, i0, mg, j0, nc);
  if (K <= 0 || alpha == 0.0f) return;
  float* edge = Bp + static_cast<size_t>((nc + NR - 1) / NR * NR) * KC;
  // a(i, k) = op(A)[i, k]
  const long rs = trans_a ? 1 : lda, ks = trans_a ? lda : 1;
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = std::min(KC, K - k0);
    if (trans_b && kern.pack_bt) kern.pack_bt(B, ldb, k0, j0, kc, nc, Bp);
    else if (!trans_b && kern.pack_bn) kern.pack_bn(B, ldb, k0, j0, kc, nc, Bp);
    else pack_b<NR>(trans_b, B, ldb, k0, j0, kc, nc, Bp);
    for (int i = i0; i < i0 + mg; i += MC) {
      const int mc = std::min(MC, i0 + mg - i);
      kern.block(kc, mc, nc, A + i * rs + k0 * ks, rs, ks, Bp, alpha, C + static_cast<size_t>(i) * ldc + j0, ldc, edge, store && k0 == 0);
    }
  }
}

template <int MR, int NR>
void sgemm_tiles(ThreadPool& pool, const cpu::GemmKernel& kern, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc) {
  const GemmTiles t = gemm_tiles(M, N, K, pool.size(), MC, NC, NR);
  pool.run(t.tasks(), [&](int64_t task, int thread) {
    const int i0 = static_cast<int>(task / t.tiles_n) * t.group * MC, j0 = static_cast<int>(task % t.tiles_n) * t.nc_max;
    const int mg = std::min(t.group * MC, M - i0), nc = std::min(t.nc_max, N - j0);
    float* Bp = pool.scratch(thread, static_cast<size_t>((nc + NR - 1) / NR * NR + MR) * KC);
    gemm_panel<MR, NR>(kern, trans_a, trans_b, i0, mg, j0, nc, K, alpha, A, lda, B, ldb, beta, C, ldc, Bp);
  });
}

template <int MR, int NR>
void sgemm_serial_t(const cpu::GemmKernel& kern, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                    const float* B, int ldb, float beta, float* C, int ldc, float* work) {
  for (int j0 = 0; j0 < N; j0 += NC)
    gemm_panel<MR, NR>(kern, trans_a, trans_b, 0, M, j0, std::min(NC, N - j0), K, alpha, A, lda, B, ldb, beta, C, ldc, work);
}

}  // namespace

GemmTiles gemm_tiles(int M, int N, int K, int threads, int mc, int nc, int nr) {
  GemmTiles t{};
  t.nc_max = nc;
  if (static_cast<int64_t>((M + mc - 1) / mc) * ((N + nc - 1) / nc) < 2 * threads)
    t.nc_max = std::max(nr, ((N + 2 * threads - 1) / (2 * threads) + nr - 1) / nr * nr);
  const bool deep = K >= 8 * M && K >= 8 * N;
  if (deep) t.nc_max = std::max(nr, ((N + threads - 1) / threads + nr - 1) / nr * nr);
  t.tiles_m = (M + mc - 1) / mc;
  t.tiles_n = (N + t.nc_max - 1) / t.nc_max;
  t.group = deep ? t.tiles_m : std::max(1, std::min(t.tiles_m, t.tiles_m * t.tiles_n / (4 * threads)));
  t.groups_m = (t.tiles_m + t.group - 1) / t.group;
  return t;
}

bool gemm_prepare_c(float beta, float alpha, int K, float* C, int ldc, int i0, int mg, int j0, int nc) {
  const bool store = beta == 0.0f && K > 0 && alpha != 0.0f;
  for (int i = 0; i < mg && !store && beta != 1.0f; ++i) {
    float* c = C + static_cast<size_t>(i0 + i) * ldc + j0;
    if (beta == 0.0f) std::fill(c, c + nc, 0.0f);
    else for (int j = 0; j < nc; ++j) c[j] *= beta;
  }
  return store;
}

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

void sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                  float beta, float* C, int ldc, float* work) {
  if (M <= 0 || N <= 0) return;
  const cpu::GemmKernel& kern = cpu::gemm_kernel_best();
  if (kern.mr == 12 && kern.nr == 32)
    sgemm_serial_t<12, 32>(kern, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work);
  else
    sgemm_serial_t<6, 16>(kern, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, work);
}

size_t sgemm_serial_work_floats() { return static_cast<size_t>(NC + 32 + 12) * KC; }

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
