// linear.cpp — see linear.h.
#include "linear.h"

#include <cstring>

#include "common.h"
#include "gemm.h"

namespace lathe {

void lora_dropped_input(const LoRA& l, const float* x, int N, float* out) {
  const int64_t n = static_cast<int64_t>(N) * l.in;
  if (!l.masked) {
    std::memcpy(out, x, sizeof(float) * n);
    return;
  }
  const float keep = 1.0f / (1.0f - l.dropout);
  for (int64_t i = 0; i < n; ++i) out[i] = l.mask[i] ? x[i] * keep : 0.0f;
}

void lora_forward_u(ThreadPool& pool, LoRA& l, const float* x, int N, Rng& rng, bool training, std::vector<float>& scratch) {
  const int64_t n = static_cast<int64_t>(N) * l.in;
  l.masked = training && l.dropout > 0.0f;
  l.u.resize(static_cast<size_t>(N) * l.r);
  const float* xin = x;
  if (l.masked) {
    l.mask.resize(n);
    for (int64_t i = 0; i < n; ++i) l.mask[i] = rng.uniform() >= l.dropout;
    scratch.resize(n);
    lora_dropped_input(l, x, N, scratch.data());
    xin = scratch.data();
  }
  gemm_nt(pool, N, l.r, l.in, 1.0f, xin, l.A.data(), 0.0f, l.u.data());
}

void linear_forward(ThreadPool& pool, float* y, const float* x, int N, const Linear& lin, Rng& rng, bool training,
                    std::vector<float>& scratch) {
  if (lin.W4) nf4::matmul_nt(pool, N, x, *lin.W4, y, scratch);  // scratch holds a dequantised tile
  else gemm_nt(pool, N, lin.out, lin.in, 1.0f, x, lin.W, 0.0f, y);
  if (lin.bias) {
    parallel_rows(pool, N, [&](int64_t b, int64_t e, int) {
      for (int64_t n = b; n < e; ++n) axpy(y + n * lin.out, 1.0f, lin.bias, lin.out);
    });
  }
  if (lin.lora) {
    LoRA& l = *lin.lora;
    lora_forward_u(pool, l, x, N, rng, training, scratch);
    gemm_nt(pool, N, l.out, l.r, l.scale, l.u.data(), l.B.data(), 1.0f, y);
  }
}

void lora_backward_from_u(ThreadPool& pool, LoRA& l, const float* du, const float* x, int N, float* dx,
                          std::vector<float>& scratch) {
  const int64_t n = static_cast<int64_t>(N) * l.in;
  const float* xin = x;
  if (l.masked) {
    scratch.resize(n);
    lora_dropped_input(l, x, N, scratch.data());
    xin = scratch.data();
  }
  gemm_tn(pool, l.r, l.in, N, 1.0f, du, xin, 1.0f, l.gA.data());  // gA += du^T drop(x)
  if (!dx) return;
  if (!l.masked) {
    gemm_nn(pool, N, l.in, l.r, 1.0f, du, l.A.data(), 1.0f, dx);  // dx += du A
    return;
  }
  scratch.resize(n);
  gemm_nn(pool, N, l.in, l.r, 1.0f, du, l.A.data(), 0.0f, scratch.data());
  const float keep = 1.0f / (1.0f - l.dropout);
  for (int64_t i = 0; i < n; ++i)
    if (l.mask[i]) dx[i] += scratch[i] * keep;
}

void linear_backward(ThreadPool& pool, float* dx, bool accumulate, const float* dy, const float* x, int N, const Linear& lin,
                     std::vector<float>& scratch, std::vector<float>& scratch2) {
  if (dx && lin.W4) nf4::matmul_nn(pool, N, dy, *lin.W4, dx, accumulate, scratch);  // dx (+)= dy W, tile by tile
  else if (dx) gemm_nn(pool, N, lin.in, lin.out, 1.0f, dy, lin.W, accumulate ? 1.0f : 0.0f, dx);  // dx (+)= dy W
  if (!lin.lora) return;
  LoRA& l = *lin.lora;
  gemm_tn(pool, l.out, l.r, N, l.scale, dy, l.u.data(), 1.0f, l.gB.data());  // gB += s dy^T u
  scratch2.resize(static_cast<size_t>(N) * l.r);
  gemm_nn(pool, N, l.r, l.out, l.scale, dy, l.B.data(), 0.0f, scratch2.data());  // du = s dy B
  lora_backward_from_u(pool, l, scratch2.data(), x, N, dx, scratch);
}

}  // namespace lathe
