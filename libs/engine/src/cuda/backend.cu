// cuda/backend.cu — the CUDA backend's op table (backend.h): state, memory ops, and each op as a
// launcher of cuda/<op>.cu (the matmuls: blas.cu). Activations, gradients, LoRA tensors and
// moments are f32 device memory from alloc; the frozen layer weights are bf16 or NF4 device
// memory (f32 where the model keeps them f32: embeddings, norms, an f32 head). Host arrays the
// ops take (token ids, labels, positions, segments, masks, row lists) are copied to the device
// on the stream first; the loss sum and correct count come back once per cross-entropy chunk.
//
// Every op is queued on the backend's one stream and returns without waiting, except those that
// return host values (sumsq, cross_entropy) and download, which synchronise. Memory comes from
// the device's stream-ordered pool (cudaMallocAsync; its release threshold is raised so freed
// blocks are cached for the next step rather than returned to the driver).
#include <algorithm>
#include <cstring>
#include <unordered_set>
#include <vector>

#include "cuda/backend_cuda.h"
#include "cuda/ops.h"
#include "kernels/adamw.h"
#include "nf4.h"

namespace lathe {
namespace cuda {

[[noreturn]] void fail(cudaError_t e, const char* what, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so the next call reports its own
  throw Error(e == cudaErrorMemoryAllocation ? LATHE_ERR_OUT_OF_MEMORY : LATHE_ERR_INTERNAL,
              std::string("CUDA: ") + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")", file, line);
}

void* Ctx::grow(Scratch& s, size_t bytes) {
  if (bytes <= s.bytes) return s.p;
  const size_t want = std::max(bytes, s.bytes + s.bytes / 2);  // grow by half at least: few reallocations
  if (s.p) LATHE_CUDA_CHECK(cudaFreeAsync(s.p, stream));
  s.p = nullptr;
  s.bytes = 0;
  LATHE_CUDA_CHECK(cudaMallocAsync(&s.p, want, stream));
  s.bytes = want;
  return s.p;
}

namespace {

// ---- the NF4 weight (nf4.h's Tensor4: its arrays are memory of this backend) as the kernels take it
Nf4View view_of(const nf4::Tensor4& t) {
  Nf4View v;
  v.rows = t.rows;
  v.cols = t.cols;
  v.codes = t.codes.data();
  v.absmax_q = t.absmax_q.data();
  v.absmax_scale = t.absmax_scale.data();
  v.offset = t.offset;
  return v;
}

// ---- state
lathe_backend_ctx* cu_ctx_init(ThreadPool*) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    throw Error(LATHE_ERR_UNSUPPORTED, "the CUDA backend found no CUDA device");
  }
  Ctx* c = new Ctx();
  try {
    LATHE_CUDA_CHECK(cudaGetDevice(&c->device));
    LATHE_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    LATHE_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&c->pool, c->device));
    uint64_t keep = UINT64_MAX;
    LATHE_CUDA_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));
    uint64_t zero = 0;
    LATHE_CUDA_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &zero));
    std::vector<float> tables(16 + 256);
    std::memcpy(tables.data(), nf4::kCodebook, sizeof(float) * 16);
    std::memcpy(tables.data() + 16, nf4::dynamic_map(), sizeof(float) * 256);
    LATHE_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&c->nf4_tables), sizeof(float) * tables.size(), c->stream));
    LATHE_CUDA_CHECK(cudaMemcpyAsync(c->nf4_tables, tables.data(), sizeof(float) * tables.size(), cudaMemcpyHostToDevice, c->stream));
    c->blas = blas_create(*c);
    c->sync();
  } catch (...) {
    if (c->stream) cudaStreamDestroy(c->stream);
    delete c;
    throw;
  }
  return reinterpret_cast<lathe_backend_ctx*>(c);
}

// Frees everything the state holds, including what alloc() handed out and was never released.
// Errors are ignored here: this runs from destructors.
void cu_ctx_free(lathe_backend_ctx* ctx) {
  Ctx* c = &ctx_of(ctx);
  for (auto& kv : c->live) cudaFreeAsync(kv.second.base, c->stream);
  for (Scratch* s : {&c->ints_a, &c->ints_b, &c->bytes_a, &c->bf16_a, &c->bf16_b, &c->reduce, &c->ce_out})
    if (s->p) cudaFreeAsync(s->p, c->stream);
  if (c->nf4_tables) cudaFreeAsync(c->nf4_tables, c->stream);
  blas_destroy(c->blas, c->stream);
  cudaStreamSynchronize(c->stream);
  cudaStreamDestroy(c->stream);
  cudaGetLastError();
  delete c;
}

