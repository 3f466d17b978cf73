// cpu/swiglu.cpp — see swiglu.h; the per-element math is kernels/swiglu.h (shared with CUDA).
#include "cpu/swiglu.h"

#include "common.h"
#include "kernels/swiglu.h"

namespace lathe {

void swiglu_forward(ThreadPool& pool, float* a, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) a[i] = kern::swiglu_forward(g[i], u[i]);
  });
}

void swiglu_backward(ThreadPool& pool, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) kern::swiglu_backward(da[i], g[i], u[i], dg[i], du[i]);
  });
}

}  // namespace lathe
