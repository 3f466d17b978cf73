// model.cpp — the decoder: weights and LoRA bookkeeping, forward and backward.
//
// Forward (N = batch*seq tokens, H hidden, I intermediate, V vocab):
//   x = embed[tokens]                                               [N, H]
//   per layer: h1 = rmsnorm(x); q,k,v = linear(h1); rope(q,k); att = attention(q,k,v)
//              x += o(att); h2 = rmsnorm(x); x += down(silu(gate(h2)) * up(h2))
//   hf = rmsnorm(x); loss = cross_entropy(hf W_head^T (+ head LoRA), labels)   (chunked)
// model_hidden_states runs the same layer_forward in eval mode up to one layer, keeping one
// layer's intermediates at a time and nothing for backward.
// Backward walks the same chain in reverse, from the loss down to the lowest layer that holds a
// LoRA adapter (nothing below it is trainable), adding into the LoRA gradients only.
// With gradient checkpointing (m.grad_ckpt) forward keeps only each layer's input and the dropout
// RNG state before it; backward reruns layer_forward from them into one shared scratch just
// before that layer's backward: the same code on the same bits, so gradients are bit-identical.
// Every op of the step goes through the model's backend (backend.h); this file only allocates
// (lathe::Buffer: memory of the backend), validates and orders them, and moves what the host
// must see (LoRA tensors, logits, hidden states) with upload/download.
#include "model.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>

#include "common.h"
#include "bf16.h"
#include "cross_entropy.h"
#include "rope_freq.h"

