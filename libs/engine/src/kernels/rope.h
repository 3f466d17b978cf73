// kernels/rope.h — rotary position embedding in HF's rotate-half layout, shared by the CPU
// backend (cpu/rope.cpp) and the CUDA one (cuda/rope.cu). For a head vector of d elements
// (half = d/2) and i < half, angle = pos * inv_freq[i] in f32 (as HF computes it):
//   y[i] = x[i] cos - x[i+half] sin,   y[i+half] = x[i+half] cos + x[i] sin
// Backward is the inverse rotation: the same with sin negated (sign -1).
#pragma once
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD float rope_angle(int32_t pos, float inv_freq) { return static_cast<float>(pos) * inv_freq; }
LATHE_HD float rope_cos(float angle) { return cosf(angle); }
LATHE_HD float rope_sin(float angle, float sign) { return sign * sinf(angle); }
// (x0, x1) = (v[i], v[i+half]) rotated by (c, s) in place
LATHE_HD void rope_rotate(float& x0, float& x1, float c, float s) {
  const float a = x0, b = x1;
  x0 = a * c - b * s;
  x1 = b * c + a * s;
}

}  // namespace kern
}  // namespace lathe
