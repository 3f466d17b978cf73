// test_util.h — a tiny test harness (no gtest): TEST(name) registers a function, CHECK(cond)
// records file:line and the condition on failure and the test goes on; tiny random models built
// through the C API.
#pragma once
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lathe_engine.h"
#include "rng.h"

namespace t {

struct Registry {
  std::vector<std::pair<std::string, std::function<void()>>> tests;
  int failures = 0;
  static Registry& get() {
    static Registry r;
    return r;
  }
};
struct Register {
  Register(const char* name, std::function<void()> fn) { Registry::get().tests.emplace_back(name, std::move(fn)); }
};

inline void fail_at(const char* file, int line, const std::string& what) {
  ++Registry::get().failures;
  std::fprintf(stderr, "  FAILED %s:%d: %s\n", file, line, what.c_str());
}

}  // namespace t

#define TEST(name)                                     \
  static void name();                                  \
  static t::Register name##_reg(#name, name);          \
  static void name()

#define CHECK(cond)                                    \
  do {                                                 \
    if (!(cond)) t::fail_at(__FILE__, __LINE__, #cond); \
  } while (0)

#define CHECK_MSG(cond, msg)                                                          \
  do {                                                                                \
    if (!(cond)) t::fail_at(__FILE__, __LINE__, std::string(#cond) + " — " + (msg)); \
  } while (0)

#define CHECK_OK(expr)                                                                     \
  do {                                                                                     \
    char err_[512];                                                                        \
    (void)err_;                                                                            \
    lathe_status st_ = (expr);                                                             \
    if (st_ != LATHE_OK) t::fail_at(__FILE__, __LINE__, std::string(#expr) + " -> " + std::to_string(st_)); \
  } while (0)

namespace t {

struct Spec {
  int vocab = 41, hidden = 16, intermediate = 24, layers = 2, heads = 4, kv_heads = 2, head_dim = 4;
  bool tied = false, bias = false, llama3 = false;
  int threads = 2;
  uint64_t seed = 7;
  float wscale = 0.3f;
};

inline lathe_model_config config_of(const Spec& s) {
  lathe_model_config c{};
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.intermediate_size = s.intermediate;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.head_dim;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_scaling = s.llama3 ? LATHE_ROPE_LLAMA3 : LATHE_ROPE_NONE;
  c.rope_factor = 8.0f;
  c.rope_low_freq_factor = 1.0f;
  c.rope_high_freq_factor = 4.0f;
  c.rope_original_max_position = 16;
  c.tie_word_embeddings = s.tied;
  c.attention_bias = s.bias;
  c.num_threads = s.threads;
  c.backend = "cpu";  // these tests check the CPU engine; test_backends.cpp holds the others to it
  return c;
}

// HF name -> element count of every base weight of a config
inline std::vector<std::pair<std::string, size_t>> weight_list(const lathe_model_config& c) {
  std::vector<std::pair<std::string, size_t>> w;
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const size_t qd = static_cast<size_t>(c.num_heads) * c.head_dim, kd = static_cast<size_t>(c.num_kv_heads) * c.head_dim;
  w.push_back({"model.embed_tokens.weight", V * H});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    w.push_back({p + "input_layernorm.weight", H});
    w.push_back({p + "post_attention_layernorm.weight", H});
    w.push_back({p + "self_attn.q_proj.weight", qd * H});
    w.push_back({p + "self_attn.k_proj.weight", kd * H});
    w.push_back({p + "self_attn.v_proj.weight", kd * H});
    w.push_back({p + "self_attn.o_proj.weight", H * qd});
    if (c.attention_bias) {
      w.push_back({p + "self_attn.q_proj.bias", qd});
      w.push_back({p + "self_attn.k_proj.bias", kd});
      w.push_back({p + "self_attn.v_proj.bias", kd});
    }
    w.push_back({p + "mlp.gate_proj.weight", I * H});
    w.push_back({p + "mlp.up_proj.weight", I * H});
    w.push_back({p + "mlp.down_proj.weight", H * I});
  }
  w.push_back({"model.norm.weight", H});
  if (!c.tie_word_embeddings) w.push_back({"lm_head.weight", V * H});
  return w;
}

inline std::vector<float> random_vec(lathe::Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * rng.uniform();
  return v;
}

// A model with every weight set from the spec's seed (norm weights near 1).
inline lathe_model* make_model(const Spec& s) {
  lathe_model_config c = config_of(s);
  lathe_model* m = nullptr;
  char err[512];
  if (lathe_model_init(&c, &m, err, sizeof err) != LATHE_OK) {
    std::fprintf(stderr, "make_model: %s\n", err);
    return nullptr;
  }
  lathe::Rng rng(s.seed, 99);
  for (auto& [name, n] : weight_list(c)) {
    const bool norm = name.find("norm") != std::string::npos;
    auto v = norm ? random_vec(rng, n, 0.8f, 1.2f) : random_vec(rng, n, -s.wscale, s.wscale);
    if (name == "model.embed_tokens.weight")
      for (auto& x : v) x *= 3.0f;
    if (lathe_model_set_weight(m, name.c_str(), v.data(), n, err, sizeof err) != LATHE_OK) std::fprintf(stderr, "make_model: %s\n", err);
  }
  return m;
}

// PEFT names of the LoRA tensors (A and B) for a config and target bits
inline std::vector<std::string> lora_names(const lathe_model_config& c, uint32_t targets) {
  static const char* kinds[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                 "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  std::vector<std::string> out;
  for (int l = 0; l < c.num_layers; ++l)
    for (int k = 0; k < 7; ++k)
      if (targets & (1u << k)) {
        const std::string p = "model.layers." + std::to_string(l) + "." + kinds[k];
        out.push_back(p + ".lora_A.weight");
        out.push_back(p + ".lora_B.weight");
      }
  if (targets & LATHE_LORA_LM_HEAD) {
    out.push_back("lm_head.lora_A.weight");
    out.push_back("lm_head.lora_B.weight");
  }
  return out;
}

// Element count of a LoRA tensor (via lathe_lora_get's error-free probe of sizes is not in the
// API, so compute it).
inline size_t lora_count(const lathe_model_config& c, const std::string& name, int r) {
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const size_t qd = static_cast<size_t>(c.num_heads) * c.head_dim, kd = static_cast<size_t>(c.num_kv_heads) * c.head_dim;
  size_t in = H, out = H;
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("q_proj")) out = qd;
  else if (has("k_proj") || has("v_proj")) out = kd;
  else if (has("o_proj")) in = qd;
  else if (has("gate_proj") || has("up_proj")) out = I;
  else if (has("down_proj")) in = I;
  else if (has("lm_head")) out = V;
  return has("lora_A") ? r * in : out * r;
}

}  // namespace t
