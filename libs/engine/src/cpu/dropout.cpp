// cpu/dropout.cpp — see dropout.h. Sequential (memory-bound, and only with dropout > 0).
#include "cpu/dropout.h"

namespace lathe {

void dropout_forward(float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = mask[i] ? x[i] * keep : 0.0f;
}

void dropout_backward(float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (mask[i]) dx[i] += d[i] * keep;
}

}  // namespace lathe
