// cpu/cross_entropy.cpp — see cross_entropy.h. One row per task range; each row writes only its
// own logits and its own slot of the row losses. The per-row math is kernels/cross_entropy.h
// (shared with CUDA); the loops over a row's V logits are written to vectorise (fixed-width
// partial maxima and sums, the branch-free exp of kernels/exp.h) and compiled per ISA.
#include "cpu/cross_entropy.h"

#include <algorithm>
#include <vector>

#include "common.h"
#include "cpu/vec.h"
#include "kernels/cross_entropy.h"

namespace lathe {
namespace {

constexpr int kLanes = 16;

// The row's loss; its first maximal logit in *arg; with `backward` the row turned into its gradient.
LATHE_CLONES double ce_row(float* lr, int V, int label, float coef, bool backward, int* arg) {
  // The maximum over 16 independent lanes (any order gives the same maximum), then its first index.
  float mx = lr[0];
  int j = 0;
  if (V >= kLanes) {
    float pm[kLanes];
    for (int k = 0; k < kLanes; ++k) pm[k] = lr[k];
    for (j = kLanes; j + kLanes <= V; j += kLanes)
      for (int k = 0; k < kLanes; ++k) pm[k] = lr[j + k] > pm[k] ? lr[j + k] : pm[k];
    for (int k = 0; k < kLanes; ++k) mx = pm[k] > mx ? pm[k] : mx;
  }
  for (; j < V; ++j) mx = lr[j] > mx ? lr[j] : mx;
  // the first index holding it: torch.argmax's first maximum (with a NaN maximum, whose loss is
  // NaN and fails the step, none: 0)
  int a = 0;
  for (; a + kLanes <= V; a += kLanes) {  // 16 at a time to the block that holds it
    bool hit = false;
    for (int k = 0; k < kLanes; ++k) hit |= lr[a + k] == mx;
    if (hit) break;
  }
  while (a < V && !(lr[a] == mx)) ++a;
  *arg = a < V ? a : 0;
  // sum_j exp(l_j - mx) in f64 over 8 lanes (each term f32), combined in a fixed order
  // (the terms of 64 logits first, then their f64 sums as one 8-lane vector: lane k still adds
  // the terms of j = k, k + 8, k + 16, ... in that order)
  typedef double d8 __attribute__((vector_size(64)));
  typedef float f8 __attribute__((vector_size(32)));
  d8 acc8 = {0, 0, 0, 0, 0, 0, 0, 0};
  j = 0;
  for (; j + 64 <= V; j += 64) {
    float e[64];
    for (int t = 0; t < 64; ++t) e[t] = kern::ce_exp_term(lr[j + t], mx);
    for (int t = 0; t < 64; t += 8) {
      f8 v;
      __builtin_memcpy(&v, e + t, sizeof v);
      acc8 += __builtin_convertvector(v, d8);
    }
  }
  double acc[8];
  __builtin_memcpy(acc, &acc8, sizeof acc);
  for (; j + 8 <= V; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(kern::ce_exp_term(lr[j + k], mx));
  double sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; j < V; ++j) sum += static_cast<double>(kern::ce_exp_term(lr[j], mx));
  const double lse = kern::ce_lse(mx, sum);
  const double loss = kern::ce_row_loss(lse, lr[label]);
  if (backward) {
    const float lse_f = static_cast<float>(lse);
    for (int i = 0; i < V; ++i) lr[i] = kern::ce_grad(lr[i], lse_f, coef);
    lr[label] -= coef;
  }
  return loss;
}

}  // namespace

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
      int arg = 0;
      row_loss[i] = ce_row(lr, V, labels[i], coef, backward, &arg);
      if (correct) row_hit[i] = arg == labels[i];
    }
  });
  for (int i = 0; i < rows; ++i) *loss_sum += row_loss[i];
  if (correct)
    for (int i = 0; i < rows; ++i) *correct += row_hit[i];
}

}  // namespace lathe
