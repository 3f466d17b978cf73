// cpu/swiglu.cpp — see swiglu.h.
#include "cpu/swiglu.h"

#include <cmath>

#include "common.h"

namespace lathe {

void swiglu_forward(ThreadPool& pool, float* a, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-g[i]));
      a[i] = g[i] * s * u[i];
    }
  });
}

void swiglu_backward(ThreadPool& pool, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const float s = 1.0f / (1.0f + std::exp(-g[i]));
      const float silu = g[i] * s;
      dg[i] = da[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
      du[i] = da[i] * silu;
    }
  });
}

}  // namespace lathe
