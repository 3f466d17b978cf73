// cpu/adamw.cpp — see adamw.h. Element-wise and sequential (LoRA tensors are small).
#include "cpu/adamw.h"

#include <cmath>

namespace lathe {

double grad_sumsq(const float* g, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
  return s;
}

void scale_inplace(float* g, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) g[i] *= s;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1, float beta2,
                  float eps, float weight_decay) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t));
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    p[i] -= step_size * m[i] / denom;
  }
}

}  // namespace lathe
