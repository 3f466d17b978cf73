// test_backend_memory.cpp — the model never touches backend memory from the host.
//
// "handles" is a backend of this test binary only (not in the engine's registry): its alloc
// returns addresses inside a PROT_NONE reservation, so a host load or store through one of them
// crashes the test, and keeps the real bytes in ordinary blocks elsewhere. upload, download and
// every op translate their pointers to those blocks and call the CPU op on them. Each pointer an
// op takes is checked first, against backend.h's contract: one documented as memory of the backend
// must lie, with the extent the op will touch (computed from the shapes), inside one live block;
// one documented as host (token ids, labels, positions, segments, masks, row lists, the loss sum,
// the correct count) must not be a handle. A violation throws (the C API call fails with its
// message) and is recorded, and the tests require none. Fresh blocks are filled with 0xFF bytes
// (NaN), so a model that read memory it never wrote would differ; ctx_free requires every block
// to have been released (nothing leaks past the model).
//
// On it, the golden cases (test/golden/, model folders from `node dev/golden-models.mjs`; missing
// ones skip as in test_golden.cpp) run as LoRA on an f32 base loaded from the model's
// .safetensors file, on a bf16 base, and as QLoRA (NF4 q/k/v/o/gate in 256-element tiles, bf16
// up/down, dropout 0.1, training, gradient checkpointing); each run must give the same bits as
// the CPU backend: every step's loss, label count, correct count, gradient norm and activation
// bytes; step 1's logits and LoRA gradients; after 3 AdamW steps every LoRA tensor, its moments,
// the step count and the RNG state; the hidden states of every layer; the base memory report;
// and a checkpoint of the CPU run restored (lathe_lora_set, lathe_adamw_state_set, counters) into
// a fresh model on each backend, which then takes the same 4th step.
#include <sys/mman.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "backend.h"
#include "common.h"
#include "golden_case.h"
#include "model.h"
#include "nf4.h"
#include "test_util.h"

namespace {

// ---- the handle address space: one PROT_NONE reservation, handed out by a bump pointer with a
// 256-byte unmapped gap after each block (so a pointer past a block's end is no other block's)

constexpr size_t kSpaceBytes = size_t{64} << 30;
constexpr size_t kAlign = 256;

struct Space {
  uintptr_t base = 0;
  size_t next = 0;
  std::mutex mu;
  Space() {
    void* p = mmap(nullptr, kSpaceBytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) base = reinterpret_cast<uintptr_t>(p);
  }
  bool contains(const void* p) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    return base && a >= base && a < base + kSpaceBytes;
  }
  uintptr_t take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    const size_t span = (bytes + kAlign - 1) / kAlign * kAlign + kAlign;
    if (!base || next + span > kSpaceBytes) return 0;
    const uintptr_t a = base + next;
    next += span;
    return a;
  }
};

Space& space() {
  static Space s;
  return s;
}

// Every violation of backend.h's contract seen, in order; the tests require none.
std::vector<std::string>& violations() {
  static std::vector<std::string> v;
  return v;
}

[[noreturn]] void violate(const std::string& what) {
  violations().push_back(what);
  throw lathe::Error(LATHE_ERR_INTERNAL, "handles backend: " + what);
}

struct Block {
  size_t bytes = 0;
  unsigned char* real = nullptr;
};

struct HandleState {
  const lathe_backend* cpu = lathe_backend_cpu();
  lathe_backend_ctx* cpu_ctx = nullptr;  // the CPU backend's state the translated ops run on
  lathe::Backend host;                   // host copies of NF4 arrays for the CPU matmuls
  std::map<uintptr_t, Block> blocks;     // handle -> its real bytes
};

HandleState& st(lathe_backend_ctx* ctx) { return *reinterpret_cast<HandleState*>(ctx); }

// The real address of [p, p + bytes) of backend memory; `what` names the op and argument.
template <class T>
T* real(lathe_backend_ctx* ctx, T* p, int64_t count, const char* what) {
  const size_t bytes = sizeof(T) * static_cast<size_t>(std::max<int64_t>(0, count));
  if (!p) {
    if (bytes == 0) return nullptr;
    violate(std::string(what) + ": null where " + std::to_string(bytes) + " bytes of backend memory are read or written");
  }
  if (!space().contains(p)) violate(std::string(what) + ": a host pointer where backend memory is documented");
  auto& blocks = st(ctx).blocks;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = blocks.upper_bound(a);
  if (it == blocks.begin()) violate(std::string(what) + ": not inside any live block (freed, or never allocated)");
  --it;
  if (a + bytes > it->first + it->second.bytes)
    violate(std::string(what) + ": " + std::to_string(bytes) + " bytes from offset " + std::to_string(a - it->first) + " run past the end of a block of " +
            std::to_string(it->second.bytes) + " bytes (or not inside any live block)");
  return reinterpret_cast<T*>(it->second.real + (a - it->first));
}

// A pointer documented as host memory (null allowed where `may_be_null`).
template <class T>
T* host(T* p, bool may_be_null, const char* what) {
  if (!p && !may_be_null) violate(std::string(what) + ": null");
  if (p && space().contains(p)) violate(std::string(what) + ": backend memory where host memory is documented");
  return p;
}