// ---- memory
// The pool's blocks are not documented to be 256-byte aligned: each block is 256 bytes larger
// and the pointer handed out is rounded up inside it (live maps it back to the block).
void* cu_alloc(lathe_backend_ctx* ctx, size_t bytes) {
  if (bytes == 0) return nullptr;
  Ctx& c = ctx_of(ctx);
  void* base = nullptr;
  const cudaError_t e = cudaMallocAsync(&base, bytes + 256, c.stream);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(LATHE_ERR_OUT_OF_MEMORY, "CUDA: cannot allocate " + std::to_string(bytes) + " bytes (" + cudaGetErrorName(e) + "; " +
                                             std::to_string(free_b >> 20) + " MiB of " + std::to_string(total_b >> 20) +
                                             " MiB free, " + std::to_string(c.held >> 20) + " MiB held by this model)");
  }
  void* p = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(base) + 255) & ~uintptr_t{255});
  c.live.emplace(p, Ctx::Block{base, bytes});
  c.held += bytes;
  c.peak = std::max(c.peak, c.held);
  return p;
}
void cu_release(lathe_backend_ctx* ctx, void* p) {
  if (!p) return;
  Ctx& c = ctx_of(ctx);
  auto it = c.live.find(p);
  if (it == c.live.end()) throw Error(LATHE_ERR_INTERNAL, "CUDA: release of a pointer this backend did not allocate");
  c.held -= it->second.bytes;
  void* base = it->second.base;
  c.live.erase(it);
  LATHE_CUDA_CHECK(cudaFreeAsync(base, c.stream));
}
// Complete on return (the caller may reuse or free its host buffer at once).
void cu_upload(lathe_backend_ctx* ctx, void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  Ctx& c = ctx_of(ctx);
  LATHE_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c.stream));
  c.sync();
}
void cu_download(lathe_backend_ctx* ctx, void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  Ctx& c = ctx_of(ctx);
  LATHE_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c.stream));
  c.sync();
}

// ---- data movement and element-wise
void cu_copy(lathe_backend_ctx* ctx, float* dst, const float* src, int64_t n) {
  if (n <= 0 || dst == src) return;
  LATHE_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, ctx_of(ctx).stream));
}
void cu_zero(lathe_backend_ctx* ctx, float* dst, int64_t n) {
  if (n <= 0) return;
  LATHE_CUDA_CHECK(cudaMemsetAsync(dst, 0, sizeof(float) * n, ctx_of(ctx).stream));
}
void cu_add(lathe_backend_ctx* ctx, float* y, const float* x, int64_t n) { add(ctx_of(ctx), y, x, n); }
void cu_add_bias(lathe_backend_ctx* ctx, float* y, const float* bias, int64_t rows, int cols) { add_bias(ctx_of(ctx), y, bias, rows, cols); }
void cu_gather_rows(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  Ctx& c = ctx_of(ctx);
  gather_rows(c, dst, src, c.stage(c.ints_a, rows, count), count, cols);
}
void cu_scatter_rows(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  Ctx& c = ctx_of(ctx);
  scatter_rows(c, dst, src, c.stage(c.ints_a, rows, count), count, cols);
}

