// cpu/gemm_bf16.cpp — see gemm_bf16.h. The AVX512_BF16 path tiles C as sgemm does (gemm_tiles: a task
// is an NC column panel times a group of MC-row tiles; each K slice of the panel packed once), packing
// both operands as bf16 pairs for gemm_avx512bf16.cpp's kernel.
#include "cpu/gemm_bf16.h"

#include <algorithm>

#include "cpu/gemm.h"
#include "threads.h"

namespace lathe {
namespace cpu {
// gemm_avx512bf16.cpp
void bf16_pack_a(const float* A, int lda, int mc, int kc, uint32_t* Ap);
void bf16_pack_b(bool trans, const uint16_t* W, int ldw, int k0, int j0, int kc, int nc, uint32_t* Bp);
void bf16_block(int kp, int mc, int nc, const uint32_t* Ap, const uint32_t* Bp, float alpha, float* C, int ldc, bool store);
}  // namespace cpu

namespace {

constexpr int MR = 12, NR = 32, MC = 96, NC = 384, KC = 512;  // slices even: pairs never straddle slices

bool has_avx512bf16() {
#if defined(__x86_64__) && defined(LATHE_HAVE_AVX512BF16)
  static const bool yes = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  return yes;
#else
  return false;
#endif
}

}  // namespace

const char* bf16_gemm_path() { return has_avx512bf16() ? "avx512bf16" : "f32"; }

void sgemm_bf16(ThreadPool& pool, bool trans_w, int M, int N, int K, float alpha, const float* A, int lda, const uint16_t* W,
                int ldw, float beta, float* C, int ldc, std::vector<float>& work) {
  if (M <= 0 || N <= 0) return;
  if (!has_avx512bf16()) {
    // Widen W and bf16(A) to f32 exactly; the f32 GEMM then forms the same products.
    const size_t wn = static_cast<size_t>(trans_w ? N : K) * ldw, an = static_cast<size_t>(M) * K;
    work.resize(wn + an);
    float* wf = work.data();
    float* af = wf + wn;
    for (size_t i = 0; i < wn; ++i) wf[i] = bf16_to_f32(W[i]);
    for (int i = 0; i < M; ++i)
      for (int k = 0; k < K; ++k) af[static_cast<size_t>(i) * K + k] = bf16_to_f32(f32_to_bf16(A[static_cast<size_t>(i) * lda + k]));
    sgemm(pool, false, trans_w, M, N, K, alpha, af, K, wf, ldw, beta, C, ldc);
    return;
  }
  const GemmTiles t = gemm_tiles(M, N, K, pool.size(), MC, NC, NR);
  // K in equal even slices of at most KC (576 as 2 x 288, not 512 + 64)
  const int slices = (K + KC - 1) / KC, kcs = ((K + slices - 1) / slices + 1) / 2 * 2;
  // bf16(A) is packed once, every MC-row tile of every KC slice in its own place of `work`, so that
  // the column panels share it (packing it per panel converted A N / NC times over).
  const size_t tile_words = static_cast<size_t>(MC) * (kcs / 2);
  work.resize(static_cast<size_t>(t.tiles_m) * slices * tile_words);  // 32-bit words in f32 storage, never read as float
  uint32_t* packed_a = reinterpret_cast<uint32_t*>(work.data());
  if (K > 0 && alpha != 0.0f)
    pool.run(static_cast<int64_t>(t.tiles_m) * slices, [&](int64_t task, int) {
      const int ti = static_cast<int>(task / slices), ks = static_cast<int>(task % slices);
      const int i = ti * MC, k0 = ks * kcs;
      cpu::bf16_pack_a(A + static_cast<size_t>(i) * lda + k0, lda, std::min(MC, M - i), std::min(kcs, K - k0), packed_a + task * tile_words);
    });
  pool.run(t.tasks(), [&](int64_t task, int thread) {
    const int i0 = static_cast<int>(task / t.tiles_n) * t.group * MC, j0 = static_cast<int>(task % t.tiles_n) * t.nc_max;
    const int mg = std::min(t.group * MC, M - i0), nc = std::min(t.nc_max, N - j0);
    const bool store = gemm_prepare_c(beta, alpha, K, C, ldc, i0, mg, j0, nc);
    if (K <= 0 || alpha == 0.0f) return;
    const int nc_pad = (nc + NR - 1) / NR * NR;
    // 32-bit words of bf16 pairs, in the thread's float scratch (same size, never read as float)
    uint32_t* Bp = reinterpret_cast<uint32_t*>(pool.scratch(thread, static_cast<size_t>(nc_pad) * (kcs / 2)));
    for (int ks = 0; ks < slices; ++ks) {
      const int k0 = ks * kcs, kc = std::min(kcs, K - k0), kp = (kc + 1) / 2;
      cpu::bf16_pack_b(trans_w, W, ldw, k0, j0, kc, nc, Bp);
      for (int i = i0; i < i0 + mg; i += MC) {
        const int mc = std::min(MC, i0 + mg - i);
        cpu::bf16_block(kp, mc, nc, packed_a + (static_cast<size_t>(i / MC) * slices + ks) * tile_words, Bp, alpha,
                        C + static_cast<size_t>(i) * ldc + j0, ldc, store && ks == 0);
      }
    }
  });
}

}  // namespace lathe
