// cpu/rmsnorm.cpp — see rmsnorm.h. The per-element math is kernels/rmsnorm.h (shared with CUDA);
// the row sums are this file's loops.
#include "cpu/rmsnorm.h"

#include "common.h"
#include "cpu/vec.h"
#include "kernels/rmsnorm.h"

namespace lathe {

void rmsnorm_forward(ThreadPool& pool, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* xr = x + n * H;
      float* yr = y + n * H;
      const float r = kern::rmsnorm_rstd(dot(xr, xr, H), H, eps);
      rstd[n] = r;
      for (int i = 0; i < H; ++i) yr[i] = kern::rmsnorm_y(w[i], xr[i], r);
    }
  });
}

void rmsnorm_backward(ThreadPool& pool, float* dx, bool accumulate, const float* dy, const float* x, const float* w,
                      const float* rstd, int N, int H) {
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* xr = x + n * H;
      const float* dyr = dy + n * H;
      float* dxr = dx + n * H;
      const float r = rstd[n];
      float s = 0.0f;
      for (int i = 0; i < H; ++i) s += kern::rmsnorm_dot_term(w[i], dyr[i], xr[i]);
      const float c = kern::rmsnorm_bwd_coef(s, r, H);
      if (accumulate)
        for (int i = 0; i < H; ++i) dxr[i] += kern::rmsnorm_dx(r, w[i], dyr[i], xr[i], c);
      else
        for (int i = 0; i < H; ++i) dxr[i] = kern::rmsnorm_dx(r, w[i], dyr[i], xr[i], c);
    }
  });
}

}  // namespace lathe
