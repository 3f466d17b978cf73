// cpu/rmsnorm.h — RMSNorm as HF Llama computes it (in f32):
//   y[n,:] = w * x[n,:] * rstd[n],  rstd[n] = 1 / sqrt(mean(x[n,:]^2) + eps)
// x, y: [N, H]; w: [H] (frozen: no weight gradient); rstd: [N] saved for backward.
// backward: dx = rstd * (w*dy) - x * rstd^3 / H * sum(w*dy*x)   (written or added to dx)
#pragma once
#include "threads.h"

namespace lathe {
void rmsnorm_forward(ThreadPool& pool, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps);
void rmsnorm_backward(ThreadPool& pool, float* dx, bool accumulate, const float* dy, const float* x, const float* w,
                      const float* rstd, int N, int H);
}  // namespace lathe
