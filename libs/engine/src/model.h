// model.h — struct lathe_model: the config, the frozen base weights (by HF name), the LoRA
// adapters with their gradients and AdamW moments, the activations of the last forward (kept
// for backward and reused between calls), the thread pool, the backend it computes on and the
// RNG streams. Everything the backend's ops read or write is memory of that backend, held by
// lathe::Buffers (backend.h); the host reads it only through upload/download. Host-side data
// (the frozen weights' f32 values as set or loaded, dropout masks, positions) are std::vectors.
// All of it is owned by this object (the backend's state by its lathe::Backend, declared first so
// that it outlives every Buffer); lathe_model_free deletes it in one place.
//
// Frozen f32 weights: Tensor::data holds them on the host (set_weight and the safetensors loader
// write there; NF4 and bf16 conversion read there). A backend with host_memory (the CPU) reads
// them in place, no second copy. Any other backend gets a copy in Tensor::mem, uploaded lazily:
// by the first forward (or hidden-states call) after the weight was set or loaded, so weights
// set one by one and then quantised are never uploaded as f32. NF4 and bf16 weights are uploaded
// once, when converted (they cannot be set afterwards).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "cross_entropy.h"
#include "lathe_engine.h"
#include "linear.h"
#include "rng.h"
#include "threads.h"

namespace lathe {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;     // f32 values on the host; emptied once the tensor is stored as NF4 or bf16
  Buffer<float> mem;           // a backend without host_memory: its copy of data (see above)
  bool stale = false;          // data changed since mem was uploaded
  std::unique_ptr<nf4::Tensor4> q4;  // QLoRA: the NF4 copy, in backend memory (lathe_model_quantize_nf4)
  Buffer<uint16_t> bf16;             // --base-dtype bf16: the bf16 copy, in backend memory (lathe_model_convert_bf16)
  bool set = false;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

std::string shape_str(const std::vector<int64_t>& shape);

struct LayerActs {
  Buffer<float> x_in, h1, rstd1, q, k, v, att, lse, x_mid, h2, rstd2, g, u, a;
};

// Pointers to frozen weights are backend memory (see above): set by model_init on a host_memory
// backend, and before each forward on others (null until then).
struct Layer {
  Linear q, k, v, o, gate, up, down;
  const float* ln1 = nullptr;  // input_layernorm
  const float* ln2 = nullptr;  // post_attention_layernorm
  LayerActs acts;
};

// The seven per-layer module kinds in PEFT's order, with their HF sub-names and LATHE_LORA_* bits.
struct ModuleKind {
  const char* name;  // self_attn.q_proj, ...
  uint32_t bit;
};
extern const ModuleKind kModuleKinds[7];

}  // namespace lathe

struct lathe_model {
  lathe_model_config cfg{};
  std::unique_ptr<lathe::ThreadPool> pool;  // host threads: loading, and the CPU backend's compute
  lathe::Backend backend;                     // every op of the training step (backend.h); freed before the pool
  std::map<std::string, lathe::Tensor> weights;              // HF name -> frozen weight
  std::vector<lathe::Layer> layers;
  const float* embed = nullptr;                               // frozen weights in backend memory (Layer)
  const float* norm = nullptr;
  const float* head = nullptr;                                // lm_head.weight or the tied embedding (null once stored as bf16)
  const uint16_t* head16 = nullptr;                           // the head in bf16 (lathe_model_convert_bf16 with LATHE_LORA_LM_HEAD), else null
  // A tied head's bf16 copy: the embedding lookup keeps reading the f32 table (an untied
  // lm_head.weight keeps its bf16 copy in its Tensor, as the linears do).
  lathe::Buffer<uint16_t> tied_head16;
  lathe::Buffer<float> inv_freq;                              // RoPE, [head_dim/2]

  // LoRA: module name (e.g. model.layers.0.self_attn.q_proj, lm_head) -> adapter
  std::map<std::string, std::unique_ptr<lathe::LoRA>> loras;
  lathe::LoRA* head_lora = nullptr;
  lathe_lora_config lora_cfg{};
  int64_t adam_step = 0;
  lathe::Rng dropout_rng;

