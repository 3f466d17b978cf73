// cpu/dropout.cpp — see dropout.h. Sequential (memory-bound, and only with dropout > 0); the
// per-element math is kernels/elementwise.h (shared with CUDA).
#include "cpu/dropout.h"

#include "kernels/elementwise.h"

namespace lathe {

void dropout_forward(float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = kern::dropout_forward(mask[i], x[i], keep);
}

void dropout_backward(float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) dx[i] += kern::dropout_backward_term(d[i], keep);
}

}  // namespace lathe
