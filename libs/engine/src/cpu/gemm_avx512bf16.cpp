// cpu/gemm_avx512bf16.cpp — the AVX512_BF16 micro-kernel of gemm_bf16.h: 12 rows x 32 columns of C
// in 24 zmm accumulators; each vdpbf16ps adds, per lane, the products of one pair of k
// (a(i,2p), a(i,2p+1)) . (b(2p,j), b(2p+1,j)) in f32. A is packed as bf16 pairs [kp][12] (32-bit
// words, rounded from f32 by vcvtne2ps2bf16), B as [kp][32] words. Compiled with -mavx512f
// -mavx512bw -mavx512vl -mavx512bf16 only; no std headers (see gemm_kernels.h).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

#include "cpu/avx512_transpose.h"

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
// 32 columns of 12 rows at a time: converted to 16 pair words per row, then transposed in registers.
void bf16_pack_a(const float* A, int lda, int mc, int kc, uint32_t* Ap) {
  const int kp = (kc + 1) / 2;
  for (int s = 0; s < mc; s += MR) {
    const int rows = mc - s < MR ? mc - s : MR;
    uint32_t* dst = Ap + static_cast<long>(s) * kp;
    int p = 0;
    for (; 2 * p + 32 <= kc; p += 16) {
      __m512 r[16];
      for (int c = 0; c < 16; ++c) {
        if (c < rows) {
          const float* src = A + static_cast<long>(s + c) * lda + 2 * p;
          const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + 16), _mm512_loadu_ps(src));
          r[c] = reinterpret_cast<const __m512&>(h);
        } else {
          r[c] = _mm512_setzero_ps();
        }
      }
      transpose16(r);
      for (int l = 0; l < 16; ++l) _mm512_mask_storeu_epi32(dst + (p + l) * MR, 0x0FFF, _mm512_castps_si512(r[l]));
    }
    for (; p < kp; ++p)
      for (int r = 0; r < MR; ++r) {
        const float* src = A + static_cast<long>(s + r) * lda;
        dst[p * MR + r] = r < rows ? pair_bits(src[2 * p], 2 * p + 1 < kc ? src[2 * p + 1] : 0.0f) : 0;
      }
  }
}

// Bp[s*NR*kp + p*NR + c] = (W[j0+s+c][k0+2p], W[j0+s+c][k0+2p+1]) for W stored [N, K] (trans)
// or (W[k0+2p][j0+s+c], W[k0+2p+1][j0+s+c]) for W stored [K, N]; zero past nc / kc.
// Transposed: each row's pairs are already 32-bit words, transposed 16 x 16 in registers.
// Not transposed: rows k and k+1 interleaved by one 16-bit permute per 16 columns.
void bf16_pack_b(bool trans, const uint16_t* W, int ldw, int k0, int j0, int kc, int nc, uint32_t* Bp) {
  const int kp = (kc + 1) / 2, kfull = kc / 2;  // pairs; pairs with both halves in range
  if (trans && ldw % 2 == 0 && k0 % 2 == 0) {
    const uint32_t* W32 = reinterpret_cast<const uint32_t*>(W);
    const long ld32 = ldw / 2;
    for (int s = 0; s < nc; s += NR) {
      uint32_t* dst = Bp + static_cast<long>(s) * kp;
      for (int half = 0; half < 2; ++half) {
        const int c0 = s + 16 * half;
        for (int pb = 0; pb < kfull; pb += 16) {
          const int pn = kfull - pb < 16 ? kfull - pb : 16;
          const __mmask16 km = pn == 16 ? 0xFFFF : static_cast<__mmask16>((1u << pn) - 1);
          __m512 r[16];
          for (int c = 0; c < 16; ++c)
            r[c] = c0 + c < nc ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(km, W32 + (j0 + c0 + c) * ld32 + k0 / 2 + pb)) : _mm512_setzero_ps();
          transpose16(r);
          for (int l = 0; l < pn; ++l) _mm512_storeu_ps(reinterpret_cast<float*>(dst + static_cast<long>(pb + l) * NR + 16 * half), r[l]);
        }
      }
      if (kfull < kp)  // odd kc: the last pair's high half is zero
        for (int c = 0; c < NR; ++c)
          dst[kfull * NR + c] = s + c < nc ? W[static_cast<long>(j0 + s + c) * ldw + k0 + kc - 1] : 0;
    }
    return;
  }
  if (!trans) {
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24, 55, 23, 54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    for (int s = 0; s < nc; s += NR) {
      uint32_t* dst = Bp + static_cast<long>(s) * kp;
      const int cols = nc - s < NR ? nc - s : NR;
      const __mmask32 cm = cols == 32 ? 0xFFFFFFFFu : static_cast<__mmask32>((1u << cols) - 1);
      for (int p = 0; p < kp; ++p) {
        const long k = k0 + 2 * p;
        const __m512i a = _mm512_maskz_loadu_epi16(cm, W + k * ldw + j0 + s);
        const __m512i b = 2 * p + 1 < kc ? _mm512_maskz_loadu_epi16(cm, W + (k + 1) * ldw + j0 + s) : _mm512_setzero_si512();
        _mm512_storeu_si512(dst + p * NR, _mm512_permutex2var_epi16(a, lo, b));
        _mm512_storeu_si512(dst + p * NR + 16, _mm512_permutex2var_epi16(a, hi, b));
      }
    }
    return;
  }
  for (int s = 0; s < nc; s += NR) {  // transposed with an odd leading dimension: word by word
    uint32_t* dst = Bp + static_cast<long>(s) * kp;
    for (int p = 0; p < kp; ++p)
      for (int c = 0; c < NR; ++c) {
        uint32_t w = 0;
        if (s + c < nc) {
          const long j = j0 + s + c;
          w = W[j * ldw + k0 + 2 * p] | (2 * p + 1 < kc ? static_cast<uint32_t>(W[j * ldw + k0 + 2 * p + 1]) << 16 : 0u);
        }
        dst[p * NR + c] = w;
      }
  }
}

// C[0:mc, 0:nc] += alpha * sum over kp pairs of Ap . Bp (packed as above); store: C = alpha * ..., C not read
void bf16_block(int kp, int mc, int nc, const uint32_t* Ap, const uint32_t* Bp, float alpha, float* C, int ldc, bool store) {
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
        if (store) {
          _mm512_mask_storeu_ps(ci, m0, _mm512_mul_ps(va, c[i][0]));
          _mm512_mask_storeu_ps(ci + 16, m1, _mm512_mul_ps(va, c[i][1]));
          continue;
        }
        _mm512_mask_storeu_ps(ci, m0, _mm512_fmadd_ps(va, c[i][0], _mm512_maskz_loadu_ps(m0, ci)));
        _mm512_mask_storeu_ps(ci + 16, m1, _mm512_fmadd_ps(va, c[i][1], _mm512_maskz_loadu_ps(m1, ci + 16)));
      }
    }
  }
}

}  // namespace cpu
}  // namespace lathe
