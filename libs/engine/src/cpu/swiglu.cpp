// cpu/swiglu.cpp — see swiglu.h; the per-element math is kernels/swiglu.h (shared with CUDA),
// in loops compiled per ISA that vectorise (its sigmoid has no call: kernels/exp.h).
#include "cpu/swiglu.h"

#include "common.h"
#include "cpu/vec.h"
#include "kernels/swiglu.h"

namespace lathe {
namespace {

LATHE_CLONES void forward_range(float* a, const float* g, const float* u, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) a[i] = kern::swiglu_forward(g[i], u[i]);
}

// du may alias da: each element reads da[i] before it writes du[i].
LATHE_CLONES void backward_range(float* dg, float* du, const float* da, const float* g, const float* u, int64_t b, int64_t e) {
  for (int64_t i = b; i < e; ++i) kern::swiglu_backward(da[i], g[i], u[i], dg[i], du[i]);
}

}  // namespace

void swiglu_forward(ThreadPool& pool, float* a, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) { forward_range(a, g, u, b, e); });
}

void swiglu_backward(ThreadPool& pool, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) { backward_range(dg, du, da, g, u, b, e); });
}

}  // namespace lathe
