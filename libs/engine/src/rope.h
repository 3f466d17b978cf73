// rope.h — rotary position embedding in HF's rotate-half layout.
// For each head vector x of size d (half = d/2), angle_i = pos * inv_freq[i], i < half:
//   y[i] = x[i] cos - x[i+half] sin,   y[i+half] = x[i+half] cos + x[i] sin
// x: [N, heads*d] in place; pos: [N]; inv_freq: [half] from rope_inv_freq (plain
// 1/theta^(2i/d), or llama3-scaled exactly as HF `_compute_llama3_parameters`).
// backward applies the inverse rotation to dy in place.
#pragma once
#include <cstdint>
#include <vector>

#include "lathe_engine.h"
#include "threads.h"

namespace lathe {
std::vector<float> rope_inv_freq(const lathe_model_config& cfg);
void rope_forward(ThreadPool& pool, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
void rope_backward(ThreadPool& pool, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
}  // namespace lathe
