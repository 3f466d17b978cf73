// test_backends.cpp — every registered backend against the CPU one (backend.h), on the golden
// cases (test/golden/, model folders from `node dev/golden-models.mjs`; missing ones skip as in
// test_golden.cpp), in two variants each:
//   lora:  the case as it is (LoRA on an f32 base, eval mode: no dropout);
//   qlora: the layer linears q/k/v/o/gate stored as NF4 in tiles of 256 elements (several tiles
//          per weight) and up/down as bf16 (a mixed base, so both paths run), LoRA dropout 0.1
//          in training mode, gradient checkpointing on.
// Each run: 3 steps of (zero grad, forward/backward, clip 1.0 + AdamW) on the case's batch, on a
// CPU model and on a model of the backend under test, compared on what a user sees: step 1's
// logits, every step's loss, label count and gradient norm, step 1's LoRA gradients, and after
// the steps every LoRA tensor, its AdamW moments and the dropout RNG state.
//
// Tolerances: a backend named "cpu" (the CPU table, or a wrapper of it) must match bit for bit:
// the same kernels in the same order. "cuda" in the qlora variant: 3e-2 (its NF4 weights are
// dequantised to bf16, the CPU's to f32: the bf16 tolerance of test/README.md), and up to 3 lr
// for tensors after the 3 steps. Any other backend and variant: per tensor
//   |got - cpu| <= 1e-4 * max|cpu| + 1e-4 * |cpu|      (loss, norms: 1e-4 relative)
// with 2e-3 * lr more for the LoRA tensors and moments after the steps (Adam moves an element
// whose gradient is at round-off level by a full step; test_golden.cpp allows the same). Label
// counts and the RNG state are exact for every backend (masks are drawn on the host).
//
// Also here: the registry (lookup by name, complete tables); a counting wrapper of the CPU table,
// which gives the same bits and shows that these runs reach every op of the table it was given
// (so a backend that passes was checked on all of them); and a one-ulp change in one op, which
// the bit-for-bit comparison must see (a model that called the CPU kernel directly would not).
#include <memory>

#include "backend.h"
#include "golden_case.h"
#include "model.h"
#include "test_util.h"

