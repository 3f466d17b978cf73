// kernels/exp.h — e^x for x <= 0 in f32, the exponential of the softmaxes (attention, the
// cross-entropy) and of the sigmoid (SwiGLU).
//
// On the device it is CUDA's expf. On the host it is Cephes' expf polynomial after a 2^n range
// reduction (relative error ~2e-7, against glibc's ~1 ulp), written so that a loop of it
// vectorises: the rounding is the 1.5*2^23 trick and the power of two is built in the exponent
// bits, with no call and no branch. libm's expf and exp are calls the compiler cannot vectorise:
// they were 6-8% of a 135M training step in the cross-entropy and SwiGLU loops. x < -87 (and
// -inf) gives 0; x must not be NaN or above ~0.5 (the callers pass differences to a maximum).
#pragma once
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD float exp_neg(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float xc = x < -87.0f ? -87.0f : x;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof scale);
  return x < -87.0f ? 0.0f : y * scale;
#endif
}

}  // namespace kern
}  // namespace lathe
