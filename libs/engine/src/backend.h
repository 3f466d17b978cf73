// backend.h — the op table between the model and the hardware it computes on (ggml-style: a
// named struct of function pointers, one static table per backend, found in a registry).
//
// model.cpp, linear.cpp and cross_entropy.cpp run the training step by calling these ops on the
// backend the model was given; they never call a kernel directly. Every op takes the backend's
// own state (`ctx`, made by ctx_init) first. Shapes are row-major; N is tokens (batch*seq),
// H hidden, V vocabulary, d head_dim. Pointers to activations, gradients, LoRA tensors,
// optimizer moments and frozen weights are memory of the backend (from its alloc; lathe::Buffer
// below holds them), which the host never reads or writes except through upload/download;
// pointers documented as host (token ids, labels, positions, segments, dropout masks, row lists,
// the loss sum, the correct count) are ordinary CPU memory the caller owns: a device backend
// copies them itself. An op writes only its outputs; "written" overwrites, "added" accumulates.
// Ops do not fail on valid arguments (the caller checks shapes and ids); a backend that can fail
// (a device error, out of memory) throws lathe::Error, which the C boundary turns into a status.
//
// The CPU backend (src/cpu/) is the reference: every other backend is checked against it by
// test/test_backends.cpp, and test/test_backend_memory.cpp checks that the model touches backend
// memory only through these ops. Adding a backend: write its table, list it in backend.cpp's
// registry.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace lathe {
class ThreadPool;
namespace nf4 {
struct Tensor4;
}
}  // namespace lathe

// A backend's per-model state (the CPU one: the model's thread pool and an NF4 tile buffer).
// Each backend defines its own struct and converts; the type only keeps ctx apart from data.
struct lathe_backend_ctx;

struct lathe_backend {
  const char* name;  // "cpu"; the registry looks backends up by it

  // Per-model state. `pool` is the model's host thread pool (the CPU backend computes on it).
  lathe_backend_ctx* (*ctx_init)(lathe::ThreadPool* pool);
  void (*ctx_free)(lathe_backend_ctx* ctx);

  // ---- memory of the backend. Every pointer the ops call "memory of the backend" comes from
  // alloc (activations, gradients, LoRA tensors and moments, and the frozen weights in whatever
  // dtype the ops read them: f32, bf16, NF4 codes/scales).
  // host_memory: that memory is ordinary host memory (the CPU backend), so upload/download are
  // memcpy and the model may pass weights it already holds on the host without a second copy.
  bool host_memory;
  void* (*alloc)(lathe_backend_ctx* ctx, size_t bytes);  // uninitialised, 256-byte aligned; 0 bytes: nullptr;
                                                         // throws lathe::Error(LATHE_ERR_OUT_OF_MEMORY, msg) when it cannot
  void (*release)(lathe_backend_ctx* ctx, void* p);     // p null: nothing
  void (*upload)(lathe_backend_ctx* ctx, void* dst, const void* host_src, size_t bytes);    // host -> backend
  void (*download)(lathe_backend_ctx* ctx, void* host_dst, const void* src, size_t bytes);  // backend -> host, complete on return

  // ---- data movement and element-wise ops (n elements)
  void (*copy)(lathe_backend_ctx* ctx, float* dst, const float* src, int64_t n);
  void (*zero)(lathe_backend_ctx* ctx, float* dst, int64_t n);
  void (*add)(lathe_backend_ctx* ctx, float* y, const float* x, int64_t n);  // y += x (the residual stream)
  // y[r, :] += bias for r < rows; y [rows, cols], bias [cols]
  void (*add_bias)(lathe_backend_ctx* ctx, float* y, const float* bias, int64_t rows, int cols);
  // dst[i, :] = src[rows[i], :] and dst[rows[i], :] = src[i, :] for i < count; rows: host
  void (*gather_rows)(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols);
  void (*scatter_rows)(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols);

