// kernels/swiglu.h — the Llama MLP gate per element, shared by cpu/swiglu.cpp and cuda/swiglu.cu:
//   a = silu(g) * u = g * sigmoid(g) * u
//   dg = da * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  du = da * silu(g)
// sigmoid(g) from t = e^-|g| (kernels/exp.h, never overflowing): 1/(1+t) for g >= 0, t/(1+t) below.
#pragma once
#include "kernels/exp.h"
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD float sigmoid(float g) {
  const float t = exp_neg(g < 0.0f ? g : -g);
  return (g < 0.0f ? t : 1.0f) / (1.0f + t);
}
LATHE_HD float swiglu_forward(float g, float u) { return g * sigmoid(g) * u; }
// du may be computed from da before either output is stored (the op lets du alias da).
LATHE_HD void swiglu_backward(float da, float g, float u, float& dg, float& du) {
  const float s = sigmoid(g);
  const float silu = g * s;
  const float dgv = da * u * s * (1.0f + g * (1.0f - s));
  const float duv = da * silu;
  dg = dgv;
  du = duv;
}

}  // namespace kern
}  // namespace lathe