namespace {

using golden::Json;

// ---- one run's observable results

struct Tensor {
  std::string name;
  std::vector<float> v;
};

struct Run {
  std::vector<float> losses, norms;
  std::vector<int64_t> counts;
  std::vector<Tensor> tensors;  // logits, grad/…, param/…, adam_m/…, adam_v/…
  uint64_t rng[4] = {0, 0, 0, 0};
  std::string error;            // a failed call: its message
};

using golden::Case;
using golden::load_case;

enum class Variant { Lora, Qlora };
const char* variant_name(Variant v) { return v == Variant::Lora ? "lora" : "qlora"; }

// A model of the case on `backend`: lathe::model_init (the C API's lathe_model_init always takes
// the CPU backend), then everything else through the C API.
std::unique_ptr<lathe_model, void (*)(lathe_model*)> make_model(const Case& k, const lathe_backend* backend, Variant variant, std::string& error) {
  std::unique_ptr<lathe_model, void (*)(lathe_model*)> m(new lathe_model(), lathe_model_free);
  try {
    lathe::model_init(*m, k.config, backend);
  } catch (const std::exception& e) {
    error = std::string("model_init: ") + e.what();
    return {nullptr, lathe_model_free};
  }
  char err[512];
  auto ok = [&](lathe_status st) {
    if (st != LATHE_OK && error.empty()) error = err;
    return st == LATHE_OK;
  };
  for (auto& [name, v] : k.weights) ok(lathe_model_set_weight(m.get(), name.c_str(), v.data(), v.size(), err, sizeof err));
  lathe_lora_config lc = k.lora;
  if (variant == Variant::Qlora) {
    lc.dropout = 0.1f;
    lc.seed = 11;
    ok(lathe_model_quantize_nf4(m.get(), LATHE_LORA_Q | LATHE_LORA_K | LATHE_LORA_V | LATHE_LORA_O | LATHE_LORA_GATE, err, sizeof err));
    ok(lathe_model_convert_bf16(m.get(), LATHE_LORA_UP | LATHE_LORA_DOWN, err, sizeof err));
    for (auto& kv : m->weights)
      if (kv.second.q4) kv.second.q4->tile_elems = 256;
    ok(lathe_model_set_gradient_checkpointing(m.get(), 1, err, sizeof err));
  }
  ok(lathe_lora_init(m.get(), &lc, err, sizeof err));
  for (auto& [name, v] : k.init) ok(lathe_lora_set(m.get(), name.c_str(), v.data(), v.size(), err, sizeof err));
  if (!error.empty()) return {nullptr, lathe_model_free};
  return m;
}

Run run(const Case& k, const lathe_backend* backend, Variant variant) {
  Run r;
  auto m = make_model(k, backend, variant, r.error);
  if (!m) return r;
  char err[512];
  auto ok = [&](lathe_status st) {
    if (st != LATHE_OK && r.error.empty()) r.error = err;
    return st == LATHE_OK;
  };
  const int training = variant == Variant::Qlora;
  std::vector<float> logits(static_cast<size_t>(k.B) * k.T * k.config.vocab_size);
  for (int step = 0; step < k.steps && r.error.empty(); ++step) {
    float loss = 0, norm = 0;
    int64_t count = 0;
    ok(lathe_zero_grad(m.get(), err, sizeof err));
    ok(lathe_forward_backward(m.get(), k.tokens.data(), k.labels.data(), k.positions.data(), k.segments.empty() ? nullptr : k.segments.data(), k.B,
                              k.T, 1, training, 1.0f, &loss, &count, step == 0 ? logits.data() : nullptr, err, sizeof err));
    r.losses.push_back(loss);
    r.counts.push_back(count);
    if (step == 0) {
      r.tensors.push_back({"logits", logits});
      for (auto& [name, v] : k.init) {
        std::vector<float> g(v.size());
        ok(lathe_lora_grad(m.get(), name.c_str(), g.data(), g.size(), err, sizeof err));
        r.tensors.push_back({"grad/" + name, std::move(g)});
      }
    }
    ok(lathe_adamw_step(m.get(), k.lr, k.beta1, k.beta2, k.eps, k.weight_decay, k.max_grad_norm, &norm, err, sizeof err));
    r.norms.push_back(norm);
  }
  for (auto& [name, v] : k.init) {
    std::vector<float> p(v.size()), mo(v.size()), vo(v.size());
    ok(lathe_lora_get(m.get(), name.c_str(), p.data(), p.size(), err, sizeof err));
    ok(lathe_adamw_state_get(m.get(), name.c_str(), mo.data(), vo.data(), v.size(), err, sizeof err));
    r.tensors.push_back({"param/" + name, std::move(p)});
    r.tensors.push_back({"adam_m/" + name, std::move(mo)});
    r.tensors.push_back({"adam_v/" + name, std::move(vo)});
  }
  ok(lathe_rng_state_get(m.get(), r.rng, err, sizeof err));
  return r;
}

// ---- comparison

struct Tolerance {
  bool exact = true;
  double rtol = 0.0;  // of max|cpu| and of |cpu|, per element
  double after_steps = 0.0;  // absolute, for param/ and adam_*/ tensors (times lr)
};

// The qlora variant of a device backend: its NF4 weights are dequantised to bf16 (the CPU's to
// f32) before the product, which rounds the weight to 8 significant bits (2^-9 relative), the
// bf16 base tolerance of test/README.md; AdamW then moves elements whose gradients sit at that
// rounding level by up to a full step (lr) in each of the 3 steps.
Tolerance tolerance_for(const lathe_backend* backend, Variant variant) {
  if (std::string(backend->name) == "cpu") return {};
  if (variant == Variant::Qlora && std::string(backend->name) == "cuda") return {false, 3e-2, 3.0};
  return {false, 1e-4, 2e-3};
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The differences between a run and the CPU run beyond the tolerance, one line each.
std::vector<std::string> differences(const Run& cpu, const Run& got, const Tolerance& tol, float lr) {
  std::vector<std::string> out;
  if (!cpu.error.empty()) out.push_back("cpu run failed: " + cpu.error);
  if (!got.error.empty()) out.push_back("run failed: " + got.error);
  if (!out.empty()) return out;
  auto scalar = [&](const std::string& what, float c, float g) {
    const bool bad = tol.exact ? !same_bits(c, g) : !(std::fabs(g - c) <= tol.rtol * std::fabs(c));
    if (bad) out.push_back(what + ": cpu " + std::to_string(c) + ", got " + std::to_string(g));
  };
  for (size_t s = 0; s < cpu.losses.size(); ++s) {
    scalar("loss of step " + std::to_string(s + 1), cpu.losses[s], got.losses[s]);
    scalar("gradient norm of step " + std::to_string(s + 1), cpu.norms[s], got.norms[s]);
    if (cpu.counts[s] != got.counts[s]) out.push_back("label count of step " + std::to_string(s + 1));
  }
  for (int i = 0; i < 4; ++i)
    if (cpu.rng[i] != got.rng[i]) out.push_back("dropout RNG state after the steps");
  if (cpu.tensors.size() != got.tensors.size()) {
    out.push_back("different tensor lists");
    return out;
  }
  for (size_t t = 0; t < cpu.tensors.size(); ++t) {
    const std::vector<float>& c = cpu.tensors[t].v;
    const std::vector<float>& g = got.tensors[t].v;
    const std::string& name = cpu.tensors[t].name;
    const bool after = name.rfind("param/", 0) == 0 || name.rfind("adam_", 0) == 0;
    float mx = 0;
    for (float x : c) mx = std::max(mx, std::fabs(x));
    size_t bad = 0, at = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      const double allowed = tol.rtol * mx + tol.rtol * std::fabs(c[i]) + (after ? tol.after_steps * lr : 0.0);
      const bool differs = tol.exact ? !same_bits(c[i], g[i]) : !(std::fabs(double(g[i]) - c[i]) <= allowed);
      if (differs && bad++ == 0) at = i;
    }
    if (bad)
      out.push_back(name + ": " + std::to_string(bad) + " of " + std::to_string(c.size()) + " elements differ, first [" + std::to_string(at) + "] cpu " +
                    std::to_string(c[at]) + " got " + std::to_string(g[at]));
  }
  return out;
}

std::vector<Case> load_cases() {
  std::vector<Case> cases;
  for (const std::string& name : golden::case_names()) {
    Case k;
    if (load_case(name, k)) cases.push_back(std::move(k));
  }
  return cases;
}

// Runs every case and variant on `backend` and on the CPU; returns the differences, prefixed.
// tol null: each variant's tolerance_for(backend).
std::vector<std::string> compare_with_cpu(const std::vector<Case>& cases, const lathe_backend* backend, const Tolerance* tol_or_null) {
  std::vector<std::string> all;
  for (const Case& k : cases)
    for (Variant v : {Variant::Lora, Variant::Qlora}) {
      const Tolerance tol = tol_or_null ? *tol_or_null : tolerance_for(backend, v);
      const Run cpu = run(k, lathe_backend_cpu(), v), got = run(k, backend, v);
      for (const std::string& d : differences(cpu, got, tol, k.lr)) all.push_back(k.name + " " + variant_name(v) + ": " + d);
    }
  return all;
}

// ---- a wrapper of the CPU table that counts the calls of each op

struct Counting {
  static constexpr int kOps = 32;
  static inline int calls[kOps] = {};
  static inline const char* names[kOps] = {};
  static inline int used = 0;
};

template <int I, auto Op, class F>
struct Counted;
template <int I, auto Op, class R, class... A>
struct Counted<I, Op, R (*)(A...)> {
  static R call(A... a) {
    ++Counting::calls[I];
    return (lathe_backend_cpu()->*Op)(a...);
  }
};

#define LATHE_COUNT(i, op)                                                          \
  b.op = Counted<i, &lathe_backend::op, decltype(lathe_backend::op)>::call;        \
  Counting::names[i] = #op;                                                         \
  Counting::used = i + 1

const lathe_backend* counting_cpu() {
  static const lathe_backend table = [] {
    lathe_backend b = *lathe_backend_cpu();
    LATHE_COUNT(0, ctx_init);
    LATHE_COUNT(1, ctx_free);
    LATHE_COUNT(2, copy);
    LATHE_COUNT(3, zero);
    LATHE_COUNT(4, add);
    LATHE_COUNT(5, add_bias);
    LATHE_COUNT(6, gather_rows);
    LATHE_COUNT(7, scatter_rows);
    LATHE_COUNT(8, gemm);
    LATHE_COUNT(9, nf4_matmul_nt);
    LATHE_COUNT(10, nf4_matmul_nn);
    LATHE_COUNT(11, dropout_forward);
    LATHE_COUNT(12, dropout_backward);
    LATHE_COUNT(13, embedding_forward);
    LATHE_COUNT(14, rmsnorm_forward);
    LATHE_COUNT(15, rmsnorm_backward);
    LATHE_COUNT(16, rope_forward);
    LATHE_COUNT(17, rope_backward);
    LATHE_COUNT(18, attention_forward);
    LATHE_COUNT(19, attention_backward);
    LATHE_COUNT(20, swiglu_forward);
    LATHE_COUNT(21, swiglu_backward);
    LATHE_COUNT(22, cross_entropy);
    LATHE_COUNT(23, sumsq);
    LATHE_COUNT(24, scale);
    LATHE_COUNT(25, adamw_update);
    LATHE_COUNT(26, bf16_matmul);
    return b;
  }();
  return &table;
}

#undef LATHE_COUNT

// The CPU table with swiglu_forward one ulp off in its first output.
void swiglu_one_ulp_off(lathe_backend_ctx* ctx, float* a, const float* g, const float* u, int64_t n) {
  lathe_backend_cpu()->swiglu_forward(ctx, a, g, u, n);
  if (n > 0) a[0] = std::nextafter(a[0], INFINITY);
}

}  // namespace

