// cpu/dropout.h — LoRA dropout (PEFT: nn.Dropout on the adapter's input) with a given mask:
//   forward:  out[i] = mask[i] ? x[i] * keep : 0          keep = 1 / (1 - p)
//   backward: dx[i] += d[i] * keep where mask[i]           (other elements untouched)
// x, out, d, dx: [n] (flattened [N, in]); mask: [n] bytes, 1 = kept, drawn by linear.cpp from the
// model's dropout RNG so that the masks, and a resumed run, do not depend on the backend.
#pragma once
#include <cstdint>

namespace lathe {
void dropout_forward(float* out, const float* x, const uint8_t* mask, float keep, int64_t n);
void dropout_backward(float* dx, const float* d, const uint8_t* mask, float keep, int64_t n);
}  // namespace lathe
