// rope_freq.h — RoPE's inverse frequencies of a config, computed once at model init (host):
//   inv_freq[i] = 1 / theta^(2i/d), i < d/2, or llama3-scaled exactly as HF's
//   `_compute_llama3_parameters` (rope_scaling factor, low/high_freq_factor, original max position).
// The rotation itself is a backend op (backend.h rope_forward; CPU: cpu/rope.h).
#pragma once
#include <vector>

#include "lathe_engine.h"

namespace lathe {
std::vector<float> rope_inv_freq(const lathe_model_config& cfg);
}  // namespace lathe
