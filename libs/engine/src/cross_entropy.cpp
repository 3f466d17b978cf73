// cross_entropy.cpp — see cross_entropy.h.
#include "cross_entropy.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "gemm.h"

namespace lathe {

double cross_entropy_forward_backward(ThreadPool& pool, const float* h, const int32_t* labels, int N, int H, int V,
                                      const float* W, const HeadLoRA* lora, float coef, float* dh, float* logits_out,
                                      int64_t chunk_rows, int64_t* count_out) {
  std::vector<int32_t> rows;
  int64_t count = 0;
  for (int n = 0; n < N; ++n) {
    const bool has = labels && labels[n] != -100;
    count += has;
    if (has || logits_out) rows.push_back(n);
  }
  *count_out = count;
  if (rows.empty()) return 0.0;
  const int64_t cr = std::max<int64_t>(1, std::min<int64_t>(chunk_rows, static_cast<int64_t>(rows.size())));
  const int r = lora ? lora->r : 0;
  std::vector<float> xin(cr * H), logit(cr * V), dx(dh ? cr * H : 0), uc(cr * r), duc(cr * r);
  std::vector<double> row_loss(cr);
  std::vector<int32_t> lab(cr);
  double total = 0.0;
  for (size_t c0 = 0; c0 < rows.size(); c0 += cr) {
    const int m = static_cast<int>(std::min<int64_t>(cr, rows.size() - c0));
    bool any_label = false;
    for (int i = 0; i < m; ++i) {
      const int n = rows[c0 + i];
      std::memcpy(&xin[static_cast<int64_t>(i) * H], h + static_cast<int64_t>(n) * H, sizeof(float) * H);
      if (r) std::memcpy(&uc[static_cast<int64_t>(i) * r], lora->u + static_cast<int64_t>(n) * r, sizeof(float) * r);
      lab[i] = labels ? labels[n] : -100;
      any_label |= lab[i] != -100;
    }
    gemm_nt(pool, m, V, H, 1.0f, xin.data(), W, 0.0f, logit.data());
    if (r) gemm_nt(pool, m, V, r, lora->scale, uc.data(), lora->B, 1.0f, logit.data());
    if (logits_out)
      for (int i = 0; i < m; ++i)
        std::memcpy(logits_out + static_cast<int64_t>(rows[c0 + i]) * V, &logit[static_cast<int64_t>(i) * V], sizeof(float) * V);
    const bool backward = dh != nullptr;
    parallel_rows(pool, m, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        float* lr = &logit[i * V];
        if (lab[i] == -100) {
          row_loss[i] = 0.0;
          if (backward) std::fill(lr, lr + V, 0.0f);
          continue;
        }
        float mx = lr[0];
        for (int j = 1; j < V; ++j) mx = std::max(mx, lr[j]);
        double sum = 0.0;
        for (int j = 0; j < V; ++j) sum += std::exp(static_cast<double>(lr[j] - mx));
        const double lse = static_cast<double>(mx) + std::log(sum);
        row_loss[i] = lse - static_cast<double>(lr[lab[i]]);
        if (backward) {
          for (int j = 0; j < V; ++j) lr[j] = coef * static_cast<float>(std::exp(static_cast<double>(lr[j]) - lse));
          lr[lab[i]] -= coef;
        }
      }
    });
    for (int i = 0; i < m; ++i) total += row_loss[i];
    if (!backward || !any_label) continue;
    gemm_nn(pool, m, H, V, 1.0f, logit.data(), W, 0.0f, dx.data());  // dh = dlogits W
    for (int i = 0; i < m; ++i)
      std::memcpy(dh + static_cast<int64_t>(rows[c0 + i]) * H, &dx[static_cast<int64_t>(i) * H], sizeof(float) * H);
    if (r) {
      gemm_tn(pool, V, r, m, lora->scale, logit.data(), uc.data(), 1.0f, lora->gB);   // gB += s dlogits^T u
      gemm_nn(pool, m, r, V, lora->scale, logit.data(), lora->B, 0.0f, duc.data());   // du = s dlogits B
      for (int i = 0; i < m; ++i)
        std::memcpy(lora->du + static_cast<int64_t>(rows[c0 + i]) * r, &duc[static_cast<int64_t>(i) * r], sizeof(float) * r);
    }
  }
  return total;
}

}  // namespace lathe