template <class T>
int32_t max_of(const T* v, int n) {
  int32_t m = -1;
  for (int i = 0; i < n; ++i) m = std::max<int32_t>(m, v[i]);
  return m;
}

// Elements a strided [rows, cols] operand spans (ld >= cols).
int64_t span(int64_t rows, int64_t cols, int64_t ld) { return rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0; }

// ---- the table: memory

lathe_backend_ctx* h_ctx_init(lathe::ThreadPool* pool) {
  auto* s = new HandleState();
  s->cpu_ctx = s->cpu->ctx_init(pool);
  s->host.reset(lathe_backend_cpu(), pool);
  return reinterpret_cast<lathe_backend_ctx*>(s);
}
void h_ctx_free(lathe_backend_ctx* ctx) {
  HandleState* s = &st(ctx);
  if (!s->blocks.empty()) {
    size_t bytes = 0;
    for (auto& [a, b] : s->blocks) bytes += b.bytes;
    violations().push_back("ctx_free: " + std::to_string(s->blocks.size()) + " blocks (" + std::to_string(bytes) + " bytes) never released");
  }
  for (auto& [a, b] : s->blocks) std::free(b.real);
  s->cpu->ctx_free(s->cpu_ctx);
  delete s;
}
void* h_alloc(lathe_backend_ctx* ctx, size_t bytes) {
  if (bytes == 0) return nullptr;
  const uintptr_t a = space().take(bytes);
  if (!a) throw lathe::Error(LATHE_ERR_OUT_OF_MEMORY, "handles backend: address space exhausted");
  const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  auto* r = static_cast<unsigned char*>(std::aligned_alloc(kAlign, rounded));
  if (!r) throw lathe::Error(LATHE_ERR_OUT_OF_MEMORY, "handles backend: cannot allocate " + std::to_string(bytes) + " bytes");
  std::memset(r, 0xFF, rounded);  // uninitialised: NaN in every float
  st(ctx).blocks[a] = Block{bytes, r};
  return reinterpret_cast<void*>(a);
}
void h_release(lathe_backend_ctx* ctx, void* p) {
  if (!p) return;
  auto& blocks = st(ctx).blocks;
  auto it = blocks.find(reinterpret_cast<uintptr_t>(p));
  if (it == blocks.end()) {  // no throw: release runs in destructors
    violations().push_back("release: not a live block's address");
    return;
  }
  std::free(it->second.real);
  blocks.erase(it);
}
void h_upload(lathe_backend_ctx* ctx, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(real(ctx, static_cast<unsigned char*>(dst), bytes, "upload dst"), host(src, false, "upload src"), bytes);
}
void h_download(lathe_backend_ctx* ctx, void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host(dst, false, "download dst"), real(ctx, static_cast<const unsigned char*>(src), bytes, "download src"), bytes);
}

// ---- the table: ops (translate, then the CPU op)

#define CPU(op, ...) st(ctx).cpu->op(st(ctx).cpu_ctx, __VA_ARGS__)

