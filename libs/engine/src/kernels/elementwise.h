// kernels/elementwise.h — the one-line element ops of the step, shared by the CPU backend
// (cpu/basic.cpp, cpu/dropout.cpp) and the CUDA one (cuda/elementwise.cu):
//   LoRA dropout: out = mask ? x * keep : 0;  backward dx += d * keep where mask
//   sumsq term: double(g)*g (summed in f64)
#pragma once
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD float dropout_forward(uint8_t mask, float x, float keep) { return mask ? x * keep : 0.0f; }
LATHE_HD float dropout_backward_term(float d, float keep) { return d * keep; }
LATHE_HD double sumsq_term(float g) { return static_cast<double>(g) * g; }

}  // namespace kern
}  // namespace lathe
