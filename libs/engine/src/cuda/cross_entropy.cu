// cuda/cross_entropy.cu — the loss of one chunk of LM-head logits [rows, V] and its gradient in
// place, one block per row (backend.h cross_entropy; the chunking and head GEMMs are
// src/cross_entropy.cpp's). Per labelled row: the first maximum and its index (strided scans,
// then a block combine: kernels/cross_entropy.h), sum of exp(l - max) in f64, lse, the row's loss
// (f64) into row_loss[row] and whether argmax == label into row_hit[row]; with backward the row
// becomes coef * (softmax - onehot). Unlabelled rows: loss 0, no hit, gradient 0. The table adds
// the row losses to the caller's host sum in row order after one download per chunk.
#include "cuda/ops.h"
#include "kernels/cross_entropy.h"

namespace lathe {
namespace cuda {
namespace {

constexpr int kThreads = 512;

__global__ void cross_entropy_kernel(float* logits, const int32_t* labels, int V, float coef, bool backward, double* row_loss,
                                     uint8_t* row_hit) {
  __shared__ float sh_mx[32];
  __shared__ int sh_arg[32];
  __shared__ double sh_sum[32];
  const int64_t row = blockIdx.x;
  float* lr = logits + row * V;
  const int label = labels[row];
  if (label == -100) {
    if (backward)
      for (int j = threadIdx.x; j < V; j += blockDim.x) lr[j] = 0.0f;
    if (threadIdx.x == 0) {
      row_loss[row] = 0.0;
      row_hit[row] = 0;
    }
    return;
  }
  // first maximum: each thread scans its strided indices in increasing order, then combine
  float mx = -INFINITY;
  int arg = V;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    if (arg == V) {
      mx = lr[j];
      arg = j;
    } else {
      kern::ce_argmax_scan(mx, arg, lr[j], j);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, mx, o);
    const int oa = __shfl_xor_sync(0xffffffffu, arg, o);
    if (oa < V) {
      if (arg == V) mx = om, arg = oa;
      else kern::ce_argmax_combine(mx, arg, om, oa);
    }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (lane == 0) {
    sh_mx[warp] = mx;
    sh_arg[warp] = arg;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = sh_mx[0];
    int a = sh_arg[0];
    for (int w = 1; w < warps; ++w)
      if (sh_arg[w] < V) {
        if (a == V) m = sh_mx[w], a = sh_arg[w];
        else kern::ce_argmax_combine(m, a, sh_mx[w], sh_arg[w]);
      }
    sh_mx[0] = m;
    sh_arg[0] = a;
  }
  __syncthreads();
  mx = sh_mx[0];
  arg = sh_arg[0];
  double s = 0.0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += kern::ce_exp_term(lr[j], mx);
  s = block_sum(s, sh_sum);
  const double lse = kern::ce_lse(mx, s);
  const float label_logit = lr[label];
  __syncthreads();  // every thread has read lr[label] before any overwrites it
  if (threadIdx.x == 0) {
    row_loss[row] = kern::ce_row_loss(lse, label_logit);
    row_hit[row] = arg == label;
  }
  if (!backward) return;
  const float lse_f = static_cast<float>(lse);
  for (int j = threadIdx.x; j < V; j += blockDim.x) lr[j] = kern::ce_grad(lr[j], lse_f, coef);
  __syncthreads();
  if (threadIdx.x == 0) lr[label] -= coef;
}

}  // namespace

void cross_entropy_rows(Ctx& c, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward, double* row_loss,
                        uint8_t* row_hit) {
  if (rows <= 0) return;
  cross_entropy_kernel<<<rows, kThreads, 0, c.stream>>>(logits, labels, V, coef, backward, row_loss, row_hit);
  LATHE_CUDA_LAUNCHED(cross_entropy_kernel);
}

}  // namespace cuda
}  // namespace lathe