void h_copy(lathe_backend_ctx* ctx, float* dst, const float* src, int64_t n) { CPU(copy, real(ctx, dst, n, "copy dst"), real(ctx, src, n, "copy src"), n); }
void h_zero(lathe_backend_ctx* ctx, float* dst, int64_t n) { CPU(zero, real(ctx, dst, n, "zero dst"), n); }
void h_add(lathe_backend_ctx* ctx, float* y, const float* x, int64_t n) { CPU(add, real(ctx, y, n, "add y"), real(ctx, x, n, "add x"), n); }
void h_add_bias(lathe_backend_ctx* ctx, float* y, const float* bias, int64_t rows, int cols) {
  CPU(add_bias, real(ctx, y, rows * cols, "add_bias y"), real(ctx, bias, cols, "add_bias bias"), rows, cols);
}
void h_gather_rows(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  host(rows, false, "gather_rows rows");
  CPU(gather_rows, real(ctx, dst, int64_t{count} * cols, "gather_rows dst"), real(ctx, src, int64_t{max_of(rows, count) + 1} * cols, "gather_rows src"),
      rows, count, cols);
}
void h_scatter_rows(lathe_backend_ctx* ctx, float* dst, const float* src, const int32_t* rows, int count, int cols) {
  host(rows, false, "scatter_rows rows");
  CPU(scatter_rows, real(ctx, dst, int64_t{max_of(rows, count) + 1} * cols, "scatter_rows dst"), real(ctx, src, int64_t{count} * cols, "scatter_rows src"),
      rows, count, cols);
}
void h_gemm(lathe_backend_ctx* ctx, bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
            float* C, int ldc) {
  const float* a = real(ctx, A, ta ? span(K, M, lda) : span(M, K, lda), "gemm A");
  const float* b = real(ctx, B, tb ? span(N, K, ldb) : span(K, N, ldb), "gemm B");
  CPU(gemm, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, real(ctx, C, span(M, N, ldc), "gemm C"), ldc);
}
// The NF4 arrays copied from their handles into host Buffers for the CPU matmul (checked extents).
lathe::nf4::Tensor4 nf4_host(lathe_backend_ctx* ctx, const lathe::nf4::Tensor4& W) {
  const int64_t n = W.rows * W.cols, nb = (n + lathe::nf4::kBlock - 1) / lathe::nf4::kBlock;
  const int64_t ns = (nb + lathe::nf4::kAbsmaxBlock - 1) / lathe::nf4::kAbsmaxBlock;
  if (static_cast<int64_t>(W.codes.size()) != (n + 1) / 2 || static_cast<int64_t>(W.absmax_q.size()) != nb ||
      static_cast<int64_t>(W.absmax_scale.size()) != ns)
    violate("nf4 matmul: array sizes do not match the weight's shape");
  lathe::nf4::Tensor4 h;
  h.rows = W.rows;
  h.cols = W.cols;
  h.offset = W.offset;
  h.tile_elems = W.tile_elems;
  h.bf16_tiles = W.bf16_tiles;
  const lathe::Backend& be = st(ctx).host;
  h.codes.assign(be, real(ctx, W.codes.data(), (n + 1) / 2, "nf4 codes"), (n + 1) / 2);
  h.absmax_q.assign(be, real(ctx, W.absmax_q.data(), nb, "nf4 absmax_q"), nb);
  h.absmax_scale.assign(be, real(ctx, W.absmax_scale.data(), ns, "nf4 absmax_scale"), ns);
  return h;
}
void h_nf4_matmul_nt(lathe_backend_ctx* ctx, int N, const float* x, const lathe::nf4::Tensor4& W, float* y) {
  const lathe::nf4::Tensor4 h = nf4_host(ctx, W);
  CPU(nf4_matmul_nt, N, real(ctx, x, N * W.cols, "nf4_matmul_nt x"), h, real(ctx, y, N * W.rows, "nf4_matmul_nt y"));
}
void h_nf4_matmul_nn(lathe_backend_ctx* ctx, int N, const float* dy, const lathe::nf4::Tensor4& W, float* dx, bool accumulate) {
  const lathe::nf4::Tensor4 h = nf4_host(ctx, W);
  CPU(nf4_matmul_nn, N, real(ctx, dy, N * W.rows, "nf4_matmul_nn dy"), h, real(ctx, dx, N * W.cols, "nf4_matmul_nn dx"), accumulate);
}
void h_bf16_matmul(lathe_backend_ctx* ctx, bool trans_w, int M, int N, int K, const float* x, const uint16_t* W, int ldw, bool accumulate, float* y) {
  const uint16_t* w = real(ctx, W, trans_w ? span(N, K, ldw) : span(K, N, ldw), "bf16_matmul W");
  CPU(bf16_matmul, trans_w, M, N, K, real(ctx, x, int64_t{M} * K, "bf16_matmul x"), w, ldw, accumulate, real(ctx, y, int64_t{M} * N, "bf16_matmul y"));
}
void h_dropout_forward(lathe_backend_ctx* ctx, float* out, const float* x, const uint8_t* mask, float keep, int64_t n) {
  CPU(dropout_forward, real(ctx, out, n, "dropout_forward out"), real(ctx, x, n, "dropout_forward x"), host(mask, false, "dropout_forward mask"), keep, n);
}
void h_dropout_backward(lathe_backend_ctx* ctx, float* dx, const float* d, const uint8_t* mask, float keep, int64_t n) {
  CPU(dropout_backward, real(ctx, dx, n, "dropout_backward dx"), real(ctx, d, n, "dropout_backward d"), host(mask, false, "dropout_backward mask"), keep,
      n);
}
void h_embedding_forward(lathe_backend_ctx* ctx, float* x, const int32_t* tokens, const float* E, int N, int H) {
  host(tokens, false, "embedding_forward tokens");
  CPU(embedding_forward, real(ctx, x, int64_t{N} * H, "embedding_forward x"), tokens, real(ctx, E, int64_t{max_of(tokens, N) + 1} * H, "embedding_forward E"),
      N, H);
}
void h_rmsnorm_forward(lathe_backend_ctx* ctx, float* y, float* rstd, const float* x, const float* w, int N, int H, float eps) {
  const int64_t n = int64_t{N} * H;
  CPU(rmsnorm_forward, real(ctx, y, n, "rmsnorm_forward y"), real(ctx, rstd, N, "rmsnorm_forward rstd"), real(ctx, x, n, "rmsnorm_forward x"),
      real(ctx, w, H, "rmsnorm_forward w"), N, H, eps);
}
void h_rmsnorm_backward(lathe_backend_ctx* ctx, float* dx, bool accumulate, const float* dy, const float* x, const float* w, const float* rstd, int N,
                        int H) {
  const int64_t n = int64_t{N} * H;
  CPU(rmsnorm_backward, real(ctx, dx, n, "rmsnorm_backward dx"), accumulate, real(ctx, dy, n, "rmsnorm_backward dy"), real(ctx, x, n, "rmsnorm_backward x"),
      real(ctx, w, H, "rmsnorm_backward w"), real(ctx, rstd, N, "rmsnorm_backward rstd"), N, H);
}
void h_rope_forward(lathe_backend_ctx* ctx, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  CPU(rope_forward, real(ctx, x, int64_t{N} * heads * d, "rope_forward x"), host(pos, false, "rope_forward pos"), real(ctx, inv_freq, d / 2, "rope inv_freq"),
      N, heads, d);
}
void h_rope_backward(lathe_backend_ctx* ctx, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  CPU(rope_backward, real(ctx, dx, int64_t{N} * heads * d, "rope_backward dx"), host(pos, false, "rope_backward pos"),
      real(ctx, inv_freq, d / 2, "rope inv_freq"), N, heads, d);
}
void h_attention_forward(lathe_backend_ctx* ctx, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg, int B, int T,
                         int nh, int nkv, int d) {
  const int64_t nq = int64_t{B} * T * nh * d, nk = int64_t{B} * T * nkv * d;
  CPU(attention_forward, real(ctx, out, nq, "attention_forward out"), real(ctx, lse, int64_t{B} * nh * T, "attention_forward lse"),
      real(ctx, q, nq, "attention_forward q"), real(ctx, k, nk, "attention_forward k"), real(ctx, v, nk, "attention_forward v"),
      host(seg, true, "attention_forward seg"), B, T, nh, nkv, d);
}
void h_attention_backward(lathe_backend_ctx* ctx, float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out, const float* lse,
                          const float* q, const float* k, const float* v, const int32_t* seg, int B, int T, int nh, int nkv, int d) {
  const int64_t nq = int64_t{B} * T * nh * d, nk = int64_t{B} * T * nkv * d;
  CPU(attention_backward, real(ctx, dq, nq, "attention_backward dq"), real(ctx, dk, nk, "attention_backward dk"), real(ctx, dv, nk, "attention_backward dv"),
      real(ctx, scratch, 2 * nq, "attention_backward scratch"), real(ctx, dout, nq, "attention_backward dout"), real(ctx, out, nq, "attention_backward out"),
      real(ctx, lse, int64_t{B} * nh * T, "attention_backward lse"), real(ctx, q, nq, "attention_backward q"), real(ctx, k, nk, "attention_backward k"),
      real(ctx, v, nk, "attention_backward v"), host(seg, true, "attention_backward seg"), B, T, nh, nkv, d);
}
void h_swiglu_forward(lathe_backend_ctx* ctx, float* a, const float* g, const float* u, int64_t n) {
  CPU(swiglu_forward, real(ctx, a, n, "swiglu_forward a"), real(ctx, g, n, "swiglu_forward g"), real(ctx, u, n, "swiglu_forward u"), n);
}
void h_swiglu_backward(lathe_backend_ctx* ctx, float* dg, float* du, const float* da, const float* g, const float* u, int64_t n) {
  CPU(swiglu_backward, real(ctx, dg, n, "swiglu_backward dg"), real(ctx, du, n, "swiglu_backward du"), real(ctx, da, n, "swiglu_backward da"),
      real(ctx, g, n, "swiglu_backward g"), real(ctx, u, n, "swiglu_backward u"), n);
}
void h_cross_entropy(lathe_backend_ctx* ctx, float* logits, const int32_t* labels, int rows, int V, float coef, bool backward, double* loss_sum,
                     int64_t* correct) {
  CPU(cross_entropy, real(ctx, logits, int64_t{rows} * V, "cross_entropy logits"), host(labels, false, "cross_entropy labels"), rows, V, coef, backward,
      host(loss_sum, false, "cross_entropy loss_sum"), host(correct, true, "cross_entropy correct"));
}
double h_sumsq(lathe_backend_ctx* ctx, const float* g, int64_t n) { return CPU(sumsq, real(ctx, g, n, "sumsq g"), n); }
void h_scale(lathe_backend_ctx* ctx, float* g, int64_t n, float s) { CPU(scale, real(ctx, g, n, "scale g"), n, s); }
void h_adamw_update(lathe_backend_ctx* ctx, float* p, const float* g, float* m, float* v, int64_t n, int64_t t, float lr, float beta1, float beta2,
                    float eps, float weight_decay) {
  CPU(adamw_update, real(ctx, p, n, "adamw p"), real(ctx, g, n, "adamw g"), real(ctx, m, n, "adamw m"), real(ctx, v, n, "adamw v"), n, t, lr, beta1, beta2,
      eps, weight_decay);
}

