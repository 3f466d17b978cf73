// cpu/adamw.cpp — see adamw.h. Element-wise and sequential (LoRA tensors are small); the
// per-element math is kernels/adamw.h (shared with CUDA).
#include "cpu/adamw.h"

#include "kernels/adamw.h"
#include "kernels/elementwise.h"

namespace lathe {

double grad_sumsq(const float* g, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += kern::sumsq_term(g[i]);
  return s;
}

void scale_inplace(float* g, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) g[i] *= s;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1, float beta2,
                  float eps, float weight_decay) {
  const kern::AdamwCoef c = kern::adamw_coef(t, lr, beta1, beta2, eps, weight_decay);
  for (int64_t i = 0; i < n; ++i) kern::adamw_element(p[i], g[i], m[i], v[i], c);
}

}  // namespace lathe
