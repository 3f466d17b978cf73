// linear.h — a frozen Linear with an optional LoRA adapter (PEFT semantics):
//   y = x W^T + b + scale * (drop(x) A^T) B^T
// x: [N, in], W: [out, in], b: [out] or null, A: [r, in], B: [out, r], y: [N, out].
// drop(x) = x * mask / (1 - p) in training with p > 0, else x. scale = alpha/r (alpha/sqrt(r)
// with rsLoRA). Forward saves u = drop(x) A^T [N, r] and the mask for backward.
// W is f32, or NF4 (W4, QLoRA: see nf4.h) dequantised tile by tile inside the matmuls, or bf16
// (W16: x and dy are rounded to bf16 for the base products, which sum in f32; cpu/gemm_bf16.h).
// backward (base frozen): dx = dy W + ((scale dy B) A) * mask/(1-p);
//   gB += scale dy^T u;  gA += (scale dy B)^T drop(x).   Grads accumulate; dx written or added.
// Composed from backend ops (backend.h: gemm, nf4_matmul_*, add_bias, dropout_*); every float
// pointer is memory of the backend. The dropout mask is drawn here, on the host, from the
// model's RNG, and stays host memory (the dropout ops take it so).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend.h"
#include "nf4.h"
#include "rng.h"

namespace lathe {

struct LoRA {
  int r = 0, in = 0, out = 0;
  float scale = 0.0f, dropout = 0.0f;
  Buffer<float> A, B, gA, gB, mA, vA, mB, vB;  // backend memory
  // saved by the last forward
  Buffer<float> u;             // [N, r], backend memory
  std::vector<uint8_t> mask;   // [N, in], host, 1 = kept (only when dropout was applied)
  bool masked = false;
};

struct Linear {
  std::string name;            // HF module name, e.g. model.layers.0.self_attn.q_proj
  int in = 0, out = 0;
  const float* W = nullptr;      // f32 [out, in], or null when W4 or W16 is set (model.h: backend memory)
  const nf4::Tensor4* W4 = nullptr;
  const uint16_t* W16 = nullptr;  // bf16 [out, in] (lathe_model_convert_bf16), or null
  const float* bias = nullptr;
  LoRA* lora = nullptr;
};

// scratch: caller-owned temporary in backend memory, resized as needed.
void linear_forward(const Backend& be, float* y, const float* x, int N, const Linear& lin, Rng& dropout_rng, bool training,
                    Buffer<float>& scratch);
// Sets l.u = drop(x) A^T (drawing a new mask when training with dropout).
void lora_forward_u(const Backend& be, LoRA& l, const float* x, int N, Rng& dropout_rng, bool training, Buffer<float>& scratch);
// Given du = d loss / d u ([N, r], already including scale), adds gA and, when dx, dx += (du A)*mask/(1-p).
void lora_backward_from_u(const Backend& be, LoRA& l, const float* du, const float* x, int N, float* dx, Buffer<float>& scratch);
void linear_backward(const Backend& be, float* dx, bool accumulate, const float* dy, const float* x, int N, const Linear& lin,
                     Buffer<float>& scratch, Buffer<float>& scratch2);

}  // namespace lathe