#undef CPU

const lathe_backend* handles() {
  static const lathe_backend table = [] {
    lathe_backend b{};
    b.name = "handles";
    b.ctx_init = h_ctx_init;
    b.ctx_free = h_ctx_free;
    b.host_memory = false;
    b.alloc = h_alloc;
    b.release = h_release;
    b.upload = h_upload;
    b.download = h_download;
    b.copy = h_copy;
    b.zero = h_zero;
    b.add = h_add;
    b.add_bias = h_add_bias;
    b.gather_rows = h_gather_rows;
    b.scatter_rows = h_scatter_rows;
    b.gemm = h_gemm;
    b.nf4_matmul_nt = h_nf4_matmul_nt;
    b.nf4_matmul_nn = h_nf4_matmul_nn;
    b.bf16_matmul = h_bf16_matmul;
    b.dropout_forward = h_dropout_forward;
    b.dropout_backward = h_dropout_backward;
    b.embedding_forward = h_embedding_forward;
    b.rmsnorm_forward = h_rmsnorm_forward;
    b.rmsnorm_backward = h_rmsnorm_backward;
    b.rope_forward = h_rope_forward;
    b.rope_backward = h_rope_backward;
    b.attention_forward = h_attention_forward;
    b.attention_backward = h_attention_backward;
    b.swiglu_forward = h_swiglu_forward;
    b.swiglu_backward = h_swiglu_backward;
    b.cross_entropy = h_cross_entropy;
    b.sumsq = h_sumsq;
    b.scale = h_scale;
    b.adamw_update = h_adamw_update;
    return b;
  }();
  return &table;
}