TEST(the_registry_holds_the_cpu_backend_first_and_finds_backends_by_name) {
  CHECK(lathe_backend_count() >= 1);
  CHECK(lathe_backend_get(0) == lathe_backend_cpu());
  CHECK(lathe_backend_get(-1) == nullptr && lathe_backend_get(lathe_backend_count()) == nullptr);
  CHECK(lathe_backend_by_name("cpu") == lathe_backend_cpu());
  CHECK(lathe_backend_by_name("no-such-backend") == nullptr && lathe_backend_by_name(nullptr) == nullptr);
  for (int i = 0; i < lathe_backend_count(); ++i) {
    const lathe_backend* b = lathe_backend_get(i);
    CHECK_MSG(lathe_backend_missing_op(b) == nullptr, std::string(b->name) + " has no " + lathe_backend_missing_op(b));
    CHECK(lathe_backend_by_name(b->name) == b);
  }
  lathe_backend partial = *lathe_backend_cpu();
  partial.rope_backward = nullptr;
  CHECK(lathe_backend_missing_op(&partial) != nullptr && std::string(lathe_backend_missing_op(&partial)) == "rope_backward");
  // A model not given a backend computes on the CPU one.
  lathe_model* m = t::make_model(t::Spec{});
  CHECK(m && m->backend.ops == lathe_backend_cpu());
  lathe_model_free(m);
}

