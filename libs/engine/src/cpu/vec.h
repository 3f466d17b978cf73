// cpu/vec.h — the small vector loops the CPU kernels share (inlined into each kernel).
//   dot(a, b, n) = sum a[i] b[i] with 8 independent partial sums (vectorises without -ffast-math)
//   axpy(y, a, x, n): y[i] += a * x[i]
//   LATHE_CLONES: a function attribute compiling a loop for AVX-512, AVX2+FMA and the x86-64
//   baseline, the loader picking one for the CPU (the build itself targets the baseline)
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LATHE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LATHE_CLONES
#endif

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