// ---- a golden case, run on one backend

using golden::Json;

using golden::Case;
using golden::load_case;

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    std::vector<Case> v;
    for (const std::string& name : golden::case_names()) {
      Case k;
      if (load_case(name, k)) v.push_back(std::move(k));
    }
    return v;
  }();
  return all;
}

// lora: f32 base loaded from the .safetensors file, eval mode; bf16: every linear in bf16, eval;
// qlora: q/k/v/o/gate NF4 (256-element tiles), up/down bf16, dropout 0.1, training, checkpointing.
enum class Variant { Lora, Bf16, Qlora };
const char* variant_name(Variant v) { return v == Variant::Lora ? "lora" : v == Variant::Bf16 ? "bf16" : "qlora"; }

using ModelPtr = std::unique_ptr<lathe_model, void (*)(lathe_model*)>;

// Everything a user can read back from a run, as named arrays of floats (integers widened bit
// for bit into the vector as raw words) so two runs compare with one memcmp each.
struct Run {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  std::string error;
  void add(const std::string& name, std::vector<float> v) { out.emplace_back(name, std::move(v)); }
  template <class T>
  void add_words(const std::string& name, const T* p, size_t n) {
    std::vector<float> v((sizeof(T) * n + sizeof(float) - 1) / sizeof(float));
    std::memcpy(v.data(), p, sizeof(T) * n);
    add(name, std::move(v));
  }
};

// Calls the C API; the first failure is kept in `error`.
struct Caller {
  std::string& error;
  char err[512];
  bool operator()(lathe_status s) {
    if (s != LATHE_OK && error.empty()) error = std::string(lathe_status_string(s)) + ": " + err;
    return s == LATHE_OK;
  }
};

ModelPtr make_model(const Case& k, const lathe_backend* backend, Variant variant, std::string& error) {
  ModelPtr m(new lathe_model(), lathe_model_free);
  try {
    lathe::model_init(*m, k.config, backend);
  } catch (const std::exception& e) {
    error = std::string("model_init: ") + e.what();
    return {nullptr, lathe_model_free};
  }
  Caller ok{error, {}};
  if (variant == Variant::Lora) {
    ok(lathe_model_load_safetensors(m.get(), k.model_file.c_str(), ok.err, sizeof ok.err));
  } else {
    for (auto& [name, v] : k.weights) ok(lathe_model_set_weight(m.get(), name.c_str(), v.data(), v.size(), ok.err, sizeof ok.err));
  }
  lathe_lora_config lc = k.lora;
  if (variant == Variant::Bf16) ok(lathe_model_convert_bf16(m.get(), 0xFF, ok.err, sizeof ok.err));  // the 7 linears and the head
  if (variant == Variant::Qlora) {
    lc.dropout = 0.1f;
    lc.seed = 11;
    ok(lathe_model_quantize_nf4(m.get(), LATHE_LORA_Q | LATHE_LORA_K | LATHE_LORA_V | LATHE_LORA_O | LATHE_LORA_GATE, ok.err, sizeof ok.err));
    ok(lathe_model_convert_bf16(m.get(), LATHE_LORA_UP | LATHE_LORA_DOWN, ok.err, sizeof ok.err));
    for (auto& kv : m->weights)
      if (kv.second.q4) kv.second.q4->tile_elems = 256;
    ok(lathe_model_set_gradient_checkpointing(m.get(), 1, ok.err, sizeof ok.err));
  }
  ok(lathe_lora_init(m.get(), &lc, ok.err, sizeof ok.err));
  for (auto& [name, v] : k.init) ok(lathe_lora_set(m.get(), name.c_str(), v.data(), v.size(), ok.err, sizeof ok.err));
  if (!error.empty()) return {nullptr, lathe_model_free};
  return m;
}

// One step (zero grad, forward/backward, clip + AdamW) and what it reports.
void step(const Case& k, lathe_model* m, Variant variant, int s, bool logits_and_grads, Run& r) {
  Caller ok{r.error, {}};
  float loss = 0, norm = 0;
  int64_t count = 0, correct = 0;
  uint64_t peak = 0;
  std::vector<float> logits(logits_and_grads ? static_cast<size_t>(k.B) * k.T * k.config.vocab_size : 0);
  ok(lathe_zero_grad(m, ok.err, sizeof ok.err));
  ok(lathe_forward_backward(m, k.tokens.data(), k.labels.data(), k.positions.data(), k.segments.empty() ? nullptr : k.segments.data(), k.B, k.T, 1,
                            variant == Variant::Qlora, 1.0f, &loss, &count, logits_and_grads ? logits.data() : nullptr, ok.err, sizeof ok.err));
  ok(lathe_model_last_correct(m, &correct, ok.err, sizeof ok.err));
  ok(lathe_model_activation_bytes(m, &peak, ok.err, sizeof ok.err));
  const std::string at = "step " + std::to_string(s + 1) + " ";
  r.add(at + "loss", {loss});
  r.add_words(at + "label count", &count, 1);
  r.add_words(at + "correct count", &correct, 1);
  r.add_words(at + "activation bytes", &peak, 1);
  if (logits_and_grads) {
    r.add(at + "logits", std::move(logits));
    for (auto& [name, v] : k.init) {
      std::vector<float> g(v.size());
      ok(lathe_lora_grad(m, name.c_str(), g.data(), g.size(), ok.err, sizeof ok.err));
      r.add(at + "grad " + name, std::move(g));
    }
  }
  ok(lathe_adamw_step(m, k.lr, k.beta1, k.beta2, k.eps, k.weight_decay, k.max_grad_norm, &norm, ok.err, sizeof ok.err));
  r.add(at + "gradient norm", {norm});
}

