// cuda/rmsnorm.cu — RMSNorm forward and backward on the GPU (f32), one block per row of H:
//   y = w * x * rstd, rstd = 1/sqrt(mean(x^2) + eps);  dx (+)= rstd w dy - x rstd^3/H sum(w dy x)
// x, y, dy, dx [N, H]; w [H]; rstd [N]. The per-element math is kernels/rmsnorm.h (the CPU
// backend's too); the row sums are block reductions in f32 (the CPU sums in 8 lanes, so the
// results agree to rounding, not bit for bit).
#include "cuda/ops.h"
#include "kernels/rmsnorm.h"

namespace lathe {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, int H, float eps) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * H;
  float* yr = y + row * H;
  float s = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) s += xr[i] * xr[i];
  s = block_sum(s, sh);
  const float r = kern::rmsnorm_rstd(s, H, eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int i = threadIdx.x; i < H; i += blockDim.x) yr[i] = kern::rmsnorm_y(w[i], xr[i], r);
}

__global__ void rmsnorm_backward_kernel(float* dx, bool accumulate, const float* dy, const float* x, const float* w, const float* rstd,
                                        int H) {
  __shared__ float sh[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * H;
  const float* dyr = dy + row * H;
  float* dxr = dx + row * H;
  const float r = rstd[row];
  float s = 0.0f;
  for (int i = threadIdx.x; i < H; i += blockDim.x) s += kern::rmsnorm_dot_term(w[i], dyr[i], xr[i]);
  s = block_sum(s, sh);
  const float c = kern::rmsnorm_bwd_coef(s, r, H);
  for (int i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = kern::rmsnorm_dx(r, w[i], dyr[i], xr[i], c);
    dxr[i] = accumulate ? dxr[i] + v : v;
  }
}

}  // namespace

void rmsnorm_forward(Ctx& c, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  if (N <= 0) return;
  rmsnorm_forward_kernel<<<N, kThreads, 0, c.stream>>>(y, rstd, x, w, H, eps);
  LATHE_CUDA_LAUNCHED(rmsnorm_forward_kernel);
}

void rmsnorm_backward(Ctx& c, float* dx, bool accumulate, const float* dy, const float* x, const float* w, const float* rstd, int N, int H) {
  if (N <= 0) return;
  rmsnorm_backward_kernel<<<N, kThreads, 0, c.stream>>>(dx, accumulate, dy, x, w, rstd, H);
  LATHE_CUDA_LAUNCHED(rmsnorm_backward_kernel);
}

}  // namespace cuda
}  // namespace lathe
