// cpu/gemm.cpp — see gemm.h. Blocking: C is cut into MC x NC tiles, one task per tile; within a
// tile, K is walked in KC slices; A and B slices are packed into MR-row / NR-column slivers
// (zero-padded at the edges) in the thread's scratch, then a 6x16 micro-kernel accumulates in
// registers.
#include "cpu/gemm.h"

#include <algorithm>
#include <cstring>

#include "threads.h"

namespace lathe {
namespace {

constexpr int MR = 6, NR = 16;
constexpr int MC = 96, NC = 192, KC = 256;

typedef float v8 __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

// out[MR*NR] = sum_k Ap[k*MR + i] * Bp[k*NR + j]
inline void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict out) {
  v8 c00 = {}, c01 = {}, c10 = {}, c11 = {}, c20 = {}, c21 = {}, c30 = {}, c31 = {}, c40 = {}, c41 = {}, c50 = {}, c51 = {};
  for (int k = 0; k < kc; ++k) {
    const v8 b0 = load8(Bp), b1 = load8(Bp + 8);
    v8 a;
    a = v8{} + Ap[0]; c00 += a * b0; c01 += a * b1;
    a = v8{} + Ap[1]; c10 += a * b0; c11 += a * b1;
    a = v8{} + Ap[2]; c20 += a * b0; c21 += a * b1;
    a = v8{} + Ap[3]; c30 += a * b0; c31 += a * b1;
    a = v8{} + Ap[4]; c40 += a * b0; c41 += a * b1;
    a = v8{} + Ap[5]; c50 += a * b0; c51 += a * b1;
    Ap += MR;
    Bp += NR;
  }
  store8(out + 0 * NR, c00); store8(out + 0 * NR + 8, c01);
  store8(out + 1 * NR, c10); store8(out + 1 * NR + 8, c11);
  store8(out + 2 * NR, c20); store8(out + 2 * NR + 8, c21);
  store8(out + 3 * NR, c30); store8(out + 3 * NR + 8, c31);
  store8(out + 4 * NR, c40); store8(out + 4 * NR + 8, c41);
  store8(out + 5 * NR, c50); store8(out + 5 * NR + 8, c51);
}

// Packs op(A)[i0:i0+mc, k0:k0+kc] as MR-row slivers: Ap[s*MR*kc + k*MR + r].
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

}  // namespace

void sgemm(ThreadPool& pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
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
    float* Ap = pool.scratch(thread, static_cast<size_t>(mc_pad + nc_pad) * KC + MR * NR);
    float* Bp = Ap + static_cast<size_t>(mc_pad) * KC;
    float* tmp = Bp + static_cast<size_t>(nc_pad) * KC;
    for (int k0 = 0; k0 < K; k0 += KC) {
      const int kc = std::min(KC, K - k0);
      pack_a(trans_a, A, lda, i0, k0, mc, kc, Ap);
      pack_b(trans_b, B, ldb, k0, j0, kc, nc, Bp);
      for (int js = 0; js < nc; js += NR) {
        const int cols = std::min(NR, nc - js);
        for (int is = 0; is < mc; is += MR) {
          const int rows = std::min(MR, mc - is);
          micro_kernel(kc, Ap + static_cast<size_t>(is) * kc, Bp + static_cast<size_t>(js) * kc, tmp);
          for (int r = 0; r < rows; ++r) {
            float* c = C + static_cast<size_t>(i0 + is + r) * ldc + j0 + js;
            const float* t = tmp + r * NR;
            for (int j = 0; j < cols; ++j) c[j] += alpha * t[j];
          }
        }
      }
    }
  });
}

}  // namespace lathe
