// linear.cpp — see linear.h.
#include "linear.h"

namespace lathe {

namespace {
float keep_of(const LoRA& l) { return 1.0f / (1.0f - l.dropout); }
}  // namespace

void lora_forward_u(const Backend& be, LoRA& l, const float* x, int N, Rng& rng, bool training, Buffer<float>& scratch) {
  const int64_t n = static_cast<int64_t>(N) * l.in;
  l.masked = training && l.dropout > 0.0f;
  l.u.resize(be, static_cast<size_t>(N) * l.r);
  const float* xin = x;
  if (l.masked) {
    l.mask.resize(n);
    for (int64_t i = 0; i < n; ++i) l.mask[i] = rng.uniform() >= l.dropout;
    scratch.resize(be, n);
    be.ops->dropout_forward(be.ctx, scratch.data(), x, l.mask.data(), keep_of(l), n);
    xin = scratch.data();
  }
  gemm_nt(be, N, l.r, l.in, 1.0f, xin, l.A.data(), 0.0f, l.u.data());
}

void linear_forward(const Backend& be, float* y, const float* x, int N, const Linear& lin, Rng& rng, bool training,
                    Buffer<float>& scratch) {
  if (lin.W4) be.ops->nf4_matmul_nt(be.ctx, N, x, *lin.W4, y);
  else if (lin.W16) be.ops->bf16_matmul(be.ctx, true, N, lin.out, lin.in, x, lin.W16, lin.in, false, y);
  else gemm_nt(be, N, lin.out, lin.in, 1.0f, x, lin.W, 0.0f, y);
  if (lin.bias) be.ops->add_bias(be.ctx, y, lin.bias, N, lin.out);
  if (lin.lora) {
    LoRA& l = *lin.lora;
    lora_forward_u(be, l, x, N, rng, training, scratch);
    gemm_nt(be, N, l.out, l.r, l.scale, l.u.data(), l.B.data(), 1.0f, y);
  }
}

void lora_backward_from_u(const Backend& be, LoRA& l, const float* du, const float* x, int N, float* dx, Buffer<float>& scratch) {
  const int64_t n = static_cast<int64_t>(N) * l.in;
  const float* xin = x;
  if (l.masked) {
    scratch.resize(be, n);
    be.ops->dropout_forward(be.ctx, scratch.data(), x, l.mask.data(), keep_of(l), n);
    xin = scratch.data();
  }
  gemm_tn(be, l.r, l.in, N, 1.0f, du, xin, 1.0f, l.gA.data());  // gA += du^T drop(x)
  if (!dx) return;
  if (!l.masked) {
    gemm_nn(be, N, l.in, l.r, 1.0f, du, l.A.data(), 1.0f, dx);  // dx += du A
    return;
  }
  scratch.resize(be, n);
  gemm_nn(be, N, l.in, l.r, 1.0f, du, l.A.data(), 0.0f, scratch.data());
  be.ops->dropout_backward(be.ctx, dx, scratch.data(), l.mask.data(), keep_of(l), n);  // dx += (du A) mask / (1 - p)
}

void linear_backward(const Backend& be, float* dx, bool accumulate, const float* dy, const float* x, int N, const Linear& lin,
                     Buffer<float>& scratch, Buffer<float>& scratch2) {
  if (dx && lin.W4) be.ops->nf4_matmul_nn(be.ctx, N, dy, *lin.W4, dx, accumulate);  // dx (+)= dy W, tile by tile
  else if (dx && lin.W16) be.ops->bf16_matmul(be.ctx, false, N, lin.in, lin.out, dy, lin.W16, lin.in, accumulate, dx);
  else if (dx) gemm_nn(be, N, lin.in, lin.out, 1.0f, dy, lin.W, accumulate ? 1.0f : 0.0f, dx);  // dx (+)= dy W
  if (!lin.lora) return;
  LoRA& l = *lin.lora;
  gemm_tn(be, l.out, l.r, N, l.scale, dy, l.u.data(), 1.0f, l.gB.data());  // gB += s dy^T u
  scratch2.resize(be, static_cast<size_t>(N) * l.r);
  gemm_nn(be, N, l.r, l.out, l.scale, dy, l.B.data(), 0.0f, scratch2.data());  // du = s dy B
  lora_backward_from_u(be, l, scratch2.data(), x, N, dx, scratch);
}

}  // namespace lathe