// The training state a checkpoint holds (LoRA tensors, moments, step count, RNG), read back.
void read_state(const Case& k, lathe_model* m, const std::string& at, Run& r) {
  Caller ok{r.error, {}};
  for (auto& [name, v] : k.init) {
    std::vector<float> p(v.size()), mo(v.size()), vo(v.size());
    ok(lathe_lora_get(m, name.c_str(), p.data(), p.size(), ok.err, sizeof ok.err));
    ok(lathe_adamw_state_get(m, name.c_str(), mo.data(), vo.data(), v.size(), ok.err, sizeof ok.err));
    r.add(at + "param " + name, std::move(p));
    r.add(at + "adam m " + name, std::move(mo));
    r.add(at + "adam v " + name, std::move(vo));
  }
  int64_t t = 0;
  uint64_t rng[4] = {0, 0, 0, 0};
  ok(lathe_adamw_step_count_get(m, &t, ok.err, sizeof ok.err));
  ok(lathe_rng_state_get(m, rng, ok.err, sizeof ok.err));
  r.add_words(at + "adam step", &t, 1);
  r.add_words(at + "rng", rng, 4);
}

// `count` sequences of the batch's first row: hidden states of every layer.
void read_hidden(const Case& k, lathe_model* m, Run& r) {
  Caller ok{r.error, {}};
  const std::vector<int32_t> lengths = {k.T / 2, k.T - k.T / 2};
  const size_t H = k.config.hidden_size;
  std::vector<float> h(k.T * H);
  for (int layer = 0; layer <= k.config.num_layers; ++layer) {
    ok(lathe_hidden_states(m, k.tokens.data(), lengths.data(), 2, layer, h.data(), h.size(), ok.err, sizeof ok.err));
    r.add("hidden states of layer " + std::to_string(layer), h);
  }
}

// The whole run on `backend`; `checkpoint` (a CPU run's state after the steps), when given, is
// restored into a fresh model on `backend`, which takes one more step.
Run run(const Case& k, const lathe_backend* backend, Variant variant, const Run* checkpoint) {
  Run r;
  ModelPtr m = make_model(k, backend, variant, r.error);
  if (!m) return r;
  Caller ok{r.error, {}};
  uint64_t base[2] = {0, 0};
  ok(lathe_model_memory(m.get(), &base[0], &base[1], ok.err, sizeof ok.err));
  r.add_words("base memory", base, 2);
  for (int s = 0; s < k.steps && r.error.empty(); ++s) step(k, m.get(), variant, s, s == 0, r);
  read_state(k, m.get(), "after the steps: ", r);
  read_hidden(k, m.get(), r);
  if (!checkpoint || !r.error.empty()) return r;
  // resume: the CPU run's state into a fresh model on this backend, then the same next step
  ModelPtr resumed = make_model(k, backend, variant, r.error);
  if (!resumed) return r;
  auto find = [&](const std::string& name) -> const std::vector<float>& {
    for (auto& [n, v] : checkpoint->out)
      if (n == name) return v;
    static const std::vector<float> none;
    return none;
  };
  const std::string at = "after the steps: ";
  for (auto& [name, v] : k.init) {
    const auto& p = find(at + "param " + name);
    const auto& mo = find(at + "adam m " + name);
    const auto& vo = find(at + "adam v " + name);
    ok(lathe_lora_set(resumed.get(), name.c_str(), p.data(), p.size(), ok.err, sizeof ok.err));
    ok(lathe_adamw_state_set(resumed.get(), name.c_str(), mo.data(), vo.data(), mo.size(), ok.err, sizeof ok.err));
  }
  int64_t t = 0;
  uint64_t rng[4];
  std::memcpy(&t, find(at + "adam step").data(), sizeof t);
  std::memcpy(rng, find(at + "rng").data(), sizeof rng);
  ok(lathe_adamw_step_count_set(resumed.get(), t, ok.err, sizeof ok.err));
  ok(lathe_rng_state_set(resumed.get(), rng, ok.err, sizeof ok.err));
  Run next;
  step(k, resumed.get(), variant, k.steps, true, next);
  read_state(k, resumed.get(), "resumed: ", next);
  if (!next.error.empty() && r.error.empty()) r.error = "resumed: " + next.error;
  for (auto& kv : next.out) r.out.push_back(std::move(kv));
  return r;
}

