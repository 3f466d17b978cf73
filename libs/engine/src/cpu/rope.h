// cpu/rope.h — rotary position embedding in HF's rotate-half layout.
// For each head vector x of size d (half = d/2), angle_i = pos * inv_freq[i], i < half:
//   y[i] = x[i] cos - x[i+half] sin,   y[i+half] = x[i+half] cos + x[i] sin
// x: [N, heads*d] in place; pos: [N]; inv_freq: [half] from rope_inv_freq (rope_freq.h).
// backward applies the inverse rotation to dy in place.
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void rope_forward(ThreadPool& pool, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
void rope_backward(ThreadPool& pool, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
}  // namespace lathe
