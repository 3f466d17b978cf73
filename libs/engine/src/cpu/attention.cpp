// cpu/attention.cpp — see attention.h. One task per (row, query head); each task writes only its
// own outputs (its out/lse/dq slice, its head's dk/dv scratch), and the group reduction runs
// afterwards in a fixed order, so results are deterministic.
//
// Flash-style on the CPU: a task walks its queries in blocks of QB rows; a block's scores against
// the keys it may see (j < end of the block) are one small GEMM (sgemm_serial, in the task's
// thread), softmaxed row by row with a vectorisable exp, and multiplied into V by another. Only a
// QB x T block of scores exists at a time, never a [T, T] matrix. Backward recomputes each
// block's probabilities from lse and runs dP = dO V^T, dQ = dS K, dK += dS^T Q, dV += P^T dO
// as GEMMs of the same shapes.
#include "cpu/attention.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"
#include "cpu/gemm.h"
#include "cpu/vec.h"
#include "kernels/exp.h"

namespace lathe {
namespace {

constexpr int QB = 64;  // query rows per block

}  // namespace

// Row i of a block's scores s[0:n] (keys j < n): -inf where j > i or the segment differs.
// Forward (lse null): softmax in place, its log-sum-exp returned. Backward: p = exp(s - lse).
LATHE_CLONES float attention_softmax_row(float* s, int n, int i, const int32_t* sg, const float* lse) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int j = i + 1; j < n; ++j) s[j] = ninf;
  if (sg)
    for (int j = 0; j <= i; ++j) s[j] = sg[j] != sg[i] ? ninf : s[j];
  if (lse) {
    const float l = *lse;
    for (int j = 0; j < n; ++j) s[j] = kern::exp_neg(s[j] - l);
    return 0.0f;
  }
  float m = ninf;
  for (int j = 0; j <= i; ++j) m = s[j] > m ? s[j] : m;
  float sum = 0.0f;
  for (int j = 0; j < n; ++j) {
    s[j] = kern::exp_neg(s[j] - m);
    sum += s[j];
  }
  const float inv = 1.0f / sum;
  for (int j = 0; j < n; ++j) s[j] *= inv;
  return m + std::log(sum);
}

// dS = P (dP - D_i) scale over row i's n keys, in place in dp
LATHE_CLONES void attention_ds_row(float* dp, const float* p, int n, float Di, float scale) {
  for (int j = 0; j < n; ++j) dp[j] = p[j] * (dp[j] - Di) * scale;
}

void attention_forward(ThreadPool& pool, float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seg, int B, int T, int nh, int nkv, int d) {
  const int rep = nh / nkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d;
  pool.run(static_cast<int64_t>(B) * nh, [&](int64_t task, int thread) {
    const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh), g = h / rep;
    const int64_t row = static_cast<int64_t>(b) * T;
    const int32_t* sg = seg ? seg + row : nullptr;
    const float* qh = q + row * qs + h * d;
    const float* kh = k + row * ks + g * d;
    const float* vh = v + row * ks + g * d;
    float* oh = out + row * qs + h * d;
    float* lh = lse + (static_cast<int64_t>(b) * nh + h) * T;
    float* s = pool.scratch(thread, static_cast<size_t>(QB) * T + sgemm_serial_work_floats());
    float* work = s + static_cast<size_t>(QB) * T;
    for (int i0 = 0; i0 < T; i0 += QB) {
      const int mb = std::min(QB, T - i0), n = i0 + mb;  // keys 0..n-1
      sgemm_serial(false, true, mb, n, d, scale, qh + i0 * qs, static_cast<int>(qs), kh, static_cast<int>(ks), 0.0f, s, n, work);
      for (int r = 0; r < mb; ++r) lh[i0 + r] = attention_softmax_row(s + static_cast<int64_t>(r) * n, n, i0 + r, sg, nullptr);
      sgemm_serial(false, false, mb, d, n, 1.0f, s, n, vh, static_cast<int>(ks), 0.0f, oh + i0 * qs, static_cast<int>(qs), work);
    }
  });
}