// "" when a and b hold the same bits, else the first difference.
std::string first_difference(const Run& cpu, const Run& got) {
  if (!cpu.error.empty()) return "cpu run failed: " + cpu.error;
  if (!got.error.empty()) return "run failed: " + got.error;
  if (cpu.out.size() != got.out.size()) return "different output lists";
  for (size_t i = 0; i < cpu.out.size(); ++i) {
    const auto& [name, c] = cpu.out[i];
    const auto& g = got.out[i].second;
    if (c.size() != g.size()) return name + ": different sizes";
    for (size_t j = 0; j < c.size(); ++j)
      if (std::memcmp(&c[j], &g[j], sizeof(float)) != 0)
        return name + ": first difference at [" + std::to_string(j) + "]: cpu " + std::to_string(c[j]) + ", got " + std::to_string(g[j]);
  }
  return "";
}

}  // namespace

TEST(the_handles_backend_refuses_host_pointers_as_backend_memory_and_handles_as_host_memory) {
  CHECK(space().base != 0);
  CHECK(lathe_backend_missing_op(handles()) == nullptr);
  lathe::ThreadPool pool(1);
  lathe::Backend be;
  be.reset(handles(), &pool);
  violations().clear();
  std::vector<float> host_v(16, 1.0f);
  lathe::Buffer<float> buf;
  buf.assign(be, host_v.data(), host_v.size());
  CHECK(space().contains(buf.data()));
  CHECK(buf.to_host() == host_v);
  auto throws = [](auto&& f) {
    try {
      f();
    } catch (const lathe::Error& e) {
      return e.status == LATHE_ERR_INTERNAL;
    }
    return false;
  };
  // a host pointer where backend memory is documented, and the reverse
  CHECK(throws([&] { be.ops->copy(be.ctx, host_v.data(), buf.data(), 16); }));
  CHECK(throws([&] { be.ops->download(be.ctx, buf.data(), buf.data(), 16); }));
  const uint8_t* as_mask = reinterpret_cast<const uint8_t*>(buf.data());
  CHECK(throws([&] { be.ops->dropout_forward(be.ctx, buf.data(), buf.data(), as_mask, 1.0f, 16); }));
  // past the end of its block, and a freed block
  CHECK(throws([&] { be.ops->zero(be.ctx, buf.data(), 17); }));
  CHECK(throws([&] { be.ops->zero(be.ctx, buf.data() + 8, 9); }));
  be.ops->zero(be.ctx, buf.data() + 8, 8);
  float* stale = buf.data();
  buf.reset();
  CHECK(throws([&] { be.ops->zero(be.ctx, stale, 1); }));
  CHECK(violations().size() == 6);
  // a fresh block reads as NaN until written
  lathe::Buffer<float> fresh;
  fresh.resize(be, 4);
  const std::vector<float> v = fresh.to_host();
  CHECK(std::isnan(v[0]) && std::isnan(v[3]));
  violations().clear();
}

TEST(a_model_on_backend_memory_the_host_cannot_read_gives_the_cpu_backends_bits_on_the_golden_cases) {
  if (cases().empty()) return;  // skipped (said above)
  violations().clear();
  int compared = 0;
  for (const Case& k : cases())
    for (Variant v : {Variant::Lora, Variant::Bf16, Variant::Qlora}) {
      const Run cpu = run(k, lathe_backend_cpu(), v, nullptr);
      const Run cpu_resumed = run(k, lathe_backend_cpu(), v, &cpu), got = run(k, handles(), v, &cpu);
      const std::string what = k.name + " " + variant_name(v);
      CHECK_MSG(cpu_resumed.error.empty() && cpu_resumed.out.size() > cpu.out.size(), what + ": " + cpu_resumed.error);
      const std::string d = first_difference(cpu_resumed, got);
      CHECK_MSG(d.empty(), what + ": " + d);
      compared += d.empty();
    }
  for (const std::string& v : violations()) CHECK_MSG(false, "backend memory contract: " + v);
  std::fprintf(stderr, "  %d case x variant runs on the handles backend: the CPU backend's bits, %zu contract violations\n", compared, violations().size());
  violations().clear();
}

