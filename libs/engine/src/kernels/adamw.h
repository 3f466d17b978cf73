// kernels/adamw.h — PyTorch's AdamW (torch.optim.AdamW, foreach=False) per element, shared by
// cpu/adamw.cpp and cuda/adamw.cu. The step's coefficients are computed once on the host in f64
// (adamw_coef); the element update is
//   p *= 1 - lr*wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
#pragma once
#include "kernels/hd.h"

namespace lathe {
namespace kern {

struct AdamwCoef {
  float step_size;  // lr / (1 - beta1^t)
  float bc2_sqrt;   // sqrt(1 - beta2^t)
  float decay;      // 1 - lr * weight_decay
  float beta1, beta2, eps;
};

inline AdamwCoef adamw_coef(int64_t t, float lr, float beta1, float beta2, float eps, float weight_decay) {
  const double bc1 = 1.0 - pow(static_cast<double>(beta1), static_cast<double>(t));
  const double bc2 = 1.0 - pow(static_cast<double>(beta2), static_cast<double>(t));
  AdamwCoef c;
  c.step_size = static_cast<float>(lr / bc1);
  c.bc2_sqrt = static_cast<float>(sqrt(bc2));
  c.decay = 1.0f - lr * weight_decay;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  return c;
}

LATHE_HD void adamw_element(float& p, float g, float& m, float& v, const AdamwCoef& c) {
  p *= c.decay;
  m = c.beta1 * m + (1.0f - c.beta1) * g;
  v = c.beta2 * v + (1.0f - c.beta2) * g * g;
  const float denom = sqrtf(v) / c.bc2_sqrt + c.eps;
  p -= c.step_size * m / denom;
}

}  // namespace kern
}  // namespace lathe
