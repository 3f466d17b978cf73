// cpu/gemm_avx512bf16.cpp — the AVX512_BF16 micro-kernel of gemm_bf16.h: 12 rows x 32 columns of C
// in 24 zmm accumulators; each vdpbf16ps adds, per lane, the products of one pair of k
// (a(i,2p), a(i,2p+1)) . (b(2p,j), b(2p+1,j)) in f32. A is packed as bf16 pairs [kp][12] (32-bit
// words, rounded from f32 by vcvtne2ps2bf16), B as [kp][32] words. Compiled with -mavx512f
// -mavx512bf16 only; no std headers (see gemm_kernels.h).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

namespace lathe {
namespace cpu {
namespace {

constexpr int MR = 12, NR = 32;

inline uint32_t pair_bits(float lo, float hi) {
  // one word: bf16(lo) in the low half, bf16(hi) in the high half, rounded as vcvtne2ps2bf16 does
  const __m128bh v = _mm_cvtneps_pbh(_mm_set_ps(0.0f, 0.0f, hi, lo));
  uint32_t w;
  __builtin_memcpy(&w, &v, 4);
  return w;
}

}  // namespace

// Ap[p*MR + r] = (bf16 A[i0+r][k0+2p], bf16 A[i0+r][k0+2p+1]); zero past mc rows / kc columns.
void bf16_pack_a(const float* A, int lda, int mc, int kc, uint32_t* Ap) {
  const int kp = (kc + 1) / 2;
  for (int s = 0; s < mc; s += MR) {
    uint32_t* dst = Ap + static_cast<long>(s) * kp;
    for (int r = 0; r < MR; ++r) {
      if (s + r >= mc) {
        for (int p = 0; p < kp; ++p) dst[p * MR + r] = 0;
        continue;
      }
      const float* src = A + static_cast<long>(s + r) * lda;
      int p = 0;
      for (; 2 * p + 32 <= kc; p += 16) {
        // 32 floats -> 32 bf16 = 16 words, lane l = (k 2l, k 2l+1)
        const __m512 lo = _mm512_loadu_ps(src + 2 * p), hi = _mm512_loadu_ps(src + 2 * p + 16);
        const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
        alignas(64) uint32_t w[16];
        _mm512_store_si512(reinterpret_cast<__m512i*>(w), reinterpret_cast<const __m512i&>(h));
        for (int l = 0; l < 16; ++l) dst[(p + l) * MR + r] = w[l];
      }
      for (; p < kp; ++p) dst[p * MR + r] = pair_bits(src[2 * p], 2 * p + 1 < kc ? src[2 * p + 1] : 0.0f);
    }
  }
}

// Bp[s*NR*kp + p*NR + c] = (W[j0+s+c][k0+2p], W[j0+s+c][k0+2p+1]) for W stored [N, K] (trans)
// or (W[k0+2p][j0+s+c], W[k0+2p+1][j0+s+c]) for W stored [K, N]; zero past nc / kc.
void bf16_pack_b(bool trans, const uint16_t* W, int ldw, int k0, int j0, int kc, int nc, uint32_t* Bp) {
  const int kp = (kc + 1) / 2;
  for (int s = 0; s < nc; s += NR) {
    uint32_t* dst = Bp + static_cast<long>(s) * kp;
    for (int p = 0; p < kp; ++p) {
      const int k = k0 + 2 * p;
      const bool has2 = 2 * p + 1 < kc;
      for (int c = 0; c < NR; ++c) {
        uint32_t w = 0;
        if (s + c < nc) {
          const long j = j0 + s + c;
          const uint16_t lo = trans ? W[j * ldw + k] : W[static_cast<long>(k) * ldw + j];
          const uint16_t hi = has2 ? (trans ? W[j * ldw + k + 1] : W[static_cast<long>(k + 1) * ldw + j]) : 0;
          w = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
        }
        dst[p * NR + c] = w;
      }
    }
  }
}

// C[0:mc, 0:nc] += alpha * sum over kp pairs of Ap . Bp (packed as above)
void bf16_block(int kp, int mc, int nc, const uint32_t* Ap, const uint32_t* Bp, float alpha, float* C, int ldc) {
  for (int is = 0; is < mc; is += MR) {
    const int rows = mc - is < MR ? mc - is : MR;
    for (int js = 0; js < nc; js += NR) {
      const int cols = nc - js < NR ? nc - js : NR;
      const uint32_t* a = Ap + static_cast<long>(is) * kp;
      const uint32_t* b = Bp + static_cast<long>(js) * kp;
      __m512 c[MR][2];
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
      for (int p = 0; p < kp; ++p) {
        const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b)), b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + 16));
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i) {
          const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[i])));
          c[i][0] = _mm512_dpbf16_ps(c[i][0], av, b0);
          c[i][1] = _mm512_dpbf16_ps(c[i][1], av, b1);
        }
        a += MR;
        b += NR;
      }
      const __m512 va = _mm512_set1_ps(alpha);
      const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
      const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : static_cast<__mmask16>((1u << (cols - 16)) - 1);
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        if (i >= rows) break;
        float* ci = C + static_cast<long>(is + i) * ldc + js;
        _mm512_mask_storeu_ps(ci, m0, _mm512_fmadd_ps(va, c[i][0], _mm512_maskz_loadu_ps(m0, ci)));
        _mm512_mask_storeu_ps(ci + 16, m1, _mm512_fmadd_ps(va, c[i][1], _mm512_maskz_loadu_ps(m1, ci + 16)));
      }
    }
  }
}

}  // namespace cpu
}  // namespace lathe