void attention_backward(ThreadPool& pool, float* dq, float* dk, float* dv, float* scratch, const float* dout,
                        const float* out, const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* seg, int B, int T, int nh, int nkv, int d) {
  const int rep = nh / nkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d;
  const int64_t head_block = static_cast<int64_t>(T) * d;
  float* dk_h = scratch;                                            // [B, nh, T, d]
  float* dv_h = scratch + static_cast<int64_t>(B) * nh * head_block;  // [B, nh, T, d]
  pool.run(static_cast<int64_t>(B) * nh, [&](int64_t task, int thread) {
    const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh), g = h / rep;
    const int64_t row = static_cast<int64_t>(b) * T, qo = row * qs + h * d, ko = row * ks + g * d;
    const int32_t* sg = seg ? seg + row : nullptr;
    const float* lh = lse + (static_cast<int64_t>(b) * nh + h) * T;
    float* dkb = dk_h + task * head_block;
    float* dvb = dv_h + task * head_block;
    std::fill(dkb, dkb + head_block, 0.0f);
    std::fill(dvb, dvb + head_block, 0.0f);
    float* p = pool.scratch(thread, 2 * static_cast<size_t>(QB) * T + sgemm_serial_work_floats());
    float* dp = p + static_cast<size_t>(QB) * T;
    float* work = dp + static_cast<size_t>(QB) * T;
    const int iqs = static_cast<int>(qs), iks = static_cast<int>(ks);
    for (int i0 = 0; i0 < T; i0 += QB) {
      const int mb = std::min(QB, T - i0), n = i0 + mb;
      const float* qb = q + qo + i0 * qs;
      const float* dob = dout + qo + i0 * qs;
      sgemm_serial(false, true, mb, n, d, scale, qb, iqs, k + ko, iks, 0.0f, p, n, work);           // S
      sgemm_serial(false, true, mb, n, d, 1.0f, dob, iqs, v + ko, iks, 0.0f, dp, n, work);          // dP = dO V^T
      for (int r = 0; r < mb; ++r) {
        const int i = i0 + r;
        attention_softmax_row(p + static_cast<int64_t>(r) * n, n, i, sg, lh + i);
        const float Di = dot(dout + qo + i * qs, out + qo + i * qs, d);
        attention_ds_row(dp + static_cast<int64_t>(r) * n, p + static_cast<int64_t>(r) * n, n, Di, scale);
      }
      sgemm_serial(false, false, mb, d, n, 1.0f, dp, n, k + ko, iks, 0.0f, dq + qo + i0 * qs, iqs, work);  // dQ = dS K
      sgemm_serial(true, false, n, d, mb, 1.0f, dp, n, qb, iqs, 1.0f, dkb, d, work);                     // dK += dS^T Q
      sgemm_serial(true, false, n, d, mb, 1.0f, p, n, dob, iqs, 1.0f, dvb, d, work);                     // dV += P^T dO
    }
  });
  // reduce the query heads of each group into dk, dv (fixed order)
  parallel_rows(pool, static_cast<int64_t>(B) * T, [&](int64_t bgn, int64_t end, int) {
    for (int64_t n = bgn; n < end; ++n) {
      const int64_t b = n / T, t = n % T;
      for (int g = 0; g < nkv; ++g) {
        float* dkr = dk + n * ks + g * d;
        float* dvr = dv + n * ks + g * d;
        std::fill(dkr, dkr + d, 0.0f);
        std::fill(dvr, dvr + d, 0.0f);
        for (int r = 0; r < rep; ++r) {
          const int64_t off = (b * nh + g * rep + r) * head_block + t * d;
          axpy(dkr, 1.0f, dk_h + off, d);
          axpy(dvr, 1.0f, dv_h + off, d);
        }
      }
    }
  });
}

}  // namespace lathe
