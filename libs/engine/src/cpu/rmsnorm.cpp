// cpu/rmsnorm.cpp — see rmsnorm.h.
#include "cpu/rmsnorm.h"

#include <cmath>

#include "common.h"
#include "cpu/vec.h"

namespace lathe {

void rmsnorm_forward(ThreadPool& pool, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) {
      const float* xr = x + n * H;
      float* yr = y + n * H;
      const float ms = dot(xr, xr, H) / static_cast<float>(H);
      const float r = 1.0f / std::sqrt(ms + eps);
      rstd[n] = r;
      for (int i = 0; i < H; ++i) yr[i] = w[i] * (xr[i] * r);
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
      for (int i = 0; i < H; ++i) s += w[i] * dyr[i] * xr[i];
      const float c = s * r * r * r / static_cast<float>(H);
      if (accumulate)
        for (int i = 0; i < H; ++i) dxr[i] += r * w[i] * dyr[i] - xr[i] * c;
      else
        for (int i = 0; i < H; ++i) dxr[i] = r * w[i] * dyr[i] - xr[i] * c;
    }
  });
}

}  // namespace lathe