// ---- matrix products
void cu_gemm(lathe_backend_ctx* ctx, bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
  gemm_f32(ctx_of(ctx), ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void cu_nf4_matmul_nt(lathe_backend_ctx* ctx, int N, const float* x, const nf4::Tensor4& W, float* y) {
  nf4_matmul_nt(ctx_of(ctx), N, x, view_of(W), y);
}
void cu_nf4_matmul_nn(lathe_backend_ctx* ctx, int N, const float* dy, const nf4::Tensor4& W, float* dx, bool accumulate) {
  nf4_matmul_nn(ctx_of(ctx), N, dy, view_of(W), dx, accumulate);
}
void cu_bf16_matmul(lathe_backend_ctx* ctx, bool trans_w, int M, int N, int K, const float* x, const uint16_t* W, int ldw, bool accumulate,
                    float* y) {
  bf16_matmul(ctx_of(ctx), trans_w, M, N, K, x, reinterpret_cast<const __nv_bfloat16*>(W), ldw, accumulate, y);
}

// ---- dropout (host masks)
void cu_dropout_forward(lathe_backend_ctx* ctx, float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  Ctx& c = ctx_of(ctx);
  dropout_forward(c, out, x, c.stage(c.bytes_a, mask, static_cast<size_t>(n)), keep, n);
}
void cu_dropout_backward(lathe_backend_ctx* ctx, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  Ctx& c = ctx_of(ctx);
  dropout_backward(c, dx, d, c.stage(c.bytes_a, mask, static_cast<size_t>(n)), keep, n);
}

// ---- decoder layer ops
void cu_embedding_forward(lathe_backend_ctx* ctx, float* x, const int32_t* tokens, const float* E, int N, int H) {
  Ctx& c = ctx_of(ctx);
  embedding_forward(c, x, c.stage(c.ints_a, tokens, N), E, N, H);
}
void cu_rmsnorm_forward(lathe_backend_ctx* ctx, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  rmsnorm_forward(ctx_of(ctx), y, rstd, x, w, N, H, eps);
}
void cu_rmsnorm_backward(lathe_backend_ctx* ctx, float* dx, bool accumulate, const float* dy, const float* x, const float* w, const float* rstd,
                         int N, int H) {
  rmsnorm_backward(ctx_of(ctx), dx, accumulate, dy, x, w, rstd, N, H);
}
void cu_rope_forward(lathe_backend_ctx* ctx, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  Ctx& c = ctx_of(ctx);
  rope_apply(c, x, c.stage(c.ints_a, pos, N), inv_freq, N, heads, d, 1.0f);
}
void cu_rope_backward(lathe_backend_ctx* ctx, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  Ctx& c = ctx_of(ctx);
  rope_apply(c, dx, c.stage(c.ints_a, pos, N), inv_freq, N, heads, d, -1.0f);
}

// The segments on the device, and when every row's segment ids form contiguous runs, each
// token's run start (lo) and end (hi, exclusive) for tile skipping (attention.cu); else null.
struct SegDev {
  const int32_t* seg = nullptr;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;
};
SegDev stage_segments(Ctx& c, const int32_t* seg, int B, int T) {
  SegDev s;
  if (!seg) return s;
  const int64_t N = static_cast<int64_t>(B) * T;
  s.seg = c.stage(c.ints_a, seg, static_cast<size_t>(N));
  std::vector<int32_t> lohi(2 * N);
  bool contiguous = true;
  for (int b = 0; b < B && contiguous; ++b) {
    const int32_t* r = seg + static_cast<int64_t>(b) * T;
    std::unordered_set<int32_t> seen;
    for (int t = 0; t < T; ++t) {
      const bool starts = t == 0 || r[t] != r[t - 1];
      if (starts && !seen.insert(r[t]).second) {
        contiguous = false;  // an id that comes back after another: mask only, no skipping
        break;
      }
      lohi[static_cast<int64_t>(b) * T + t] = starts ? t : lohi[static_cast<int64_t>(b) * T + t - 1];
    }
    for (int t = T - 1; t >= 0 && contiguous; --t)
      lohi[N + static_cast<int64_t>(b) * T + t] = (t == T - 1 || r[t] != r[t + 1]) ? t + 1 : lohi[N + static_cast<int64_t>(b) * T + t + 1];
  }
  if (!contiguous) return s;
  const int32_t* d = c.stage(c.ints_b, lohi.data(), lohi.size());
  s.lo = d;
  s.hi = d + N;
  return s;
}

void cu_attention_forward(lathe_backend_ctx* ctx, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                          int B, int T, int nh, int nkv, int d) {
  Ctx& c = ctx_of(ctx);
  const SegDev s = stage_segments(c, seg, B, T);
  attention_forward(c, out, lse, q, k, v, s.seg, s.lo, s.hi, B, T, nh, nkv, d);
}
void cu_attention_backward(lathe_backend_ctx* ctx, float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out,
                           const float* lse, const float* q, const float* k, const float* v, const int32_t* seg, int B, int T, int nh, int nkv,
                           int d) {
  Ctx& c = ctx_of(ctx);
  const SegDev s = stage_segments(c, seg, B, T);
  attention_backward(c, dq, dk, dv, scratch, dout, out, lse, q, k, v, s.seg, s.lo, s.hi, B, T, nh, nkv, d);
}
void cu_swiglu_forward(lathe_backend_ctx* ctx, float* a, const float* g, const float* u, int64_t n) { swiglu_forward(ctx_of(ctx), a, g, u, n); }
void cu_swiglu_backward(lathe_backend_ctx* ctx, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  swiglu_backward(ctx_of(ctx), dg, du, da, g, u, n);
}

// ---- loss: the row losses and hits come back in one download; added here in row order, as
// the CPU backend adds them.
void cu_cross_entropy(lathe_backend_ctx* ctx, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward,
                      double* loss_sum, int64_t* correct) {
  if (rows <= 0) return;
  Ctx& c = ctx_of(ctx);
  const int32_t* dlabels = c.stage(c.ints_a, labels, rows);
  const size_t loss_bytes = sizeof(double) * rows;
  auto* out = static_cast<uint8_t*>(c.grow(c.ce_out, loss_bytes + rows));
  cross_entropy_rows(c, logits, dlabels, rows, V, coef, backward, reinterpret_cast<double*>(out), out + loss_bytes);
  std::vector<uint8_t> host(loss_bytes + rows);
  LATHE_CUDA_CHECK(cudaMemcpyAsync(host.data(), out, host.size(), cudaMemcpyDeviceToHost, c.stream));
  c.sync();
  const double* row_loss = reinterpret_cast<const double*>(host.data());
  for (int i = 0; i < rows; ++i) *loss_sum += row_loss[i];
  if (correct)
    for (int i = 0; i < rows; ++i) *correct += host[loss_bytes + i];
}

// ---- optimizer
double cu_sumsq(lathe_backend_ctx* ctx, const float* g, int64_t n) { return sumsq(ctx_of(ctx), g, n); }
void cu_scale(lathe_backend_ctx* ctx, float* g, int64_t n, float s) { scale(ctx_of(ctx), g, n, s); }
void cu_adamw_update(lathe_backend_ctx* ctx, float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1,
                     float beta2, float eps, float weight_decay) {
  adamw_update(ctx_of(ctx), p, g, m, v, n, kern::adamw_coef(t, lr, beta1, beta2, eps, weight_decay));
}

// Field by field, as the CPU table (cpu/backend_cpu.cpp) is written.
lathe_backend make_cuda() {
  lathe_backend b{};
  b.name = "cuda";
  b.ctx_init = cu_ctx_init;
  b.ctx_free = cu_ctx_free;
  b.host_memory = false;
  b.alloc = cu_alloc;
  b.release = cu_release;
  b.upload = cu_upload;
  b.download = cu_download;
  b.copy = cu_copy;
  b.zero = cu_zero;
  b.add = cu_add;
  b.add_bias = cu_add_bias;
  b.gather_rows = cu_gather_rows;
  b.scatter_rows = cu_scatter_rows;
  b.gemm = cu_gemm;
  b.nf4_matmul_nt = cu_nf4_matmul_nt;
  b.nf4_matmul_nn = cu_nf4_matmul_nn;
  b.bf16_matmul = cu_bf16_matmul;
  b.dropout_forward = cu_dropout_forward;
  b.dropout_backward = cu_dropout_backward;
  b.embedding_forward = cu_embedding_forward;
  b.rmsnorm_forward = cu_rmsnorm_forward;
  b.rmsnorm_backward = cu_rmsnorm_backward;
  b.rope_forward = cu_rope_forward;
  b.rope_backward = cu_rope_backward;
  b.attention_forward = cu_attention_forward;
  b.attention_backward = cu_attention_backward;
  b.swiglu_forward = cu_swiglu_forward;
  b.swiglu_backward = cu_swiglu_backward;
  b.cross_entropy = cu_cross_entropy;
  b.sumsq = cu_sumsq;
  b.scale = cu_scale;
  b.adamw_update = cu_adamw_update;
  return b;
}

const lathe_backend kCuda = make_cuda();

}  // namespace

MemoryStats memory_stats(lathe_backend_ctx* ctx) {
  Ctx& c = ctx_of(ctx);
  MemoryStats s;
  s.held = c.held;
  s.peak = c.peak;
  uint64_t high = 0;
  LATHE_CUDA_CHECK(cudaMemPoolGetAttribute(c.pool, cudaMemPoolAttrUsedMemHigh, &high));
  s.pool_peak = high;
  return s;
}

void synchronize(lathe_backend_ctx* ctx) { ctx_of(ctx).sync(); }

void set_attention_tensor_cores(lathe_backend_ctx* ctx, bool on) { ctx_of(ctx).attention_tc = on; }

}  // namespace cuda
}  // namespace lathe

const lathe_backend* lathe_backend_cuda() {
  int count = 0;
  const bool usable = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  return usable ? &lathe::cuda::kCuda : nullptr;
}