TEST(a_cpu_model_reads_f32_weights_in_place_and_a_device_model_uploads_them_before_a_forward_and_frees_them_when_converted) {
  if (cases().empty()) return;
  const Case& k = cases()[0];
  std::string error;
  ModelPtr cpu = make_model(k, lathe_backend_cpu(), Variant::Lora, error);
  ModelPtr dev = make_model(k, handles(), Variant::Lora, error);
  CHECK_MSG(error.empty(), error);
  if (!cpu || !dev) return;
  // CPU: the weights' host values are the backend memory (no second copy).
  const lathe::Tensor& e = cpu->weights.at("model.embed_tokens.weight");
  CHECK(cpu->embed == e.data.data() && e.mem.empty());
  // Device: nothing uploaded until the first forward, then every f32 weight once.
  const lathe::Tensor& de = dev->weights.at("model.embed_tokens.weight");
  CHECK(dev->embed == nullptr && de.mem.empty());
  char err[512];
  std::vector<float> logits(static_cast<size_t>(k.B) * k.T * k.config.vocab_size);
  CHECK_OK(lathe_forward_backward(dev.get(), k.tokens.data(), k.labels.data(), k.positions.data(), k.segments.empty() ? nullptr : k.segments.data(), k.B,
                                  k.T, 0, 0, 1.0f, nullptr, nullptr, logits.data(), err, sizeof err));
  CHECK(space().contains(dev->embed) && dev->embed == de.mem.data() && de.mem.size() == de.data.size());
  for (auto& [name, t] : dev->weights) CHECK_MSG(!t.stale && t.mem.size() == t.data.size(), name);
  // Setting a weight again uploads it again: the next forward sees the new values.
  const std::string first = "model.layers.1.self_attn.o_proj.weight";
  std::vector<float> halved = k.weights.at(first);
  for (float& w : halved) w *= 0.5f;
  CHECK_OK(lathe_model_set_weight(dev.get(), first.c_str(), halved.data(), halved.size(), err, sizeof err));
  CHECK(dev->weights.at(first).stale);
  std::vector<float> after(logits.size());
  CHECK_OK(lathe_forward_backward(dev.get(), k.tokens.data(), k.labels.data(), k.positions.data(), k.segments.empty() ? nullptr : k.segments.data(), k.B,
                                  k.T, 0, 0, 1.0f, nullptr, nullptr, after.data(), err, sizeof err));
  CHECK(!dev->weights.at(first).stale);
  CHECK(after != logits);
  // Quantising an uploaded weight frees its f32 copy on the device too; the CPU model, given the
  // same calls, computes the same bits.
  CHECK_OK(lathe_model_set_weight(cpu.get(), first.c_str(), halved.data(), halved.size(), err, sizeof err));
  for (lathe_model* m : {cpu.get(), dev.get()}) {
    CHECK_OK(lathe_model_quantize_nf4(m, LATHE_LORA_Q | LATHE_LORA_DOWN, err, sizeof err));
    CHECK_OK(lathe_model_convert_bf16(m, LATHE_LORA_UP, err, sizeof err));
  }
  const lathe::Tensor& q = dev->weights.at("model.layers.0.self_attn.q_proj.weight");
  const lathe::Tensor& up = dev->weights.at("model.layers.0.mlp.up_proj.weight");
  CHECK(q.q4 && q.mem.empty() && q.data.empty() && space().contains(q.q4->codes.data()));
  CHECK(!up.bf16.empty() && up.mem.empty() && space().contains(up.bf16.data()));
  std::vector<float> on_cpu(logits.size()), on_dev(logits.size());
  for (auto [m, out] : {std::pair{cpu.get(), &on_cpu}, std::pair{dev.get(), &on_dev}})
    CHECK_OK(lathe_forward_backward(m, k.tokens.data(), k.labels.data(), k.positions.data(), k.segments.empty() ? nullptr : k.segments.data(), k.B, k.T,
                                    1, 0, 1.0f, nullptr, nullptr, out->data(), err, sizeof err));
  CHECK(std::memcmp(on_cpu.data(), on_dev.data(), sizeof(float) * on_cpu.size()) == 0);
  CHECK(on_dev != after);  // the NF4 and bf16 weights are what it computed with
  CHECK(violations().empty());
}

TEST(lathe_backend_name_lists_the_usable_backends_cpu_first_and_the_config_picks_one_by_name) {
  CHECK(lathe_backend_name(0) != nullptr && std::string(lathe_backend_name(0)) == "cpu");
  CHECK(lathe_backend_name(-1) == nullptr);
  int32_t n = 0;
  while (lathe_backend_name(n)) ++n;
  CHECK(n == lathe_backend_count());
  const std::string first_device = n > 1 ? lathe_backend_name(1) : "cpu";
  bool has_cuda = false;
  for (int32_t i = 0; i < n; ++i) has_cuda |= std::string(lathe_backend_name(i)) == "cuda";
  lathe_model_config c = t::config_of(t::Spec{});
  char err[512];
  auto backend_of = [&](const char* name, std::string* error) -> std::string {
    std::string copy = name ? name : "";
    c.backend = name ? copy.c_str() : nullptr;
    lathe_model* m = nullptr;
    const lathe_status st = lathe_model_init(&c, &m, err, sizeof err);
    copy.assign(copy.size(), '?');  // the name need not outlive lathe_model_init
    if (st != LATHE_OK) {
      if (error) *error = std::string(lathe_status_string(st)) + " " + err;
      return "";
    }
    const std::string got = lathe_model_backend(m);
    lathe_model_free(m);
    return got;
  };
  CHECK(backend_of("cpu", nullptr) == "cpu");
  CHECK(backend_of(nullptr, nullptr) == first_device);
  CHECK(backend_of("", nullptr) == first_device);
  CHECK(backend_of("auto", nullptr) == first_device);
  CHECK(lathe_model_backend(nullptr) == nullptr);
  std::string error;
  CHECK(backend_of("tpu", &error).empty());
  CHECK_MSG(error.rfind("UNSUPPORTED lathe_model_init: config.backend: unknown backend 'tpu'; available here: cpu", 0) == 0, error);
  if (!has_cuda) {
    error.clear();
    CHECK(backend_of("cuda", &error).empty());
    CHECK_MSG(error.find("UNSUPPORTED") == 0 && error.find("'cuda'") != std::string::npos && error.find("available here: cpu") != std::string::npos, error);
  }
}
