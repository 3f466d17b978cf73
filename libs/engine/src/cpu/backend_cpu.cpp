// cpu/backend_cpu.cpp — the CPU backend's op table (backend.h): each op is the CPU kernel of
// src/cpu/<op>.h on the model's thread pool. The state holds that pool (owned by the model) and
// the buffer the NF4 matmuls dequantise one tile at a time into. Its memory is host memory
// (host_memory): aligned_alloc'd blocks, upload and download are memcpy.
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "common.h"
#include "cpu/adamw.h"
#include "cpu/attention.h"
#include "cpu/basic.h"
#include "cpu/cross_entropy.h"
#include "cpu/dropout.h"
#include "cpu/embedding.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/nf4_matmul.h"
#include "cpu/rmsnorm.h"
#include "cpu/rope.h"
#include "cpu/swiglu.h"

namespace lathe {
namespace {

struct CpuState {
  ThreadPool* pool;
  std::vector<float> nf4_tile;
  std::vector<float> bf16_work;  // the bf16 products' widened operands where the CPU lacks AVX512_BF16
};

CpuState& state(lathe_backend_ctx* ctx) { return *reinterpret_cast<CpuState*>(ctx); }
ThreadPool& pool(lathe_backend_ctx* ctx) { return *state(ctx).pool; }

lathe_backend_ctx* cpu_ctx_init(ThreadPool* p) {
  if (!p) throw Error(LATHE_ERR_INTERNAL, "the CPU backend needs the model's thread pool");
  return reinterpret_cast<lathe_backend_ctx*>(new CpuState{p, {}, {}});
}
void cpu_ctx_free(lathe_backend_ctx* ctx) { delete &state(ctx); }

constexpr size_t kAlign = 256;
void* cpu_alloc(lathe_backend_ctx*, size_t bytes) {
  if (bytes == 0) return nullptr;
  // aligned_alloc wants a multiple of the alignment
  const size_t rounded = bytes + (kAlign - bytes % kAlign) % kAlign;
  void* p = rounded >= bytes ? std::aligned_alloc(kAlign, rounded) : nullptr;
  if (!p) throw Error(LATHE_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
  return p;
}
void cpu_release(lathe_backend_ctx*, void* p) { std::free(p); }
void cpu_upload(lathe_backend_ctx*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void cpu_download(lathe_backend_ctx*, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}

void cpu_copy(lathe_backend_ctx*, float* dst, const float* src, int64_t n) { copy(dst, src, n); }
void cpu_zero(lathe_backend_ctx*, float* dst, int64_t n) { zero(dst, n); }
void cpu_add(lathe_backend_ctx*, float* y, const float* x, int64_t n) { add(y, x, n); }
void cpu_add_bias(lathe_backend_ctx* c, float* y, const float* bias, int64_t rows, int cols) { add_bias(pool(c), y, bias, rows, cols); }
void cpu_gather_rows(lathe_backend_ctx*, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  gather_rows(dst, src, rows, count, cols);
}
void cpu_scatter_rows(lathe_backend_ctx*, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  scatter_rows(dst, src, rows, count, cols);
}

void cpu_gemm(lathe_backend_ctx* c, bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc) {
  sgemm(pool(c), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void cpu_nf4_matmul_nt(lathe_backend_ctx* c, int N, const float* x, const nf4::Tensor4& W, float* y) {
  nf4::matmul_nt(pool(c), N, x, W, y, state(c).nf4_tile);
}
void cpu_bf16_matmul(lathe_backend_ctx* c, bool trans_w, int M, int N, int K, const float* x, const uint16_t* W, int ldw, bool accumulate,
                     float* y) {
  sgemm_bf16(pool(c), trans_w, M, N, K, 1.0f, x, K, W, ldw, accumulate ? 1.0f : 0.0f, y, N, state(c).bf16_work);
}
void cpu_nf4_matmul_nn(lathe_backend_ctx* c, int N, const float* dy, const nf4::Tensor4& W, float* dx, bool accumulate) {
  nf4::matmul_nn(pool(c), N, dy, W, dx, accumulate, state(c).nf4_tile);
}

void cpu_dropout_forward(lathe_backend_ctx*, float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  dropout_forward(out, x, mask, keep, n);
}
void cpu_dropout_backward(lathe_backend_ctx*, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  dropout_backward(dx, d, mask, keep, n);
}

void cpu_embedding_forward(lathe_backend_ctx* c, float* x, const int32_t* tokens, const float* E, int N, int H) {
  embedding_forward(pool(c), x, tokens, E, N, H);
}
void cpu_rmsnorm_forward(lathe_backend_ctx* c, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  rmsnorm_forward(pool(c), y, rstd, x, w, N, H, eps);
}
void cpu_rmsnorm_backward(lathe_backend_ctx* c, float* dx, bool accumulate, const float* dy, const float* x, const float* w,
                          const float* rstd, int N, int H) {
  rmsnorm_backward(pool(c), dx, accumulate, dy, x, w, rstd, N, H);
}
void cpu_rope_forward(lathe_backend_ctx* c, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  rope_forward(pool(c), x, pos, inv_freq, N, heads, d);
}
void cpu_rope_backward(lathe_backend_ctx* c, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  rope_backward(pool(c), dx, pos, inv_freq, N, heads, d);
}
void cpu_attention_forward(lathe_backend_ctx* c, float* out, float* lse, const float* q, const float* k, const float* v,
                           const int32_t* seg, int B, int T, int nh, int nkv, int d) {
  attention_forward(pool(c), out, lse, q, k, v, seg, B, T, nh, nkv, d);
}
void cpu_attention_backward(lathe_backend_ctx* c, float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out,
                            const float* lse, const float* q, const float* k, const float* v, const int32_t* seg, int B, int T, int nh,
                            int nkv, int d) {
  attention_backward(pool(c), dq, dk, dv, scratch, dout, out, lse, q, k, v, seg, B, T, nh, nkv, d);
}
void cpu_swiglu_forward(lathe_backend_ctx* c, float* a, const float* g, const float* u, int64_t n) { swiglu_forward(pool(c), a, g, u, n); }
void cpu_swiglu_backward(lathe_backend_ctx* c, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  swiglu_backward(pool(c), dg, du, da, g, u, n);
}

void cpu_cross_entropy(lathe_backend_ctx* c, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward,
                       double* loss_sum, int64_t* correct) {
  cross_entropy_rows(pool(c), logits, labels, rows, V, coef, backward, loss_sum, correct);
}

double cpu_sumsq(lathe_backend_ctx*, const float* g, int64_t n) { return grad_sumsq(g, n); }
void cpu_scale(lathe_backend_ctx*, float* g, int64_t n, float s) { scale_inplace(g, n, s); }
void cpu_adamw_update(lathe_backend_ctx*, float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1,
                      float beta2, float eps, float weight_decay) {
  adamw_update(p, g, m, v, n, t, lr, beta1, beta2, eps, weight_decay);
}

// Field by field (several ops share a signature, so a positional list could swap two silently);
// constexpr, so the table is constant-initialised before anything can look it up.
constexpr lathe_backend make_cpu() {
  lathe_backend b{};
  b.name = "cpu";
  b.ctx_init = cpu_ctx_init;
  b.ctx_free = cpu_ctx_free;
  b.host_memory = true;
  b.alloc = cpu_alloc;
  b.release = cpu_release;
  b.upload = cpu_upload;
  b.download = cpu_download;
  b.copy = cpu_copy;
  b.zero = cpu_zero;
  b.add = cpu_add;
  b.add_bias = cpu_add_bias;
  b.gather_rows = cpu_gather_rows;
  b.scatter_rows = cpu_scatter_rows;
  b.gemm = cpu_gemm;
  b.nf4_matmul_nt = cpu_nf4_matmul_nt;
  b.nf4_matmul_nn = cpu_nf4_matmul_nn;
  b.bf16_matmul = cpu_bf16_matmul;
  b.dropout_forward = cpu_dropout_forward;
  b.dropout_backward = cpu_dropout_backward;
  b.embedding_forward = cpu_embedding_forward;
  b.rmsnorm_forward = cpu_rmsnorm_forward;
  b.rmsnorm_backward = cpu_rmsnorm_backward;
  b.rope_forward = cpu_rope_forward;
  b.rope_backward = cpu_rope_backward;
  b.attention_forward = cpu_attention_forward;
  b.attention_backward = cpu_attention_backward;
  b.swiglu_forward = cpu_swiglu_forward;
  b.swiglu_backward = cpu_swiglu_backward;
  b.cross_entropy = cpu_cross_entropy;
  b.sumsq = cpu_sumsq;
  b.scale = cpu_scale;
  b.adamw_update = cpu_adamw_update;
  return b;
}

constexpr lathe_backend kCpu = make_cpu();

}  // namespace
}  // namespace lathe

const lathe_backend* lathe_backend_cpu() { return &lathe::kCpu; }