TEST(every_backend_matches_the_cpu_backend_on_the_golden_cases) {
  const std::vector<Case> cases = load_cases();
  for (int i = 0; i < lathe_backend_count(); ++i) {
    const lathe_backend* b = lathe_backend_get(i);
    const std::vector<std::string> diffs = compare_with_cpu(cases, b, nullptr);
    for (const std::string& d : diffs) CHECK_MSG(false, std::string(b->name) + ": " + d);
    std::fprintf(stderr, "  %s: %zu cases x 2 variants, %s the CPU backend (%s)\n", b->name, cases.size(), diffs.empty() ? "matches" : "DIFFERS FROM",
                 tolerance_for(b, Variant::Lora).exact ? "bit for bit" : "within tolerance");
  }
}

TEST(a_model_computes_through_the_table_it_was_given_and_these_runs_call_every_op) {
  const std::vector<Case> cases = load_cases();
  if (cases.empty()) return;  // skipped (said above)
  std::fill(std::begin(Counting::calls), std::end(Counting::calls), 0);
  const lathe_backend* counting = counting_cpu();
  const Tolerance exact_tol{};
  // The wrapper adds nothing: the same bits as the CPU table.
  for (const std::string& d : compare_with_cpu(cases, counting, &exact_tol)) CHECK_MSG(false, "counting wrapper: " + d);
  CHECK(Counting::used == 27);
  for (int i = 0; i < Counting::used; ++i)
    CHECK_MSG(Counting::calls[i] > 0, std::string("no run called ") + Counting::names[i] + ": add a variant that does");
  // One model: its state is made once and freed once, with the model.
  std::fill(std::begin(Counting::calls), std::end(Counting::calls), 0);
  Case k = cases[0];
  k.steps = 1;
  run(k, counting, Variant::Qlora);
  CHECK(Counting::calls[0] == 1 && Counting::calls[1] == 1);  // ctx_init, ctx_free
}

TEST(the_comparison_sees_a_one_ulp_change_in_one_op) {
  const std::vector<Case> cases = load_cases();
  if (cases.empty()) return;
  lathe_backend off = *lathe_backend_cpu();
  off.swiglu_forward = swiglu_one_ulp_off;
  const std::vector<Case> one(cases.begin(), cases.begin() + 1);
  const Tolerance exact_tol{};
  const std::vector<std::string> exact = compare_with_cpu(one, &off, &exact_tol);
  CHECK_MSG(!exact.empty(), "a one-ulp change in swiglu_forward went unnoticed at bit-for-bit tolerance");
  const Tolerance loose_tol{false, 1e-4, 2e-3};
  const std::vector<std::string> loose = compare_with_cpu(one, &off, &loose_tol);
  for (const std::string& d : loose) CHECK_MSG(false, "one ulp exceeds the stated tolerance of other backends: " + d);
}
