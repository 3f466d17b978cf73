// cpu/cross_entropy.cpp — see cross_entropy.h. One row per task range; each row writes only its
// own logits and its own slot of the row losses. The per-row math is kernels/cross_entropy.h
// (shared with CUDA).
#include "cpu/cross_entropy.h"

#include <algorithm>
#include <vector>

#include "common.h"
#include "kernels/cross_entropy.h"

namespace lathe {

void cross_entropy_rows(ThreadPool& pool, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward,
                        double* loss_sum, int64_t* correct) {
  std::vector<double> row_loss(rows);
  std::vector<uint8_t> row_hit(correct ? rows : 0);
  parallel_rows(pool, rows, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      float* lr = &logits[i * V];
      if (labels[i] == -100) {
        row_loss[i] = 0.0;
        if (backward) std::fill(lr, lr + V, 0.0f);
        continue;
      }
      float mx = lr[0];
      int arg = 0;
      for (int j = 1; j < V; ++j) kern::ce_argmax_scan(mx, arg, lr[j], j);
      if (correct) row_hit[i] = arg == labels[i];
      double sum = 0.0;
      for (int j = 0; j < V; ++j) sum += kern::ce_exp_term(lr[j], mx);
      const double lse = kern::ce_lse(mx, sum);
      row_loss[i] = kern::ce_row_loss(lse, lr[labels[i]]);
      if (backward) {
        for (int j = 0; j < V; ++j) lr[j] = kern::ce_grad(lr[j], lse, coef);
        lr[labels[i]] -= coef;
      }
    }
  });
  for (int i = 0; i < rows; ++i) *loss_sum += row_loss[i];
  if (correct)
    for (int i = 0; i < rows; ++i) *correct += row_hit[i];
}

}  // namespace lathe
