// cpu/embedding.h — token embedding lookup: x[n,:] = E[tokens[n], :]; E: [V, H], x: [N, H].
// Forward only: the embedding is frozen, so the backward chain ends at the first layer's input
// (LoRA gradients of layer 0 come through the residual stream, not through this op).
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void embedding_forward(ThreadPool& pool, float* x, const int32_t* tokens, const float* E, int N, int H);
}  // namespace lathe
