// cuda/rope.cu — rotate-half RoPE in place on x [N, heads*d] (sign +1 forward, -1 backward: the
// inverse rotation), one thread per (token, head, i < d/2) pair. pos: device [N]; inv_freq:
// device [d/2]. The angle and rotation are kernels/rope.h, as on the CPU; the GPU's cosf/sinf
// agree with the C library's to a few ulp.
#include "cuda/ops.h"
#include "kernels/rope.h"

namespace lathe {
namespace cuda {
namespace {

__global__ void rope_kernel(float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d, float sign) {
  const int half = d / 2;
  const int64_t total = static_cast<int64_t>(N) * heads * half;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total; e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int i = static_cast<int>(e % half);
    const int64_t nh = e / half;  // n * heads + h
    const int64_t n = nh / heads;
    const float a = kern::rope_angle(pos[n], inv_freq[i]);
    float* v = x + nh * d;
    kern::rope_rotate(v[i], v[i + half], kern::rope_cos(a), kern::rope_sin(a, sign));
  }
}

}  // namespace

void rope_apply(Ctx& c, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d, float sign) {
  const int64_t total = static_cast<int64_t>(N) * heads * (d / 2);
  if (total <= 0) return;
  rope_kernel<<<blocks_for(total), 256, 0, c.stream>>>(x, pos, inv_freq, N, heads, d, sign);
  LATHE_CUDA_LAUNCHED(rope_kernel);
}

}  // namespace cuda
}  // namespace lathe
