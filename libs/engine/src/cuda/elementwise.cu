// cuda/elementwise.cu — the element-wise and row-copy ops of the step on the GPU (f32): residual
// add, bias, gather/scatter of rows, LoRA dropout with a given mask, the embedding lookup,
// SwiGLU, the optimizer's scale / f64 sum of squares / AdamW, and the f32 -> bf16 conversion of
// matmul inputs. The per-element math is src/kernels/ (the CPU backend runs the same bodies).
// Grid-stride loops over int64 indices; shapes as backend.h states them.
#include "cuda/ops.h"
#include "kernels/adamw.h"
#include "kernels/elementwise.h"
#include "kernels/swiglu.h"

namespace lathe {
namespace cuda {
namespace {

#define LATHE_GRID_LOOP(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  LATHE_GRID_LOOP(i, n) y[i] += x[i];
}
__global__ void add_bias_kernel(float* y, const float* bias, int64_t rows, int cols) {
  LATHE_GRID_LOOP(i, rows * cols) y[i] += bias[i % cols];
}
// dst[i, :] = src[rows[i], :] (gather) or dst[rows[i], :] = src[i, :] (scatter)
__global__ void rows_kernel(float* dst, const float* src, const int32_t* rows, int count, int cols, bool gather) {
  LATHE_GRID_LOOP(e, static_cast<int64_t>(count) * cols) {
    const int64_t i = e / cols, j = e % cols, r = rows[i];
    if (gather) dst[e] = src[r * cols + j];
    else dst[r * cols + j] = src[e];
  }
}
__global__ void dropout_forward_kernel(float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  LATHE_GRID_LOOP(i, n) out[i] = kern::dropout_forward(mask[i], x[i], keep);
}
__global__ void dropout_backward_kernel(float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  LATHE_GRID_LOOP(i, n) if (mask[i]) dx[i] += kern::dropout_backward_term(d[i], keep);
}
__global__ void embedding_kernel(float* x, const int32_t* tokens, const float* E, int N, int H) {
  LATHE_GRID_LOOP(e, static_cast<int64_t>(N) * H) x[e] = E[static_cast<int64_t>(tokens[e / H]) * H + e % H];
}
__global__ void swiglu_forward_kernel(float* a, const float* g, const float* u, int64_t n) {
  LATHE_GRID_LOOP(i, n) a[i] = kern::swiglu_forward(g[i], u[i]);
}
__global__ void swiglu_backward_kernel(float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  LATHE_GRID_LOOP(i, n) {
    float dgv, duv;
    kern::swiglu_backward(da[i], g[i], u[i], dgv, duv);
    dg[i] = dgv;
    du[i] = duv;
  }
}
__global__ void scale_kernel(float* g, int64_t n, float s) {
  LATHE_GRID_LOOP(i, n) g[i] *= s;
}
// One f64 partial sum per block into part[blockIdx.x]; the second pass (one block) sums them.
__global__ void sumsq_kernel(const float* g, int64_t n, double* part) {
  __shared__ double sh[32];
  double s = 0.0;
  LATHE_GRID_LOOP(i, n) s += kern::sumsq_term(g[i]);
  s = block_sum(s, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void sum_parts_kernel(double* part, int count) {
  __shared__ double sh[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += part[i];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) part[0] = s;
}
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, kern::AdamwCoef coef) {
  LATHE_GRID_LOOP(i, n) {
    float pi = p[i], mi = m[i], vi = v[i];
    kern::adamw_element(pi, g[i], mi, vi, coef);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}
__global__ void to_bf16_kernel(__nv_bfloat16* dst, const float* src, int64_t n) {
  LATHE_GRID_LOOP(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}
__global__ void to_bf16_2d_kernel(__nv_bfloat16* dst, const float* src, int64_t rows, int64_t cols, int64_t lds) {
  LATHE_GRID_LOOP(e, rows * cols) dst[e] = __float2bfloat16_rn(src[(e / cols) * lds + e % cols]);
}

#undef LATHE_GRID_LOOP

}  // namespace

void add(Ctx& c, float* y, const float* x, int64_t n) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), 256, 0, c.stream>>>(y, x, n);
  LATHE_CUDA_LAUNCHED(add_kernel);
}
void add_bias(Ctx& c, float* y, const float* bias, int64_t rows, int cols) {
  if (rows <= 0 || cols <= 0) return;
  add_bias_kernel<<<blocks_for(rows * cols), 256, 0, c.stream>>>(y, bias, rows, cols);
  LATHE_CUDA_LAUNCHED(add_bias_kernel);
}
void gather_rows(Ctx& c, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  if (count <= 0 || cols <= 0) return;
  rows_kernel<<<blocks_for(int64_t{count} * cols), 256, 0, c.stream>>>(dst, src, rows, count, cols, true);
  LATHE_CUDA_LAUNCHED(rows_kernel);
}
void scatter_rows(Ctx& c, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  if (count <= 0 || cols <= 0) return;
  rows_kernel<<<blocks_for(int64_t{count} * cols), 256, 0, c.stream>>>(dst, src, rows, count, cols, false);
  LATHE_CUDA_LAUNCHED(rows_kernel);
}
void dropout_forward(Ctx& c, float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  if (n <= 0) return;
  dropout_forward_kernel<<<blocks_for(n), 256, 0, c.stream>>>(out, x, mask, keep, n);
  LATHE_CUDA_LAUNCHED(dropout_forward_kernel);
}
void dropout_backward(Ctx& c, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  if (n <= 0) return;
  dropout_backward_kernel<<<blocks_for(n), 256, 0, c.stream>>>(dx, d, mask, keep, n);
  LATHE_CUDA_LAUNCHED(dropout_backward_kernel);
}
void embedding_forward(Ctx& c, float* x, const int32_t* tokens, const float* E, int N, int H) {
  if (N <= 0) return;
  embedding_kernel<<<blocks_for(int64_t{N} * H), 256, 0, c.stream>>>(x, tokens, E, N, H);
  LATHE_CUDA_LAUNCHED(embedding_kernel);
}
void swiglu_forward(Ctx& c, float* a, const float* g, const float* u, int64_t n) {
  if (n <= 0) return;
  swiglu_forward_kernel<<<blocks_for(n), 256, 0, c.stream>>>(a, g, u, n);
  LATHE_CUDA_LAUNCHED(swiglu_forward_kernel);
}
void swiglu_backward(Ctx& c, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  if (n <= 0) return;
  swiglu_backward_kernel<<<blocks_for(n), 256, 0, c.stream>>>(dg, du, da, g, u, n);
  LATHE_CUDA_LAUNCHED(swiglu_backward_kernel);
}
void scale(Ctx& c, float* g, int64_t n, float s) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), 256, 0, c.stream>>>(g, n, s);
  LATHE_CUDA_LAUNCHED(scale_kernel);
}
double sumsq(Ctx& c, const float* g, int64_t n) {
  if (n <= 0) return 0.0;
  const unsigned blocks = std::min<unsigned>(blocks_for(n), 1024);
  double* part = static_cast<double*>(c.grow(c.reduce, sizeof(double) * blocks));
  sumsq_kernel<<<blocks, 256, 0, c.stream>>>(g, n, part);
  LATHE_CUDA_LAUNCHED(sumsq_kernel);
  sum_parts_kernel<<<1, 1024, 0, c.stream>>>(part, static_cast<int>(blocks));
  LATHE_CUDA_LAUNCHED(sum_parts_kernel);
  double s = 0.0;
  LATHE_CUDA_CHECK(cudaMemcpyAsync(&s, part, sizeof s, cudaMemcpyDeviceToHost, c.stream));
  c.sync();
  return s;
}
void adamw_update(Ctx& c, float* p, const float* g, float* m, float* v, int64_t n, const kern::AdamwCoef& coef) {
  if (n <= 0) return;
  adamw_kernel<<<blocks_for(n), 256, 0, c.stream>>>(p, g, m, v, n, coef);
  LATHE_CUDA_LAUNCHED(adamw_kernel);
}
void to_bf16(Ctx& c, __nv_bfloat16* dst, const float* src, int64_t n) {
  if (n <= 0) return;
  to_bf16_kernel<<<blocks_for(n), 256, 0, c.stream>>>(dst, src, n);
  LATHE_CUDA_LAUNCHED(to_bf16_kernel);
}
void to_bf16_2d(Ctx& c, __nv_bfloat16* dst, const float* src, int64_t rows, int64_t cols, int64_t lds) {
  if (rows <= 0 || cols <= 0) return;
  to_bf16_2d_kernel<<<blocks_for(rows * cols), 256, 0, c.stream>>>(dst, src, rows, cols, lds);
  LATHE_CUDA_LAUNCHED(to_bf16_2d_kernel);
}

}  // namespace cuda
}  // namespace lathe
