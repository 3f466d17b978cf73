// cpu/attention.cpp — see attention.h. One task per (row, query head); each task writes only its
// own outputs (dq slice, its head's dk/dv scratch), and the group reduction runs afterwards in a
// fixed order, so results are deterministic.
#include "cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"
#include "cpu/vec.h"

namespace lathe {

void attention_forward(ThreadPool& pool, float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seg, int B, int T, int nh, int nkv, int d) {
  const int rep = nh / nkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d;
  pool.run(static_cast<int64_t>(B) * nh, [&](int64_t task, int thread) {
    const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh), g = h / rep;
    const int32_t* sg = seg ? seg + static_cast<int64_t>(b) * T : nullptr;
    float* p = pool.scratch(thread, T);
    for (int i = 0; i < T; ++i) {
      const float* qi = q + (static_cast<int64_t>(b) * T + i) * qs + h * d;
      float* oi = out + (static_cast<int64_t>(b) * T + i) * qs + h * d;
      float m = -std::numeric_limits<float>::infinity();
      for (int j = 0; j <= i; ++j) {
        if (sg && sg[j] != sg[i]) { p[j] = -std::numeric_limits<float>::infinity(); continue; }
        const float s = scale * dot(qi, k + (static_cast<int64_t>(b) * T + j) * ks + g * d, d);
        p[j] = s;
        m = std::max(m, s);
      }
      float sum = 0.0f;
      for (int j = 0; j <= i; ++j) {
        const float e = (sg && sg[j] != sg[i]) ? 0.0f : std::exp(p[j] - m);
        p[j] = e;
        sum += e;
      }
      std::fill(oi, oi + d, 0.0f);
      const float inv = 1.0f / sum;
      for (int j = 0; j <= i; ++j)
        if (p[j] != 0.0f) axpy(oi, p[j] * inv, v + (static_cast<int64_t>(b) * T + j) * ks + g * d, d);
      lse[(static_cast<int64_t>(b) * nh + h) * T + i] = m + std::log(sum);
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
  pool.run(static_cast<int64_t>(B) * nh, [&](int64_t task, int) {
    const int b = static_cast<int>(task / nh), h = static_cast<int>(task % nh), g = h / rep;
    const int32_t* sg = seg ? seg + static_cast<int64_t>(b) * T : nullptr;
    float* dkb = dk_h + task * head_block;
    float* dvb = dv_h + task * head_block;
    std::fill(dkb, dkb + head_block, 0.0f);
    std::fill(dvb, dvb + head_block, 0.0f);
    for (int i = 0; i < T; ++i) {
      const int64_t ri = (static_cast<int64_t>(b) * T + i) * qs + h * d;
      const float* qi = q + ri;
      const float* doi = dout + ri;
      float* dqi = dq + ri;
      const float li = lse[(static_cast<int64_t>(b) * nh + h) * T + i];
      const float Di = dot(doi, out + ri, d);
      std::fill(dqi, dqi + d, 0.0f);
      for (int j = 0; j <= i; ++j) {
        if (sg && sg[j] != sg[i]) continue;
        const int64_t rj = (static_cast<int64_t>(b) * T + j) * ks + g * d;
        const float pj = std::exp(scale * dot(qi, k + rj, d) - li);
        const float dpj = dot(doi, v + rj, d);
        const float dsj = pj * (dpj - Di) * scale;
        axpy(dqi, dsj, k + rj, d);
        axpy(dkb + static_cast<int64_t>(j) * d, dsj, qi, d);
        axpy(dvb + static_cast<int64_t>(j) * d, pj, doi, d);
      }
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