  // Cross-entropy chunk size in rows (0: automatic, about 16M logits (64 MB) per chunk: the head's
  // products over 85 rows of a 49152 vocabulary ran at 150/125 GFLOP/s, over 256 rows at 175/134). Tests override it.
  int64_t ce_chunk_rows = 0;

  // Gradient checkpointing (lathe_model_set_gradient_checkpointing): forward keeps only each
  // layer's input (layers[l].acts.x_in) and the loss-side tensors; backward recomputes a layer's
  // forward into `ck` from its input, with the dropout RNG state saved before that layer.
  bool grad_ckpt = false;
  lathe::LayerActs ck;
  std::vector<lathe::Rng> layer_rng;
  uint64_t act_peak_bytes = 0;  // peak bytes held for backward during the last forward_backward
  int64_t last_correct = 0;     // labels the last forward_backward's argmax got right

  // activations and scratch of the last forward
  lathe::Buffer<float> x, hf, rstdf, xf, tmp;
  std::vector<int32_t> pos;  // host: RoPE positions of the last call
  // backward buffers
  lathe::Buffer<float> dx, dh, datt, dq, dk, dv, dg, du, attn_scratch, head_du, lin1, lin2;
  lathe::CrossEntropyScratch ce;
};

namespace lathe {

// Throws lathe::Error (see common.h) with a message naming the tensor and shape.
// The model computes on `backend` for the rest of its life; null: the one cfg.backend names
// (choose_backend, backend.h: null/"auto" is the first device backend, else the CPU). Tests pass
// a table of their own here. m.cfg.backend is then the chosen backend's name.
void model_init(lathe_model& m, const lathe_model_config& cfg, const lathe_backend* backend = nullptr);
void model_set_weight(lathe_model& m, const std::string& name, const float* data, size_t count);
void model_lora_init(lathe_model& m, const lathe_lora_config& cfg);
// QLoRA: stores the base weights of the layer linears selected by `modules` (LATHE_LORA_Q..DOWN
// bits) as NF4 and frees their f32 copies. Already quantised linears are left as they are.
void model_quantize_nf4(lathe_model& m, uint32_t modules);
void model_convert_bf16(lathe_model& m, uint32_t modules);
// Bytes and element count of every frozen base weight as stored now (f32: 4 bytes; NF4: see nf4.h).
void model_memory(const lathe_model& m, uint64_t* bytes, uint64_t* params);
// name: "<module>.lora_A.weight" / "<module>.lora_B.weight"; which: 0 param, 1 grad. Backend
// memory: read and write it with to_host / assign on m.backend.
Buffer<float>& model_lora_tensor(lathe_model& m, const std::string& name, int which, std::vector<int64_t>* shape);
// The AdamW moments (m, v) of "<module>.lora_A.weight" / "<module>.lora_B.weight" (backend memory).
void model_adam_moments(lathe_model& m, const std::string& name, Buffer<float>** mom1, Buffer<float>** mom2);
void model_zero_grad(lathe_model& m);
// Sets every tensor of one .safetensors file the model knows from a read-only mmap of it
// (F32, F16 and BF16 converted to f32, into Tensor::data). Unknown names, shape mismatches and a
// truncated file fail before any weight is changed. The caller then calls model_weights_changed.
void model_load_safetensors(lathe_model& m, const std::string& path);
// The host values of the f32 weights changed (a load): a backend without host_memory uploads them
// again before the next forward.
void model_weights_changed(lathe_model& m);
void model_forward_backward(lathe_model& m, const int32_t* tokens, const int32_t* labels, const int32_t* positions,
                            const int32_t* segments, int B, int T, bool backward, bool training, float grad_scale,
                            float* loss_out, int64_t* count_out, float* logits_out);
// Read-only forward of `count` sequences (tokens one after another, lengths[count]) up to `layer`,
// as lathe_hidden_states documents; `out` (host, out_count floats) receives [sum(lengths), H].
void model_hidden_states(lathe_model& m, const int32_t* tokens, const int32_t* lengths, int count, int layer, float* out, size_t out_count);
float model_adamw_step(lathe_model& m, float lr, float beta1, float beta2, float eps, float weight_decay, float max_grad_norm);

}  // namespace lathe
