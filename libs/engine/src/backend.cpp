// backend.cpp — the registry of backends (see backend.h) and lathe::Backend.
//
// The registry is built once, on first use (thread-safe static initialisation), from the
// backends compiled in and usable: CPU always, first; then the device backends in the order
// listed in Registry(). A device backend's table function returns null when this machine has no
// usable device for it (a CUDA build on a machine without a GPU): it is then left out, so the
// registry lists exactly what a model can be created on.
#include "backend.h"

#include <cstring>
#include <string>
#include <vector>

#include "common.h"

#ifdef LATHE_HAVE_CUDA
#include "cuda/backend_cuda.h"  // const lathe_backend* lathe_backend_cuda(); null without a usable GPU
#endif

namespace {

struct Registry {
  std::vector<const lathe_backend*> backends;
  Registry() {
    add(lathe_backend_cpu());
    // ---- device backends, in order of preference ("auto" picks the first of them)
#ifdef LATHE_HAVE_CUDA
    add(lathe_backend_cuda());
#endif
  }
  // b null: a backend compiled in whose device this machine lacks; left out.
  void add(const lathe_backend* b) {
    if (!b) return;
    if (const char* op = lathe_backend_missing_op(b))
      throw lathe::Error(LATHE_ERR_INTERNAL, std::string("backend '") + b->name + "' has no " + op + " op");
    backends.push_back(b);
  }
};

const Registry& registry() {
  static const Registry r;
  return r;
}

}  // namespace

int lathe_backend_count() { return static_cast<int>(registry().backends.size()); }

const lathe_backend* lathe_backend_get(int index) {
  const auto& b = registry().backends;
  return index >= 0 && index < static_cast<int>(b.size()) ? b[index] : nullptr;
}

const lathe_backend* lathe_backend_by_name(const char* name) {
  if (!name) return nullptr;
  for (const lathe_backend* b : registry().backends)
    if (std::strcmp(b->name, name) == 0) return b;
  return nullptr;
}

const char* lathe_backend_missing_op(const lathe_backend* b) {
#define LATHE_NEED_OP(op) \
  if (!b->op) return #op
  if (!b->name) return "name";
  LATHE_NEED_OP(ctx_init);
  LATHE_NEED_OP(ctx_free);
  LATHE_NEED_OP(alloc);
  LATHE_NEED_OP(release);
  LATHE_NEED_OP(upload);
  LATHE_NEED_OP(download);
  LATHE_NEED_OP(copy);
  LATHE_NEED_OP(zero);
  LATHE_NEED_OP(add);
  LATHE_NEED_OP(add_bias);
  LATHE_NEED_OP(gather_rows);
  LATHE_NEED_OP(scatter_rows);
  LATHE_NEED_OP(gemm);
  LATHE_NEED_OP(nf4_matmul_nt);
  LATHE_NEED_OP(nf4_matmul_nn);
  LATHE_NEED_OP(bf16_matmul);
  LATHE_NEED_OP(dropout_forward);
  LATHE_NEED_OP(dropout_backward);
  LATHE_NEED_OP(embedding_forward);
  LATHE_NEED_OP(rmsnorm_forward);
  LATHE_NEED_OP(rmsnorm_backward);
  LATHE_NEED_OP(rope_forward);
  LATHE_NEED_OP(rope_backward);
  LATHE_NEED_OP(attention_forward);
  LATHE_NEED_OP(attention_backward);
  LATHE_NEED_OP(swiglu_forward);
  LATHE_NEED_OP(swiglu_backward);
  LATHE_NEED_OP(cross_entropy);
  LATHE_NEED_OP(sumsq);
  LATHE_NEED_OP(scale);
  LATHE_NEED_OP(adamw_update);
#undef LATHE_NEED_OP
  return nullptr;
}

namespace lathe {

const lathe_backend* choose_backend(const char* name) {
  const auto& all = registry().backends;
  if (!name || !*name || std::strcmp(name, "auto") == 0) return all.size() > 1 ? all[1] : all[0];
  if (const lathe_backend* b = lathe_backend_by_name(name)) return b;
  std::string have;
  for (const lathe_backend* b : all) have += std::string(have.empty() ? "" : ", ") + b->name;
  std::string why = "unknown backend";
  if (std::strcmp(name, "cuda") == 0) {
#ifdef LATHE_HAVE_CUDA
    why = "no usable CUDA device on this machine for backend";
#else
    why = "this engine was built without CUDA, so there is no backend";
#endif
  }
  throw Error(LATHE_ERR_UNSUPPORTED, "config.backend: " + why + " '" + name + "'; available here: " + have + " (or \"auto\")");
}

void Backend::reset(const lathe_backend* next, ThreadPool* pool) {
  if (ops && ctx) ops->ctx_free(ctx);
  ops = nullptr;
  ctx = nullptr;
  if (!next) return;
  ctx = next->ctx_init(pool);
  ops = next;
}

}  // namespace lathe
