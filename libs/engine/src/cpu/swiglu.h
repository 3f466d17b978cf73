// cpu/swiglu.h — the Llama MLP gate: a = silu(g) * u, silu(x) = x * sigmoid(x).
// g, u, a: [n] (flattened [N, intermediate]).
// backward: dg = da * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))), du = da * silu(g).
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void swiglu_forward(ThreadPool& pool, float* a, const float* g, const float* u, int64_t n);
void swiglu_backward(ThreadPool& pool, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n);
}  // namespace lathe
