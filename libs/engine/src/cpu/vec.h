// cpu/vec.h — the small vector loops the CPU kernels share (inlined into each kernel).
//   dot(a, b, n) = sum a[i] b[i] with 8 independent partial sums (vectorises without -ffast-math)
//   axpy(y, a, x, n): y[i] += a * x[i]
#pragma once

namespace lathe {

inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace lathe