  // ---- matrix products (f32)
  // C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C; op(A) = A [M,K] (lda) or A^T (A stored [K,M]);
  // likewise B. beta 0 overwrites C. Each element's sum runs in an order fixed by the shapes.
  void (*gemm)(lathe_backend_ctx* ctx, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
               const float* B, int ldb, float beta, float* C, int ldc);
  // QLoRA: W [rows, cols] stored as NF4 (nf4.h: its codes and absmax arrays are memory of the
  // backend), dequantised on the fly, never whole.
  //   y[N, rows] = x[N, cols] W^T (written);  dx[N, cols] (+)= dy[N, rows] W
  void (*nf4_matmul_nt)(lathe_backend_ctx* ctx, int N, const float* x, const lathe::nf4::Tensor4& W, float* y);
  void (*nf4_matmul_nn)(lathe_backend_ctx* ctx, int N, const float* dy, const lathe::nf4::Tensor4& W, float* dx, bool accumulate);
  // bf16 base weights (W bf16, leading dim ldw; x rounded to bf16, products summed in f32):
  //   trans_w: y[M,N] (+)= x[M,K] W[N,K]^T;  else y[M,N] (+)= x[M,K] W[K,N]
  void (*bf16_matmul)(lathe_backend_ctx* ctx, bool trans_w, int M, int N, int K, const float* x, const uint16_t* W, int ldw,
                      bool accumulate, float* y);

  // ---- LoRA dropout; mask: host bytes, 1 = kept (drawn by linear.cpp from the model's RNG)
  // out[i] = mask[i] ? x[i] * keep : 0      (keep = 1 / (1 - p))
  void (*dropout_forward)(lathe_backend_ctx* ctx, float* out, const float* x, const uint8_t* mask, float keep, int64_t n);
  // dx[i] += d[i] * keep where mask[i]; other elements untouched
  void (*dropout_backward)(lathe_backend_ctx* ctx, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n);

