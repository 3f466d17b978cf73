// golden_case.h — reading a golden case (test/golden/<case>/, see README.md) and its model
// folder (build/golden-models/<case>/, written by `node dev/golden-models.mjs`; LATHE_GOLDEN_MODELS
// overrides the folder). Shared by test_golden.cpp (the engine against PyTorch) and
// test_backends.cpp (every backend against the CPU one).
#pragma once
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "lathe_engine.h"

namespace golden {

// ---- a minimal JSON reader (objects, arrays, numbers, strings, true/false/null)
struct Json {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  double num = 0;
  bool b = false;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* get(const std::string& k) const {
    for (auto& kv : obj)
      if (kv.first == k) return &kv.second;
    return nullptr;
  }
  double n(const std::string& k, double dflt) const {
    const Json* j = get(k);
    return j && j->kind == Num ? j->num : dflt;
  }
};

struct Parser {
  const std::string& s;
  size_t i = 0;
  void ws() { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i; }
  Json parse() {
    ws();
    Json j;
    if (s[i] == '{') {
      j.kind = Json::Obj;
      ++i;
      ws();
      if (s[i] == '}') { ++i; return j; }
      for (;;) {
        ws();
        std::string k = parse().str;
        ws();
        ++i;  // ':'
        j.obj.emplace_back(k, parse());
        ws();
        if (s[i++] == '}') return j;
      }
    }
    if (s[i] == '[') {
      j.kind = Json::Arr;
      ++i;
      ws();
      if (s[i] == ']') { ++i; return j; }
      for (;;) {
        j.arr.push_back(parse());
        ws();
        if (s[i++] == ']') return j;
      }
    }
    if (s[i] == '"') {
      j.kind = Json::Str;
      for (++i; s[i] != '"'; ++i) j.str += s[i] == '\\' ? s[++i] : s[i];
      ++i;
      return j;
    }
    if (s.compare(i, 4, "true") == 0) { j.kind = Json::Bool; j.b = true; i += 4; return j; }
    if (s.compare(i, 5, "false") == 0) { j.kind = Json::Bool; i += 5; return j; }
    if (s.compare(i, 4, "null") == 0) { i += 4; return j; }
    j.kind = Json::Num;
    size_t used = 0;
    j.num = std::stod(s.substr(i, 40), &used);
    i += used;
    return j;
  }
};

inline bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return true;
}

inline Json read_json(const std::string& path) {
  std::string text;
  read_file(path, text);
  Parser p{text};
  return p.parse();
}

// safetensors, F32 only: name -> data
inline std::map<std::string, std::vector<float>> read_safetensors(const std::string& path) {
  std::map<std::string, std::vector<float>> out;
  std::string raw;
  if (!read_file(path, raw) || raw.size() < 8) return out;
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  std::string header = raw.substr(8, n);
  Parser p{header};
  Json h = p.parse();
  for (auto& [name, info] : h.obj) {
    if (name == "__metadata__") continue;
    if (info.get("dtype")->str != "F32") { std::fprintf(stderr, "  %s: %s is not F32\n", path.c_str(), name.c_str()); continue; }
    const size_t a = static_cast<size_t>(info.get("data_offsets")->arr[0].num), b = static_cast<size_t>(info.get("data_offsets")->arr[1].num);
    std::vector<float> v((b - a) / 4);
    std::memcpy(v.data(), raw.data() + 8 + n + a, b - a);
    out[name] = std::move(v);
  }
  return out;
}

inline std::vector<int32_t> ints(const Json* j) {
  std::vector<int32_t> v;
  if (j && j->kind == Json::Arr)
    for (auto& x : j->arr) v.push_back(static_cast<int32_t>(x.num));
  return v;
}

inline uint32_t target_bits(const Json* targets) {
  static const char* names[8] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"};
  uint32_t bits = 0;
  for (auto& t : targets->arr)
    for (int k = 0; k < 8; ++k)
      if (t.str == names[k]) bits |= 1u << k;
  return bits;
}

// The five cases, in test/golden/.
inline const std::vector<std::string>& case_names() {
  static const std::vector<std::string> names = {"a-llama-gqa-untied", "b-qwen2-bias-tied", "c-llama-packing", "d-llama3-rope",
                                                 "e-rslora-lm-head"};
  return names;
}

inline std::string cases_dir() { return LATHE_GOLDEN_DIR; }

inline std::string models_dir() {
  const char* env = std::getenv("LATHE_GOLDEN_MODELS");
  return env ? env : cases_dir() + "/../../build/golden-models";
}

