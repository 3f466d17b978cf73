// cpu/adamw.h — clip-by-global-norm then PyTorch's AdamW (decoupled weight decay), for LoRA tensors.
//   norm = sqrt(sum over all grads of g^2); if max_norm > 0: g *= min(1, max_norm/(norm + 1e-6))
//   t += 1; p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//   p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// params, grads, m, v: n floats each. The pieces, per tensor: grad_sumsq (f64, in element order),
// scale_inplace (the clip) and adamw_update; model_adamw_step sums the norm over all tensors.
#pragma once
#include <cstdint>

namespace lathe {
double grad_sumsq(const float* g, int64_t n);
void scale_inplace(float* g, int64_t n, float s);
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1, float beta2,
                  float eps, float weight_decay);
}  // namespace lathe