  // ---- decoder layer ops (see src/cpu/<op>.h for the arithmetic)
  // x[n, :] = E[tokens[n], :]; E [V, H], tokens: host. No backward: the embedding is frozen.
  void (*embedding_forward)(lathe_backend_ctx* ctx, float* x, const int32_t* tokens, const float* E, int N, int H);
  // y = w * x * rstd, rstd[n] = 1/sqrt(mean(x[n]^2) + eps); x, y [N, H], w [H], rstd [N] saved
  void (*rmsnorm_forward)(lathe_backend_ctx* ctx, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps);
  void (*rmsnorm_backward)(lathe_backend_ctx* ctx, float* dx, bool accumulate, const float* dy, const float* x, const float* w,
                           const float* rstd, int N, int H);
  // rotate-half RoPE in place on x [N, heads*d]; pos: host [N]; inv_freq [d/2] (rope_freq.h)
  void (*rope_forward)(lathe_backend_ctx* ctx, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
  void (*rope_backward)(lathe_backend_ctx* ctx, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d);
  // grouped-query causal attention within packing segments (seg: host [B, T] or null);
  // q, out [B*T, nh*d], k, v [B*T, nkv*d], lse [B, nh, T] saved; scratch: 2*B*T*nh*d floats
  void (*attention_forward)(lathe_backend_ctx* ctx, float* out, float* lse, const float* q, const float* k, const float* v,
                            const int32_t* seg, int B, int T, int nh, int nkv, int d);
  void (*attention_backward)(lathe_backend_ctx* ctx, float* dq, float* dk, float* dv, float* scratch, const float* dout,
                             const float* out, const float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                             int B, int T, int nh, int nkv, int d);
  // a = silu(g) * u over n elements; backward writes dg and du (du may alias da)
  void (*swiglu_forward)(lathe_backend_ctx* ctx, float* a, const float* g, const float* u, int64_t n);
  void (*swiglu_backward)(lathe_backend_ctx* ctx, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n);

  // ---- loss: one chunk of LM-head logits [rows, V] with labels (host, -100 = none).
  // Adds each labelled row's logsumexp - logit[label] to *loss_sum (host) in row order; with
  // `backward` turns the logits into coef * (softmax - onehot) in place (unlabelled rows: 0).
  // With `correct` (host, may be null) adds the labelled rows whose first maximal logit is the label.
  void (*cross_entropy)(lathe_backend_ctx* ctx, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward,
                        double* loss_sum, int64_t* correct);

  // ---- optimizer, per LoRA tensor of n elements
  double (*sumsq)(lathe_backend_ctx* ctx, const float* g, int64_t n);  // sum of g^2 in f64, in element order
  void (*scale)(lathe_backend_ctx* ctx, float* g, int64_t n, float s);  // g *= s
  // PyTorch's AdamW step t (>= 1) with decoupled weight decay on p, moments m and v
  void (*adamw_update)(lathe_backend_ctx* ctx, float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr,
                       float beta1, float beta2, float eps, float weight_decay);
};

// ---- the registry: the backends compiled in and usable on this machine, the CPU one first (the
// engine's only global). A device backend whose device is missing is left out (see backend.cpp).
const lathe_backend* lathe_backend_cpu();
int lathe_backend_count();
const lathe_backend* lathe_backend_get(int index);          // null outside [0, count)
const lathe_backend* lathe_backend_by_name(const char* name);  // null when none has that name
// The name of the first op a table leaves null, or null when it has them all.
const char* lathe_backend_missing_op(const lathe_backend* backend);

namespace lathe {

// The backend lathe_model_config.backend names: null, "" or "auto": the registry's first device
// backend, else the CPU one; otherwise the one of that name. Throws Error(LATHE_ERR_UNSUPPORTED)
// naming the registered ones when there is none (an unknown name, or "cuda" where this build has
// no CUDA or this machine no GPU).
const lathe_backend* choose_backend(const char* name);

// A backend instance as a model holds it: the table and the state it made. Owns the state
// (ctx_free in the destructor, the one place it is freed); neither copied nor moved.
struct Backend {
  const lathe_backend* ops = nullptr;
  lathe_backend_ctx* ctx = nullptr;

  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  ~Backend() { reset(nullptr, nullptr); }
  // Frees the current state, then makes ops's (ops null: none).
  void reset(const lathe_backend* ops, ThreadPool* pool);
};

// An array of n T in memory of a backend: the one owner of an alloc'd block, freed with release
// in its destructor (or reset). Moved, never copied. Unlike std::vector, resize keeps no contents:
// the model overwrites whatever it resizes. A block is kept while the size shrinks and replaced
// (old contents dropped) when it must grow. The host reads or writes the elements only through
// upload/download (assign, to_host), never through data(), which is for the backend's ops.
// Every Buffer of a model must be freed before the model's Backend (lathe_model declares the
// backend first, so it is destroyed last).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      swap(o);
    }
    return *this;
  }
  ~Buffer() { reset(); }

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  uint64_t bytes() const { return sizeof(T) * static_cast<uint64_t>(n_); }

  // n elements on `be` (uninitialised unless the block was big enough, then its old values).
  void resize(const Backend& be, size_t n) {
    if (be_ && be_ != &be) reset();
    be_ = &be;
    if (n > cap_) {
      reset();
      p_ = static_cast<T*>(be.ops->alloc(be.ctx, sizeof(T) * n));
      cap_ = n;
    }
    n_ = n;
  }
  // Frees the block (size and capacity 0).
  void reset() {
    release_block();
    n_ = 0;
  }
  // n elements copied from the host.
  void assign(const Backend& be, const T* host, size_t n) {
    resize(be, n);
    if (n) be.ops->upload(be.ctx, p_, host, sizeof(T) * n);
  }
  // Every element copied to the host (`host` holds size() T).
  void to_host(T* host) const {
    if (n_) be_->ops->download(be_->ctx, host, p_, sizeof(T) * n_);
  }
  std::vector<T> to_host() const {
    std::vector<T> v(n_);
    to_host(v.data());
    return v;
  }

 private:
  void release_block() {
    if (p_) be_->ops->release(be_->ctx, p_);
    p_ = nullptr;
    cap_ = 0;
  }
  void swap(Buffer& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
  }
  const Backend* be_ = nullptr;
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// The three GEMM shapes the model uses, on packed row-major operands.
// C[M,N] = alpha A[M,K] B[K,N] + beta C
inline void gemm_nn(const Backend& b, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  b.ops->gemm(b.ctx, false, false, M, N, K, alpha, A, K, B, N, beta, C, N);
}
// C[M,N] = alpha A[M,K] B[N,K]^T + beta C   (y = x W^T)
inline void gemm_nt(const Backend& b, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  b.ops->gemm(b.ctx, false, true, M, N, K, alpha, A, K, B, K, beta, C, N);
}
// C[M,N] = alpha A[K,M]^T B[K,N] + beta C   (dW = dy^T x)
inline void gemm_tn(const Backend& b, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  b.ops->gemm(b.ctx, true, false, M, N, K, alpha, A, M, B, N, beta, C, N);
}

}  // namespace lathe