// The engine config of a model folder's config.json (and its weights: q/k/v biases or not), on 2 threads.
inline lathe_model_config model_config(const Json& cfgj, const std::map<std::string, std::vector<float>>& weights) {
  lathe_model_config c{};
  c.vocab_size = static_cast<int32_t>(cfgj.n("vocab_size", 0));
  c.hidden_size = static_cast<int32_t>(cfgj.n("hidden_size", 0));
  c.intermediate_size = static_cast<int32_t>(cfgj.n("intermediate_size", 0));
  c.num_layers = static_cast<int32_t>(cfgj.n("num_hidden_layers", 0));
  c.num_heads = static_cast<int32_t>(cfgj.n("num_attention_heads", 0));
  c.num_kv_heads = static_cast<int32_t>(cfgj.n("num_key_value_heads", c.num_heads));
  c.head_dim = static_cast<int32_t>(cfgj.n("head_dim", c.hidden_size / std::max(1, c.num_heads)));
  c.rms_norm_eps = static_cast<float>(cfgj.n("rms_norm_eps", 1e-6));
  c.rope_theta = static_cast<float>(cfgj.n("rope_theta", 10000));
  const Json* rs = cfgj.get("rope_scaling");
  if (rs && rs->kind == Json::Obj && !rs->obj.empty()) {
    c.rope_scaling = LATHE_ROPE_LLAMA3;
    c.rope_factor = static_cast<float>(rs->n("factor", 0));
    c.rope_low_freq_factor = static_cast<float>(rs->n("low_freq_factor", 0));
    c.rope_high_freq_factor = static_cast<float>(rs->n("high_freq_factor", 0));
    c.rope_original_max_position = static_cast<int32_t>(rs->n("original_max_position_embeddings", 0));
  }
  const Json* tie = cfgj.get("tie_word_embeddings");
  c.tie_word_embeddings = tie && tie->b;
  c.attention_bias = weights.count("model.layers.0.self_attn.q_proj.bias") > 0;
  c.num_threads = 2;
  // The golden cases hold the CPU engine to the f64 reference at f32 tolerances: pinned to the
  // CPU, also on a GPU machine where "auto" would choose CUDA (test_backends compares the others).
  c.backend = "cpu";
  return c;
}

// The LoRA config of case.json's "lora".
inline lathe_lora_config lora_config(const Json& cs) {
  const Json* lj = cs.get("lora");
  lathe_lora_config lc{};
  lc.r = static_cast<int32_t>(lj->n("r", 0));
  lc.alpha = static_cast<float>(lj->n("alpha", 0));
  lc.dropout = static_cast<float>(lj->n("dropout", 0));
  lc.use_rslora = lj->get("useRslora")->b;
  lc.target_modules = target_bits(lj->get("targetModules"));
  return lc;
}

// One golden case as the backend tests run it: its model's weights and config, LoRA init, batch
// and optimizer settings. load_case is false (and says why) when the case or its model folder is
// missing (run: node dev/golden-models.mjs).
struct Case {
  std::string name, model_file;
  lathe_model_config config{};
  lathe_lora_config lora{};
  std::map<std::string, std::vector<float>> weights, init;
  int B = 0, T = 0;
  std::vector<int32_t> tokens, labels, positions, segments;
  float lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, max_grad_norm = 0;
  int steps = 3;
};

inline bool load_case(const std::string& name, Case& k) {
  const std::string dir = golden::cases_dir() + "/" + name, model = golden::models_dir() + "/" + name;
  std::string probe;
  if (!golden::read_file(dir + "/case.json", probe) || !golden::read_file(model + "/config.json", probe)) {
    std::fprintf(stderr, "  SKIP %s: no golden case at %s or no model folder at %s (run: node dev/golden-models.mjs)\n", name.c_str(), dir.c_str(),
                 model.c_str());
    return false;
  }
  const Json cs = golden::read_json(dir + "/case.json");
  k.name = name;
  k.model_file = model + "/model.safetensors";
  k.weights = golden::read_safetensors(k.model_file);
  k.init = golden::read_safetensors(dir + "/lora-init.safetensors");
  k.config = golden::model_config(golden::read_json(model + "/config.json"), k.weights);
  k.lora = golden::lora_config(cs);
  k.B = static_cast<int>(cs.n("batch", 0));
  k.T = static_cast<int>(cs.n("seq", 0));
  k.tokens = golden::ints(cs.get("tokens"));
  k.labels = golden::ints(cs.get("labels"));
  k.positions = golden::ints(cs.get("positions"));
  k.segments = golden::ints(cs.get("segments"));
  const Json* opt = cs.get("optimizer");
  k.lr = static_cast<float>(opt->n("lr", 0));
  k.beta1 = static_cast<float>(opt->n("beta1", 0));
  k.beta2 = static_cast<float>(opt->n("beta2", 0));
  k.eps = static_cast<float>(opt->n("eps", 0));
  k.weight_decay = static_cast<float>(opt->n("weightDecay", 0));
  k.max_grad_norm = static_cast<float>(opt->n("maxGradNorm", 0));
  k.steps = static_cast<int>(opt->n("steps", 3));
  return true;
}


}  // namespace golden
