// cuda/ops.h — the CUDA backend's op launchers, one group per .cu file, called by the table in
// backend.cu. Pointers are device memory unless they say host; every launcher runs on the
// Ctx's stream and returns without waiting, except where it says it synchronises.
#pragma once
#include <cstdint>

#include "cuda/common.cuh"
#include "kernels/adamw.h"

namespace lathe {
namespace cuda {

// ---- elementwise.cu
void add(Ctx& c, float* y, const float* x, int64_t n);
void add_bias(Ctx& c, float* y, const float* bias, int64_t rows, int cols);
void gather_rows(Ctx& c, float* dst, const float* src, const int32_t* rows, int count, int cols);   // rows: device
void scatter_rows(Ctx& c, float* dst, const float* src, const int32_t* rows, int count, int cols);  // rows: device
void dropout_forward(Ctx& c, float* out, const float* x, const uint8_t* mask, float keep, int64_t n);  // mask: device
void dropout_backward(Ctx& c, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n);
void embedding_forward(Ctx& c, float* x, const int32_t* tokens, const float* E, int N, int H);  // tokens: device
void swiglu_forward(Ctx& c, float* a, const float* g, const float* u, int64_t n);
void swiglu_backward(Ctx& c, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n);
void scale(Ctx& c, float* g, int64_t n, float s);
double sumsq(Ctx& c, const float* g, int64_t n);  // synchronises (returns the f64 sum)
void adamw_update(Ctx& c, float* p, const float* g, float* m, float* v, int64_t n, const kern::AdamwCoef& coef);
// dst[i] = bf16(src[i]) (round to nearest even), the activations fed to the bf16 matmuls
void to_bf16(Ctx& c, __nv_bfloat16* dst, const float* src, int64_t n);
// rows x cols of src (leading dim lds) to a packed bf16 [rows, cols]
void to_bf16_2d(Ctx& c, __nv_bfloat16* dst, const float* src, int64_t rows, int64_t cols, int64_t lds);

// ---- rmsnorm.cu
void rmsnorm_forward(Ctx& c, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps);
void rmsnorm_backward(Ctx& c, float* dx, bool accumulate, const float* dy, const float* x, const float* w, const float* rstd, int N, int H);

// ---- rope.cu (pos: device)
void rope_apply(Ctx& c, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d, float sign);

// ---- cross_entropy.cu: labels device; row_loss [rows] f64 and row_hit [rows] bytes written
void cross_entropy_rows(Ctx& c, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward, double* row_loss,
                        uint8_t* row_hit);

// ---- attention.cu (seg, lo, hi: device [B*T] or null; see attention.cu)
void attention_forward(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                       const int32_t* lo, const int32_t* hi, int B, int T, int nh, int nkv, int d);
void attention_backward(Ctx& c, float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B,
                        int T, int nh, int nkv, int d);

// ---- attention_tc.cu: the tensor-core variant (Ctx::attention_tc), head dims 64 and 128
bool attention_tc_supports(int d);
void attention_tc_forward(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo,
                          int B, int T, int nh, int nkv, int d);
// D: [B, nh, T] dout.out per row (attention.cu computes it)
void attention_tc_backward(Ctx& c, float* dq, float* dk, float* dv, const float* D, const float* dout, const float* lse, const float* q,
                           const float* k, const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B, int T, int nh,
                           int nkv, int d);

// ---- nf4.cu: an NF4 weight as device arrays (nf4.h's layout)
struct Nf4View {
  int64_t rows = 0, cols = 0;
  const uint8_t* codes = nullptr;     // [(rows*cols+1)/2], two codes per byte, element 2i high nibble
  const uint8_t* absmax_q = nullptr;  // [ceil(rows*cols/64)] indices into the dynamic map
  const float* absmax_scale = nullptr;  // [ceil(count/256)]
  float offset = 0.0f;
};
// rows [r0, r1) of W dequantised to bf16 into tile ([r1-r0, cols])
void nf4_dequantize_rows(Ctx& c, const Nf4View& W, int64_t r0, int64_t r1, __nv_bfloat16* tile);

// ---- blas.cu (cuBLASLt; compiled only where the library is found)
Blas* blas_create(Ctx& c);
void blas_destroy(Blas* b, cudaStream_t stream);  // null: nothing
// C[M,N] = alpha op(A) op(B) + beta C, row-major f32 (backend.h's gemm)
void gemm_f32(Ctx& c, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc);
// backend.h's bf16_matmul: x f32 rounded to bf16, W bf16 (ldw), y f32 written or added
void bf16_matmul(Ctx& c, bool trans_w, int M, int N, int K, const float* x, const __nv_bfloat16* W, int ldw, bool accumulate, float* y);
// backend.h's nf4 matmuls on a device view (the table converts nf4::Tensor4)
void nf4_matmul_nt(Ctx& c, int N, const float* x, const Nf4View& W, float* y);
void nf4_matmul_nn(Ctx& c, int N, const float* dy, const Nf4View& W, float* dx, bool accumulate);

}  // namespace cuda
}  // namespace lathe