namespace lathe {

const ModuleKind kModuleKinds[7] = {
    {"self_attn.q_proj", LATHE_LORA_Q}, {"self_attn.k_proj", LATHE_LORA_K},  {"self_attn.v_proj", LATHE_LORA_V},
    {"self_attn.o_proj", LATHE_LORA_O}, {"mlp.gate_proj", LATHE_LORA_GATE}, {"mlp.up_proj", LATHE_LORA_UP},
    {"mlp.down_proj", LATHE_LORA_DOWN}};

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

namespace {

// Throws for the caller: the error names the caller's file and line (common.h).
[[noreturn]] void fail(lathe_status s, const std::string& msg, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  throw Error(s, msg, file, line);
}

// dst = src on the backend, resizing dst (a buffer of the model) first.
void copy_to(const Backend& be, Buffer<float>& dst, const Buffer<float>& src) {
  dst.resize(be, src.size());
  be.ops->copy(be.ctx, dst.data(), src.data(), static_cast<int64_t>(src.size()));
}

// v = n zeros on the backend.
void zeros(const Backend& be, Buffer<float>& v, size_t n) {
  v.resize(be, n);
  be.ops->zero(be.ctx, v.data(), static_cast<int64_t>(n));
}

Tensor& add_weight(lathe_model& m, const std::string& name, std::vector<int64_t> shape) {
  Tensor& t = m.weights[name];
  t.shape = std::move(shape);
  t.data.assign(t.numel(), 0.0f);
  return t;
}

Linear* layer_linear(Layer& L, int kind) {
  Linear* all[7] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
  return all[kind];
}

uint64_t bytes_of(const Buffer<float>& v) { return v.bytes(); }

// What a layer holds for backward besides its input: the intermediates in `A` and its LoRA saves.
uint64_t layer_bytes(Layer& L, const LayerActs& A) {
  uint64_t b = 0;
  for (const Buffer<float>* v : {&A.h1, &A.rstd1, &A.q, &A.k, &A.v, &A.att, &A.lse, &A.x_mid, &A.h2, &A.rstd2, &A.g, &A.u, &A.a})
    b += bytes_of(*v);
  for (int k = 0; k < 7; ++k)
    if (const LoRA* l = layer_linear(L, k)->lora) b += bytes_of(l->u) + (l->masked ? l->mask.size() : 0);
  return b;
}

void release_lora_saves(Layer& L) {
  for (int k = 0; k < 7; ++k)
    if (LoRA* l = layer_linear(L, k)->lora) {
      l->u.reset();
      std::vector<uint8_t>().swap(l->mask);
    }
}

// Frees a layer's saved intermediates (all but x_in): gradient checkpointing keeps none.
void release_layer(Layer& L) {
  LayerActs& A = L.acts;
  for (Buffer<float>* v : {&A.h1, &A.rstd1, &A.q, &A.k, &A.v, &A.att, &A.lse, &A.x_mid, &A.h2, &A.rstd2, &A.g, &A.u, &A.a}) v->reset();
}

// The frozen weights' pointers (Layer, Linear, m.embed/norm/head) at their backend memory: the
// host values themselves on a host_memory backend, else Tensor::mem (null until uploaded). NF4
// and bf16 linears keep W null (W4/W16 point at their copies).
void bind_weights(lathe_model& m) {
  const bool host = m.backend.ops->host_memory;
  auto at = [&](const std::string& name) -> const float* {
    Tensor& t = m.weights.at(name);
    if (t.q4 || !t.bf16.empty()) return nullptr;
    return host ? t.data.data() : t.mem.data();
  };
  m.embed = at("model.embed_tokens.weight");
  m.norm = at("model.norm.weight");
  m.head = m.cfg.tie_word_embeddings ? m.embed : at("lm_head.weight");
  m.head16 = m.cfg.tie_word_embeddings ? m.tied_head16.data() : m.weights.at("lm_head.weight").bf16.data();
  if (m.head16) m.head = nullptr;
  for (int l = 0; l < m.cfg.num_layers; ++l) {
    Layer& L = m.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.ln1 = at(p + "input_layernorm.weight");
    L.ln2 = at(p + "post_attention_layernorm.weight");
    for (int k = 0; k < 7; ++k) {
      Linear* lin = layer_linear(L, k);
      lin->W = at(lin->name + ".weight");
      if (m.cfg.attention_bias && k < 3) lin->bias = at(lin->name + ".bias");
    }
  }
}

// Before a forward: every weight set, and on a backend without host_memory every f32 weight
// uploaded since it last changed (model.h).
void prepare_weights(lathe_model& m, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  for (auto& kv : m.weights)
    if (!kv.second.set)
      fail(LATHE_ERR_INVALID_ARGUMENT, "weight '" + kv.first + "' " + shape_str(kv.second.shape) + " was never set (lathe_model_set_weight)", file, line);
  if (m.backend.ops->host_memory) return;
  bool moved = false;
  for (auto& kv : m.weights) {
    Tensor& t = kv.second;
    if (t.data.empty() || (!t.stale && !t.mem.empty())) continue;
    t.mem.assign(m.backend, t.data.data(), t.data.size());
    t.stale = false;
    moved = true;
  }
  if (moved) bind_weights(m);
}

// One decoder layer: m.x (its input) becomes its output; the intermediates backward needs go to A.
void layer_forward(lathe_model& m, Layer& L, LayerActs& A, Rng& rng, const int32_t* segments, int B, int T, bool training) {
  const lathe_model_config& c = m.cfg;
  const Backend& be = m.backend;
  const lathe_backend& op = *be.ops;
  const int N = B * T, H = c.hidden_size, I = c.intermediate_size;
  const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, qd = nh * hd, kd = nkv * hd;
  (void)H;
  A.h1.resize(be, m.x.size());
  A.rstd1.resize(be, N);
  A.q.resize(be, static_cast<size_t>(N) * qd);
  A.k.resize(be, static_cast<size_t>(N) * kd);
  A.v.resize(be, static_cast<size_t>(N) * kd);
  A.att.resize(be, static_cast<size_t>(N) * qd);
  A.lse.resize(be, static_cast<size_t>(N) * nh);
  op.rmsnorm_forward(be.ctx, A.h1.data(), A.rstd1.data(), m.x.data(), L.ln1, N, H, c.rms_norm_eps);
  linear_forward(be, A.q.data(), A.h1.data(), N, L.q, rng, training, m.lin1);
  linear_forward(be, A.k.data(), A.h1.data(), N, L.k, rng, training, m.lin1);
  linear_forward(be, A.v.data(), A.h1.data(), N, L.v, rng, training, m.lin1);
  op.rope_forward(be.ctx, A.q.data(), m.pos.data(), m.inv_freq.data(), N, nh, hd);
  op.rope_forward(be.ctx, A.k.data(), m.pos.data(), m.inv_freq.data(), N, nkv, hd);
  op.attention_forward(be.ctx, A.att.data(), A.lse.data(), A.q.data(), A.k.data(), A.v.data(), segments, B, T, nh, nkv, hd);
  linear_forward(be, m.tmp.data(), A.att.data(), N, L.o, rng, training, m.lin1);
  op.add(be.ctx, m.x.data(), m.tmp.data(), static_cast<int64_t>(m.x.size()));
  copy_to(be, A.x_mid, m.x);
  A.h2.resize(be, m.x.size());
  A.rstd2.resize(be, N);
  A.g.resize(be, static_cast<size_t>(N) * I);
  A.u.resize(be, static_cast<size_t>(N) * I);
  A.a.resize(be, static_cast<size_t>(N) * I);
  op.rmsnorm_forward(be.ctx, A.h2.data(), A.rstd2.data(), m.x.data(), L.ln2, N, H, c.rms_norm_eps);
  linear_forward(be, A.g.data(), A.h2.data(), N, L.gate, rng, training, m.lin1);
  linear_forward(be, A.u.data(), A.h2.data(), N, L.up, rng, training, m.lin1);
  op.swiglu_forward(be.ctx, A.a.data(), A.g.data(), A.u.data(), static_cast<int64_t>(N) * I);
  linear_forward(be, m.tmp.data(), A.a.data(), N, L.down, rng, training, m.lin1);
  op.add(be.ctx, m.x.data(), m.tmp.data(), static_cast<int64_t>(m.x.size()));
}

}  // namespace

void model_init(lathe_model& m, const lathe_model_config& c, const lathe_backend* backend) {
  auto positive = [](const char* what, int64_t v) {
    if (v <= 0) fail(LATHE_ERR_INVALID_ARGUMENT, std::string("config.") + what + " must be > 0, got " + std::to_string(v));
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_layers", c.num_layers);
  positive("num_heads", c.num_heads);
  positive("num_kv_heads", c.num_kv_heads);
  positive("head_dim", c.head_dim);
  if (c.num_heads % c.num_kv_heads)
    fail(LATHE_ERR_INVALID_ARGUMENT, "config.num_heads (" + std::to_string(c.num_heads) + ") must be a multiple of num_kv_heads (" +
                                         std::to_string(c.num_kv_heads) + ")");
  if (c.head_dim % 2) fail(LATHE_ERR_INVALID_ARGUMENT, "config.head_dim must be even for RoPE, got " + std::to_string(c.head_dim));
  if (!(c.rms_norm_eps > 0.0f)) fail(LATHE_ERR_INVALID_ARGUMENT, "config.rms_norm_eps must be > 0");
  if (!(c.rope_theta > 0.0f)) fail(LATHE_ERR_INVALID_ARGUMENT, "config.rope_theta must be > 0");
  if (c.num_threads < 0) fail(LATHE_ERR_INVALID_ARGUMENT, "config.num_threads must be >= 0");
  if (c.rope_scaling != LATHE_ROPE_NONE && c.rope_scaling != LATHE_ROPE_LLAMA3)
    fail(LATHE_ERR_UNSUPPORTED, "config.rope_scaling " + std::to_string(static_cast<int>(c.rope_scaling)) + " is not supported (none or llama3)");
  if (c.rope_scaling == LATHE_ROPE_LLAMA3 &&
      !(c.rope_factor > 0.0f && c.rope_low_freq_factor > 0.0f && c.rope_high_freq_factor > c.rope_low_freq_factor &&
        c.rope_original_max_position > 0))
    fail(LATHE_ERR_INVALID_ARGUMENT,
         "llama3 rope_scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0");

  const lathe_backend* chosen = backend ? backend : choose_backend(c.backend);
  m.cfg = c;
  m.cfg.backend = chosen->name;  // a static string, unlike the caller's
  m.pool = std::make_unique<ThreadPool>(c.num_threads);
  m.backend.reset(chosen, m.pool.get());
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size;
  const int64_t qd = static_cast<int64_t>(c.num_heads) * c.head_dim, kd = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
  add_weight(m, "model.embed_tokens.weight", {V, H});
  add_weight(m, "model.norm.weight", {H});
  if (!c.tie_word_embeddings) add_weight(m, "lm_head.weight", {V, H});
  m.layers.resize(c.num_layers);
  const int64_t outs[7] = {qd, kd, kd, H, I, I, H}, ins[7] = {H, H, H, qd, H, H, I};
  for (int l = 0; l < c.num_layers; ++l) {
    Layer& L = m.layers[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add_weight(m, p + "input_layernorm.weight", {H});
    add_weight(m, p + "post_attention_layernorm.weight", {H});
    for (int k = 0; k < 7; ++k) {
      Linear* lin = layer_linear(L, k);
      lin->name = p + kModuleKinds[k].name;
      lin->in = static_cast<int>(ins[k]);
      lin->out = static_cast<int>(outs[k]);
      add_weight(m, lin->name + ".weight", {outs[k], ins[k]});
      if (c.attention_bias && k < 3) add_weight(m, lin->name + ".bias", {outs[k]});
    }
  }
  bind_weights(m);
  const std::vector<float> inv_freq = rope_inv_freq(c);
  m.inv_freq.assign(m.backend, inv_freq.data(), inv_freq.size());
}

void model_set_weight(lathe_model& m, const std::string& name, const float* data, size_t count) {
  auto it = m.weights.find(name);
  if (it == m.weights.end()) {
    if (name == "lm_head.weight" && m.cfg.tie_word_embeddings)
      fail(LATHE_ERR_INVALID_ARGUMENT, "lm_head.weight: the model ties word embeddings (tie_word_embeddings=1), so the head is "
                                       "model.embed_tokens.weight; do not set lm_head.weight");
    if (name.find(".bias") != std::string::npos && !m.cfg.attention_bias && m.weights.count(name.substr(0, name.size() - 5) + ".weight"))
      fail(LATHE_ERR_INVALID_ARGUMENT, name + ": this model has attention_bias=0 (no q/k/v biases)");
    fail(LATHE_ERR_INVALID_ARGUMENT, "unknown weight name '" + name + "' (expected HF names such as model.layers.0.self_attn.q_proj.weight)");
  }
  Tensor& t = it->second;
  if (static_cast<int64_t>(count) != t.numel())
    fail(LATHE_ERR_INVALID_ARGUMENT, name + ": expected " + std::to_string(t.numel()) + " elements (shape " + shape_str(t.shape) +
                                         "), got " + std::to_string(count));
  if (!data) fail(LATHE_ERR_INVALID_ARGUMENT, name + ": data is NULL");
  if (t.q4)
    fail(LATHE_ERR_INVALID_ARGUMENT, name + ": this weight is stored as NF4 (lathe_model_quantize_nf4 was called); set weights before quantising");
  if (!t.bf16.empty() || (name == "model.embed_tokens.weight" && !m.tied_head16.empty()))
    fail(LATHE_ERR_INVALID_ARGUMENT, name + ": this weight is stored as bf16 (lathe_model_convert_bf16 was called); set weights before converting");
  std::memcpy(t.data.data(), data, sizeof(float) * count);
  t.set = true;
  t.stale = true;
}

void model_weights_changed(lathe_model& m) {
  for (auto& kv : m.weights)
    if (!kv.second.data.empty()) kv.second.stale = true;
}

// The layer linears `modules` names (LATHE_LORA_Q..DOWN bits) whose f32 weights are still to be
// stored another way (`what`: "quantising to NF4", "converting to bf16"), every one checked before
// the caller changes any, so that a failure leaves the model unchanged. Weights already in NF4 or
// bf16 are left as they are.
static std::vector<std::pair<Linear*, Tensor*>> base_linears(lathe_model& m, uint32_t modules, const std::string& what) {
  if (modules == 0 || (modules & ~0x7Fu))
    fail(LATHE_ERR_INVALID_ARGUMENT, "modules must be a non-empty set of LATHE_LORA_Q..LATHE_LORA_DOWN bits (lm_head and the embeddings stay f32), got " +
                                         std::to_string(modules));
  std::vector<std::pair<Linear*, Tensor*>> chosen;
  for (auto& L : m.layers)
    for (int k = 0; k < 7; ++k) {
      if (!(modules & kModuleKinds[k].bit)) continue;
      Linear* lin = layer_linear(L, k);
      Tensor& t = m.weights.at(lin->name + ".weight");
      if (t.q4 || !t.bf16.empty()) continue;
      if (!t.set) fail(LATHE_ERR_INVALID_ARGUMENT, lin->name + ".weight was never set: set every weight before " + what);
      chosen.emplace_back(lin, &t);
    }
  return chosen;
}

void model_quantize_nf4(lathe_model& m, uint32_t modules) {
  const auto chosen = base_linears(m, modules, "quantising to NF4");
  for (const auto& [lin, t] : chosen)
    for (float v : t->data)
      if (!std::isfinite(v)) fail(LATHE_ERR_INVALID_ARGUMENT, lin->name + ".weight holds a non-finite value; NF4 needs finite weights");
  std::vector<std::unique_ptr<nf4::Tensor4>> made;
  for (const auto& [lin, t] : chosen)
    made.push_back(std::make_unique<nf4::Tensor4>(nf4::to_backend(m.backend, nf4::quantize_tensor(t->data.data(), lin->out, lin->in))));
  for (size_t i = 0; i < chosen.size(); ++i) {
    Linear* lin = chosen[i].first;
    Tensor* t = chosen[i].second;
    t->q4 = std::move(made[i]);
    std::vector<float>().swap(t->data);  // free the f32 copies
    t->mem.reset();
    lin->W = nullptr;
    lin->W4 = t->q4.get();
  }
}

void model_convert_bf16(lathe_model& m, uint32_t modules) {
  if (modules & ~0xFFu)
    fail(LATHE_ERR_INVALID_ARGUMENT, "modules must be LATHE_LORA_Q..LATHE_LORA_DOWN and LATHE_LORA_LM_HEAD bits, got " + std::to_string(modules));
  const bool head = (modules & LATHE_LORA_LM_HEAD) != 0;
  const char* head_name = m.cfg.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  Tensor& ht = m.weights.at(head_name);
  if (head && !m.head16 && !ht.set) fail(LATHE_ERR_INVALID_ARGUMENT, std::string(head_name) + " was never set: set every weight before converting to bf16");
  const auto chosen = (modules & 0x7Fu) ? base_linears(m, modules & 0x7Fu, "converting to bf16") : std::vector<std::pair<Linear*, Tensor*>>{};
  std::vector<uint16_t> host;
  auto to_bf16 = [&](const std::vector<float>& data) {
    host.resize(data.size());
    for (size_t i = 0; i < data.size(); ++i) host[i] = f32_to_bf16(data[i]);
  };
  // NF4 linears among them keep their codes and take bf16 tiles (nf4.h)
  for (auto& L : m.layers)
    for (int k = 0; k < 7; ++k)
      if (modules & kModuleKinds[k].bit)
        if (Tensor& t = m.weights.at(layer_linear(L, k)->name + ".weight"); t.q4) t.q4->bf16_tiles = true;
  for (const auto& [lin, t] : chosen) {
    to_bf16(t->data);
    t->bf16.assign(m.backend, host.data(), host.size());
    std::vector<float>().swap(t->data);  // free the f32 copies
    t->mem.reset();
    lin->W = nullptr;
    lin->W16 = t->bf16.data();
  }
  if (head && !m.head16) {
    to_bf16(ht.data);
    if (m.cfg.tie_word_embeddings) {
      m.tied_head16.assign(m.backend, host.data(), host.size());  // the lookup keeps the f32 table
    } else {
      ht.bf16.assign(m.backend, host.data(), host.size());
      std::vector<float>().swap(ht.data);
      ht.mem.reset();
    }
    bind_weights(m);
  }
}

void model_memory(const lathe_model& m, uint64_t* bytes, uint64_t* params) {
  uint64_t b = 0, p = 0;
  for (auto& kv : m.weights) {
    const uint64_t n = static_cast<uint64_t>(kv.second.numel());
    p += n;
    b += kv.second.q4 ? kv.second.q4->bytes() : !kv.second.bf16.empty() ? n * sizeof(uint16_t) : n * sizeof(float);
  }
  b += sizeof(uint16_t) * static_cast<uint64_t>(m.tied_head16.size());  // a tied head's bf16 copy (the same parameters)
  if (bytes) *bytes = b;
  if (params) *params = p;
}

void model_lora_init(lathe_model& m, const lathe_lora_config& c) {
  if (c.r <= 0) fail(LATHE_ERR_INVALID_ARGUMENT, "lora.r must be > 0, got " + std::to_string(c.r));
  if (!std::isfinite(c.alpha)) fail(LATHE_ERR_INVALID_ARGUMENT, "lora.alpha must be finite");
  if (!(c.dropout >= 0.0f && c.dropout < 1.0f)) fail(LATHE_ERR_INVALID_ARGUMENT, "lora.dropout must be in [0, 1)");
  if (c.target_modules == 0 || (c.target_modules & ~0xFFu))
    fail(LATHE_ERR_INVALID_ARGUMENT, "lora.target_modules must be a non-empty set of LATHE_LORA_* bits, got " + std::to_string(c.target_modules));
  m.loras.clear();
  m.head_lora = nullptr;
  for (auto& L : m.layers)
    for (int k = 0; k < 7; ++k) layer_linear(L, k)->lora = nullptr;
  m.lora_cfg = c;
  m.adam_step = 0;
  Rng init_rng(c.seed, 1);
  m.dropout_rng = Rng(c.seed, 2);
  const Backend& be = m.backend;
  const float scale = c.use_rslora ? c.alpha / std::sqrt(static_cast<float>(c.r)) : c.alpha / static_cast<float>(c.r);
  auto make = [&](const std::string& name, int in, int out) {
    auto l = std::make_unique<LoRA>();
    l->r = c.r;
    l->in = in;
    l->out = out;
    l->scale = scale;
    l->dropout = c.dropout;
    const size_t na = static_cast<size_t>(c.r) * in, nb = static_cast<size_t>(out) * c.r;
    std::vector<float> a(na);
    const float bound = 1.0f / std::sqrt(static_cast<float>(in));  // kaiming_uniform(a=sqrt(5)) on [r, in]
    for (auto& v : a) v = (2.0f * init_rng.uniform() - 1.0f) * bound;
    l->A.assign(be, a.data(), na);
    zeros(be, l->B, nb);
    zeros(be, l->gA, na);
    zeros(be, l->gB, nb);
    zeros(be, l->mA, na);
    zeros(be, l->vA, na);
    zeros(be, l->mB, nb);
    zeros(be, l->vB, nb);
    LoRA* raw = l.get();
    m.loras[name] = std::move(l);
    return raw;
  };
  for (auto& L : m.layers)
    for (int k = 0; k < 7; ++k)
      if (c.target_modules & kModuleKinds[k].bit) {
        Linear* lin = layer_linear(L, k);
        lin->lora = make(lin->name, lin->in, lin->out);
      }
  if (c.target_modules & LATHE_LORA_LM_HEAD) m.head_lora = make("lm_head", m.cfg.hidden_size, m.cfg.vocab_size);
}

Buffer<float>& model_lora_tensor(lathe_model& m, const std::string& name, int which, std::vector<int64_t>* shape) {
  auto bad = [&](const std::string& why) { fail(LATHE_ERR_INVALID_ARGUMENT, "LoRA tensor '" + name + "': " + why); };
  if (m.loras.empty()) bad("no LoRA adapters (call lathe_lora_init first)");
  const std::string a = ".lora_A.weight", b = ".lora_B.weight";
  auto ends = [&](const std::string& suf) { return name.size() > suf.size() && name.compare(name.size() - suf.size(), suf.size(), suf) == 0; };
  const bool is_a = ends(a), is_b = ends(b);
  if (!is_a && !is_b) bad("name must end in .lora_A.weight or .lora_B.weight");
  const std::string module = name.substr(0, name.size() - a.size());
  auto it = m.loras.find(module);
  if (it == m.loras.end()) bad("no adapter on module '" + module + "' (not targeted, or not a module of this model)");
  LoRA& l = *it->second;
  if (shape) *shape = is_a ? std::vector<int64_t>{l.r, l.in} : std::vector<int64_t>{l.out, l.r};
  if (which == 0) return is_a ? l.A : l.B;
  return is_a ? l.gA : l.gB;
}

void model_adam_moments(lathe_model& m, const std::string& name, Buffer<float>** mom1, Buffer<float>** mom2) {
  model_lora_tensor(m, name, 0, nullptr);  // validates the name
  const std::string a = ".lora_A.weight";
  const bool is_a = name.compare(name.size() - a.size(), a.size(), a) == 0;
  LoRA& l = *m.loras.at(name.substr(0, name.size() - a.size()));
  *mom1 = is_a ? &l.mA : &l.mB;
  *mom2 = is_a ? &l.vA : &l.vB;
}

void model_zero_grad(lathe_model& m) {
  const Backend& be = m.backend;
  for (auto& kv : m.loras) {
    be.ops->zero(be.ctx, kv.second->gA.data(), static_cast<int64_t>(kv.second->gA.size()));
    be.ops->zero(be.ctx, kv.second->gB.data(), static_cast<int64_t>(kv.second->gB.size()));
  }
}

void model_forward_backward(lathe_model& m, const int32_t* tokens, const int32_t* labels, const int32_t* positions,
                            const int32_t* segments, int B, int T, bool backward, bool training, float grad_scale,
                            float* loss_out, int64_t* count_out, float* logits_out) {
  const lathe_model_config& c = m.cfg;
  if (B <= 0 || T <= 0) fail(LATHE_ERR_INVALID_ARGUMENT, "batch and seq must be > 0, got batch=" + std::to_string(B) + " seq=" + std::to_string(T));
  if (!tokens) fail(LATHE_ERR_INVALID_ARGUMENT, "tokens is NULL");
  const int N = B * T, H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int nh = c.num_heads, nkv = c.num_kv_heads, hd = c.head_dim, qd = nh * hd, kd = nkv * hd;
  for (int n = 0; n < N; ++n) {
    if (tokens[n] < 0 || tokens[n] >= V)
      fail(LATHE_ERR_INVALID_ARGUMENT, "tokens[" + std::to_string(n) + "] = " + std::to_string(tokens[n]) + " is outside [0, " + std::to_string(V) + ")");
    if (labels && labels[n] != -100 && (labels[n] < 0 || labels[n] >= V))
      fail(LATHE_ERR_INVALID_ARGUMENT, "labels[" + std::to_string(n) + "] = " + std::to_string(labels[n]) + " is neither -100 nor in [0, " + std::to_string(V) + ")");
  }
  prepare_weights(m);
  const Backend& be = m.backend;
  const lathe_backend& op = *be.ops;
  m.pos.resize(N);
  for (int n = 0; n < N; ++n) m.pos[n] = positions ? positions[n] : n % T;

  // ---- forward
  int lowest = -1;  // lowest layer with an adapter
  for (int l = 0; l < c.num_layers && lowest < 0; ++l)
    for (int k = 0; k < 7; ++k)
      if (layer_linear(m.layers[l], k)->lora) { lowest = l; break; }
  const bool ckpt = m.grad_ckpt;
  uint64_t held = 0, peak = 0;
  auto hold = [&](uint64_t b) { held += b; peak = std::max(peak, held); };
  m.x.resize(be, static_cast<size_t>(N) * H);
  m.tmp.resize(be, static_cast<size_t>(N) * H);
  op.embedding_forward(be.ctx, m.x.data(), tokens, m.embed, N, H);
  if (ckpt) m.layer_rng.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    Layer& L = m.layers[l];
    if (!ckpt) {
      copy_to(be, L.acts.x_in, m.x);
      hold(bytes_of(L.acts.x_in));
      layer_forward(m, L, L.acts, m.dropout_rng, segments, B, T, training);
      hold(layer_bytes(L, L.acts));
      continue;
    }
    // checkpointed: keep the input (only where backward will reach) and the RNG state; the
    // intermediates go to the shared scratch and the LoRA saves are dropped after the layer.
    release_layer(L);
    if (l >= lowest && lowest >= 0) {
      copy_to(be, L.acts.x_in, m.x);
      hold(bytes_of(L.acts.x_in));
    } else {
      L.acts.x_in.reset();
    }
    m.layer_rng[l] = m.dropout_rng;
    layer_forward(m, L, m.ck, m.dropout_rng, segments, B, T, training);
    release_lora_saves(L);
  }
  copy_to(be, m.xf, m.x);
  m.hf.resize(be, m.x.size());
  m.rstdf.resize(be, N);
  op.rmsnorm_forward(be.ctx, m.hf.data(), m.rstdf.data(), m.xf.data(), m.norm, N, H, c.rms_norm_eps);

  // ---- loss (+ d loss / d hf)
  const bool do_backward = backward && !m.loras.empty();
  int64_t count = 0;
  if (labels)
    for (int n = 0; n < N; ++n) count += labels[n] != -100;
  const float coef = count > 0 ? grad_scale / static_cast<float>(count) : 0.0f;
  HeadLoRA hl;
  if (m.head_lora) {
    LoRA& l = *m.head_lora;
    lora_forward_u(be, l, m.hf.data(), N, m.dropout_rng, training, m.lin1);
    zeros(be, m.head_du, static_cast<size_t>(N) * l.r);
    hl.u = l.u.data();
    hl.B = l.B.data();
    hl.gB = l.gB.data();
    hl.du = m.head_du.data();
    hl.r = l.r;
    hl.scale = l.scale;
    hold(bytes_of(l.u) + (l.masked ? l.mask.size() : 0));
  }
  hold(bytes_of(m.xf) + bytes_of(m.hf) + bytes_of(m.rstdf));
  m.act_peak_bytes = peak;
  float* dh = nullptr;
  if (do_backward) {
    zeros(be, m.dh, static_cast<size_t>(N) * H);
    dh = m.dh.data();
  }
  int64_t chunk = m.ce_chunk_rows > 0 ? m.ce_chunk_rows : std::max<int64_t>(16, (int64_t{1} << 24) / V);
  int64_t counted = 0;
  const double loss_sum = cross_entropy_forward_backward(be, m.hf.data(), labels, N, H, V, {m.head, m.head16}, m.head_lora ? &hl : nullptr,
                                                         coef, dh, logits_out, chunk, m.ce, &counted, &m.last_correct);
  const double loss = count > 0 ? loss_sum / static_cast<double>(count) : 0.0;
  if (loss_out) *loss_out = static_cast<float>(loss);
  if (count_out) *count_out = count;
  if (!std::isfinite(loss))
    fail(LATHE_ERR_NAN, "loss is not finite (" + std::to_string(loss) + ") over " + std::to_string(count) +
                            " labels; gradients of this call may be partial: call lathe_zero_grad");
  if (!do_backward || count == 0) return;

  // ---- backward
  if (m.head_lora) lora_backward_from_u(be, *m.head_lora, m.head_du.data(), m.hf.data(), N, lowest >= 0 ? dh : nullptr, m.lin1);
  if (lowest < 0) return;
  m.dx.resize(be, static_cast<size_t>(N) * H);
  m.datt.resize(be, static_cast<size_t>(N) * qd);
  m.dq.resize(be, static_cast<size_t>(N) * qd);
  m.dk.resize(be, static_cast<size_t>(N) * kd);
  m.dv.resize(be, static_cast<size_t>(N) * kd);
  m.dg.resize(be, static_cast<size_t>(N) * I);
  m.du.resize(be, static_cast<size_t>(N) * I);
  m.attn_scratch.resize(be, 2 * static_cast<size_t>(N) * qd);
  op.rmsnorm_backward(be.ctx, m.dx.data(), false, dh, m.xf.data(), m.norm, m.rstdf.data(), N, H);
  for (int l = c.num_layers - 1; l >= lowest; --l) {
    Layer& L = m.layers[l];
    LayerActs& A = ckpt ? m.ck : L.acts;
    uint64_t recomputed = 0;
    if (ckpt) {
      // the same forward code from the saved input and RNG state: identical bits
      op.copy(be.ctx, m.x.data(), L.acts.x_in.data(), static_cast<int64_t>(L.acts.x_in.size()));
      Rng rng = m.layer_rng[l];
      layer_forward(m, L, m.ck, rng, segments, B, T, training);
      recomputed = layer_bytes(L, m.ck);
      hold(recomputed);
      m.act_peak_bytes = peak;
    }
    // MLP: x_out = x_mid + down(silu(gate(h2)) * up(h2))
    linear_backward(be, m.du.data(), false, m.dx.data(), A.a.data(), N, L.down, m.lin1, m.lin2);  // du := d a
    op.swiglu_backward(be.ctx, m.dg.data(), m.du.data(), m.du.data(), A.g.data(), A.u.data(), static_cast<int64_t>(N) * I);
    linear_backward(be, m.dh.data(), false, m.dg.data(), A.h2.data(), N, L.gate, m.lin1, m.lin2);
    linear_backward(be, m.dh.data(), true, m.du.data(), A.h2.data(), N, L.up, m.lin1, m.lin2);
    op.rmsnorm_backward(be.ctx, m.dx.data(), true, m.dh.data(), A.x_mid.data(), L.ln2, A.rstd2.data(), N, H);
    // attention: x_mid = x_in + o(attention(rope(q(h1)), rope(k(h1)), v(h1)))
    linear_backward(be, m.datt.data(), false, m.dx.data(), A.att.data(), N, L.o, m.lin1, m.lin2);
    op.attention_backward(be.ctx, m.dq.data(), m.dk.data(), m.dv.data(), m.attn_scratch.data(), m.datt.data(), A.att.data(),
                          A.lse.data(), A.q.data(), A.k.data(), A.v.data(), segments, B, T, nh, nkv, hd);
    op.rope_backward(be.ctx, m.dq.data(), m.pos.data(), m.inv_freq.data(), N, nh, hd);
    op.rope_backward(be.ctx, m.dk.data(), m.pos.data(), m.inv_freq.data(), N, nkv, hd);
    const bool need_dx = l > lowest;
    float* dhp = need_dx ? m.dh.data() : nullptr;
    linear_backward(be, dhp, false, m.dq.data(), A.h1.data(), N, L.q, m.lin1, m.lin2);
    linear_backward(be, dhp, true, m.dk.data(), A.h1.data(), N, L.k, m.lin1, m.lin2);
    linear_backward(be, dhp, true, m.dv.data(), A.h1.data(), N, L.v, m.lin1, m.lin2);
    if (need_dx) op.rmsnorm_backward(be.ctx, m.dx.data(), true, m.dh.data(), L.acts.x_in.data(), L.ln1, A.rstd1.data(), N, H);
    if (ckpt) {
      release_lora_saves(L);
      held -= recomputed;
    }
  }
}

void model_hidden_states(lathe_model& m, const int32_t* tokens, const int32_t* lengths, int count, int layer, float* out, size_t out_count) {
  const lathe_model_config& c = m.cfg;
  if (count <= 0) fail(LATHE_ERR_INVALID_ARGUMENT, "count must be > 0 sequences, got " + std::to_string(count));
  if (!tokens) fail(LATHE_ERR_INVALID_ARGUMENT, "tokens is NULL");
  if (!lengths) fail(LATHE_ERR_INVALID_ARGUMENT, "lengths is NULL");
  if (layer < 0 || layer > c.num_layers)
    fail(LATHE_ERR_INVALID_ARGUMENT, "layer " + std::to_string(layer) + " is outside [0, " + std::to_string(c.num_layers) +
                                         "] (0: the embeddings; i: the output of model.layers[i-1]; " + std::to_string(c.num_layers) +
                                         " = num_hidden_layers: the last layer's output after the final norm)");
  int64_t total = 0;
  for (int s = 0; s < count; ++s) {
    if (lengths[s] <= 0)
      fail(LATHE_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(s) + " is empty (lengths[" + std::to_string(s) + "] = " +
                                           std::to_string(lengths[s]) + "): every sequence needs at least one token");
    total += lengths[s];
  }
  const int64_t H = c.hidden_size, V = c.vocab_size;
  if (total > std::numeric_limits<int32_t>::max())
    fail(LATHE_ERR_INVALID_ARGUMENT, std::to_string(total) + " tokens in one call are too many: split the sequences into several calls");
  const int N = static_cast<int>(total);
  if (out_count != static_cast<uint64_t>(total * H))
    fail(LATHE_ERR_INVALID_ARGUMENT, "out holds " + std::to_string(out_count) + " floats, expected sum(lengths) * hidden_size = " +
                                         std::to_string(N) + " * " + std::to_string(H) + " = " + std::to_string(total * H));
  if (!out) fail(LATHE_ERR_INVALID_ARGUMENT, "out is NULL");
  // One packed row: positions restart at 0 and attention stays inside each sequence (segments),
  // so every sequence gets exactly what it would get alone.
  m.pos.resize(N);
  std::vector<int32_t> seg(N);
  for (int s = 0, n = 0; s < count; ++s)
    for (int t = 0; t < lengths[s]; ++t, ++n) {
      if (tokens[n] < 0 || tokens[n] >= V)
        fail(LATHE_ERR_INVALID_ARGUMENT, "sequence " + std::to_string(s) + ", token " + std::to_string(t) + ": id " + std::to_string(tokens[n]) +
                                             " is outside the vocabulary [0, " + std::to_string(V) + ")");
      m.pos[n] = t;
      seg[n] = s;
    }

  prepare_weights(m);
  const Backend& be = m.backend;
  const lathe_backend& op = *be.ops;
  m.x.resize(be, static_cast<size_t>(N) * H);
  m.tmp.resize(be, static_cast<size_t>(N) * H);
  op.embedding_forward(be.ctx, m.x.data(), tokens, m.embed, N, static_cast<int>(H));
  // Eval mode: no dropout, so the RNG is never drawn; a copy keeps even that promise local.
  Rng rng = m.dropout_rng;
  LayerActs scratch;  // one layer's intermediates, reused by each layer and freed on return
  for (int l = 0; l < layer; ++l) {
    layer_forward(m, m.layers[l], scratch, rng, count > 1 ? seg.data() : nullptr, 1, N, false);
    release_lora_saves(m.layers[l]);
  }
  if (layer == c.num_layers) {
    Buffer<float> rstd;
    rstd.resize(be, N);
    op.rmsnorm_forward(be.ctx, m.tmp.data(), rstd.data(), m.x.data(), m.norm, N, static_cast<int>(H), c.rms_norm_eps);
    m.tmp.to_host(out);
  } else {
    m.x.to_host(out);
  }
}

float model_adamw_step(lathe_model& m, float lr, float beta1, float beta2, float eps, float weight_decay, float max_grad_norm) {
  if (m.loras.empty()) fail(LATHE_ERR_INVALID_ARGUMENT, "adamw step: no LoRA adapters (call lathe_lora_init first)");
  const Backend& be = m.backend;
  const lathe_backend& op = *be.ops;
  auto n_of = [](const Buffer<float>& v) { return static_cast<int64_t>(v.size()); };
  double sumsq = 0.0;
  for (auto& kv : m.loras) sumsq += op.sumsq(be.ctx, kv.second->gA.data(), n_of(kv.second->gA)) + op.sumsq(be.ctx, kv.second->gB.data(), n_of(kv.second->gB));
  const double norm = std::sqrt(sumsq);
  if (!std::isfinite(norm)) fail(LATHE_ERR_NAN, "adamw step: the LoRA gradient norm is not finite; no step taken");
  if (max_grad_norm > 0.0f) {
    const float clip = static_cast<float>(max_grad_norm / (norm + 1e-6));
    if (clip < 1.0f)
      for (auto& kv : m.loras) {
        op.scale(be.ctx, kv.second->gA.data(), n_of(kv.second->gA), clip);
        op.scale(be.ctx, kv.second->gB.data(), n_of(kv.second->gB), clip);
      }
  }
  const int64_t t = ++m.adam_step;
  for (auto& kv : m.loras) {
    LoRA& l = *kv.second;
    op.adamw_update(be.ctx, l.A.data(), l.gA.data(), l.mA.data(), l.vA.data(), n_of(l.A), t, lr, beta1, beta2, eps, weight_decay);
    op.adamw_update(be.ctx, l.B.data(), l.gB.data(), l.mB.data(), l.vB.data(), n_of(l.B), t, lr, beta1, beta2, eps, weight_decay);
  }
  return static_cast<float>(norm);
}

}  // namespace lathe
