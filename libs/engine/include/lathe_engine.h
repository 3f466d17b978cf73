/*
 * lathe_engine.h — the C boundary of Lathe's training engine (libs/engine).
 *
 * A Llama-family decoder (Llama 2/3, Mistral, Qwen2: RMSNorm, RoPE with llama3 scaling,
 * grouped-query causal attention that honours packing segments, SwiGLU MLP, tied or untied LM
 * head) with LoRA adapters on any of q/k/v/o/gate/up/down (and lm_head), a frozen base, and
 * causal-LM cross-entropy over unmasked labels computed in vocabulary chunks.
 *
 * Rules of this API (ggml style, without ggml's aborts):
 * - every function returns a lathe_status; on failure `err` (when not NULL) receives a message
 *   that says what and where, truncated to `err_len`: "<function>: <what> (at <file>:<line>)",
 *   the engine source line that raised it (file relative to libs/engine; running out of memory
 *   and unexpected internal errors carry no line);
 * - nothing here exits or aborts the process;
 * - a model owns all its memory and lathe_model_free releases it in one place;
 * - shapes are row-major; a Linear weight is [out_features, in_features] as in PyTorch/HF.
 */
#ifndef LATHE_ENGINE_H
#define LATHE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lathe_status {
  LATHE_OK = 0,
  LATHE_ERR_INVALID_ARGUMENT = 1, /* bad shape, unknown tensor name, bad config value */
  LATHE_ERR_UNSUPPORTED = 2,      /* a config the engine does not implement */
  LATHE_ERR_OUT_OF_MEMORY = 3,
  LATHE_ERR_NAN = 4,              /* the loss or a gradient is not finite */
  LATHE_ERR_CANCELLED = 5,
  LATHE_ERR_INTERNAL = 6
} lathe_status;

/*
 * The name of a status, spelled once for every caller (the Node binding uses it as the JS
 * error's `code`): "OK", "INVALID_ARGUMENT", "UNSUPPORTED", "OUT_OF_MEMORY", "NAN", "CANCELLED",
 * "INTERNAL". A value outside the enum (the engine returns none) gives "INTERNAL". The string
 * is static; never NULL.
 */
const char* lathe_status_string(lathe_status status);

typedef enum lathe_rope_scaling { LATHE_ROPE_NONE = 0, LATHE_ROPE_LLAMA3 = 1 } lathe_rope_scaling;

typedef struct lathe_model_config {
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t intermediate_size;
  int32_t num_layers;
  int32_t num_heads;
  int32_t num_kv_heads;
  int32_t head_dim;            /* usually hidden_size / num_heads */
  float rms_norm_eps;
  float rope_theta;
  lathe_rope_scaling rope_scaling;
  float rope_factor;           /* llama3: factor, low_freq_factor, high_freq_factor, original_max_position_embeddings */
  float rope_low_freq_factor;
  float rope_high_freq_factor;
  int32_t rope_original_max_position;
  int32_t tie_word_embeddings; /* 1: lm_head shares model.embed_tokens.weight */
  int32_t attention_bias;      /* 1: q/k/v projections have biases (Qwen2) */
  int32_t num_threads;         /* 0: all hardware threads (the host's: loading, and the CPU backend) */
  /*
   * The backend the model computes on, by name: NULL, "" or "auto" picks the first device
   * backend lathe_backend_name lists (after "cpu"), else "cpu"; "cpu"; "cuda" (a CUDA build, on
   * a machine with a usable GPU). A name this engine cannot use here fails lathe_model_init with
   * LATHE_ERR_UNSUPPORTED, naming the ones it can. Read only by lathe_model_init (the string
   * need not outlive it); lathe_model_backend says which backend a model got.
   */
  const char* backend;
} lathe_model_config;

/* Bit per adaptable module, for lathe_lora_config.target_modules. */
enum {
  LATHE_LORA_Q = 1u << 0, LATHE_LORA_K = 1u << 1, LATHE_LORA_V = 1u << 2, LATHE_LORA_O = 1u << 3,
  LATHE_LORA_GATE = 1u << 4, LATHE_LORA_UP = 1u << 5, LATHE_LORA_DOWN = 1u << 6, LATHE_LORA_LM_HEAD = 1u << 7
};

typedef struct lathe_lora_config {
  int32_t r;
  float alpha;
  float dropout;               /* applied to the LoRA input in training mode, as PEFT does */
  int32_t use_rslora;          /* scale alpha/sqrt(r) instead of alpha/r */
  uint32_t target_modules;     /* LATHE_LORA_* bits */
  uint64_t seed;               /* A: kaiming-uniform(a=sqrt(5)) as PEFT; B: zeros; dropout masks */
} lathe_lora_config;

typedef struct lathe_model lathe_model;

lathe_status lathe_model_init(const lathe_model_config* config, lathe_model** out, char* err, size_t err_len);
void lathe_model_free(lathe_model* model);

/*
 * The backends this engine can compute on here (compiled in, and their device present), by
 * index from 0: "cpu" first, then the device backends in the order "auto" prefers them; NULL
 * past the last. The strings are static.
 */
const char* lathe_backend_name(int32_t index);
/* The name of the backend `model` computes on ("cpu", "cuda"; static), or NULL for a NULL model. */
const char* lathe_model_backend(const lathe_model* model);

/*
 * Sets a frozen base weight by its Hugging Face name (model.embed_tokens.weight,
 * model.layers.N.self_attn.q_proj.weight, ….bias, model.layers.N.mlp.gate_proj.weight,
 * model.layers.N.input_layernorm.weight, model.norm.weight, lm_head.weight); `data` is copied;
 * `count` must equal the tensor's element count. Every weight must be set before training.
 */
lathe_status lathe_model_set_weight(lathe_model* model, const char* name, const float* data, size_t count, char* err, size_t err_len);

/* Adds LoRA adapters (PEFT initialisation). */
lathe_status lathe_lora_init(lathe_model* model, const lathe_lora_config* config, char* err, size_t err_len);

/*
 * LoRA tensors by PEFT name without the `base_model.model.` prefix, e.g.
 * "model.layers.0.self_attn.q_proj.lora_A.weight" ([r, in]) and "….lora_B.weight" ([out, r]).
 */
lathe_status lathe_lora_set(lathe_model* model, const char* name, const float* data, size_t count, char* err, size_t err_len);
lathe_status lathe_lora_get(const lathe_model* model, const char* name, float* out, size_t count, char* err, size_t err_len);
/* The gradient of a LoRA tensor from the last lathe_forward_backward (accumulated across calls until lathe_zero_grad). */
lathe_status lathe_lora_grad(const lathe_model* model, const char* name, float* out, size_t count, char* err, size_t err_len);
lathe_status lathe_zero_grad(lathe_model* model, char* err, size_t err_len);

/*
 * One batch of `batch` rows of `seq` tokens. `labels` uses -100 for positions not trained (the
 * label of position t is the token to predict after t, already shifted by the caller);
 * `positions` are RoPE positions (restart at 0 in each packed sequence); `segments` give each
 * token's sequence id within its row: attention never crosses segments (NULL: one segment).
 * Writes the mean loss over unmasked labels and the number of them. With `backward` = 1 it adds
 * d(loss·grad_scale)/d(LoRA) into the gradients. With `training` = 1 LoRA dropout is applied.
 * `logits_out`, when not NULL, receives [batch, seq, vocab] logits (for tests; costly).
 */
lathe_status lathe_forward_backward(lathe_model* model, const int32_t* tokens, const int32_t* labels, const int32_t* positions, const int32_t* segments,
                                    int32_t batch, int32_t seq, int32_t backward, int32_t training, float grad_scale,
                                    float* loss_out, int64_t* label_count_out, float* logits_out, char* err, size_t err_len);

/*
 * Hidden states of one layer for `count` sequences, read-only: a forward in eval mode (no
 * dropout, no gradients, nothing kept for backward; LoRA tensors and their gradients, the AdamW
 * state and the dropout RNG are left as they were), with the LoRA adapters applied when the
 * model has them. `tokens` holds the sequences one after another, `lengths[count]` their lengths
 * (each > 0). Each sequence is computed as if alone: positions 0..length-1 and causal attention
 * within the sequence (the sequences run as one packed row whose attention never crosses them).
 * `layer` indexes Hugging Face's output_hidden_states=True tuple: 0 is the embedding output;
 * i in 1..num_layers-1 the output of the i-th decoder layer, model.layers[i-1] (the residual
 * stream that model.layers[i] reads, before any norm); num_layers the output of the last decoder
 * layer after the final RMSNorm (model.norm), as HF's hidden_states[num_hidden_layers] (equal
 * to last_hidden_state). `out` receives [sum(lengths), hidden_size] f32, row n the hidden
 * state of the n-th token; `out_count` must be exactly that many floats. Errors (INVALID_ARGUMENT): layer outside [0, num_layers], count <= 0, an empty
 * sequence, a token id outside [0, vocab_size) (naming sequence and position), a wrong out_count,
 * a weight never set.
 */
lathe_status lathe_hidden_states(lathe_model* model, const int32_t* tokens, const int32_t* lengths, int32_t count, int32_t layer,
                                 float* out, size_t out_count, char* err, size_t err_len);

/* Clips the LoRA gradients to `max_grad_norm` (<= 0: no clipping), writes the norm before clipping, then one AdamW step (PyTorch's AdamW with weight decay on LoRA tensors). */
lathe_status lathe_adamw_step(lathe_model* model, float lr, float beta1, float beta2, float eps, float weight_decay, float max_grad_norm, float* grad_norm_out, char* err, size_t err_len);

/*
 * Checkpoint and resume: the AdamW moments of one LoRA tensor (same names as lathe_lora_get;
 * `count` its element count), the bias-correction step counter t (the number of AdamW steps
 * taken since lathe_lora_init), and the state of the dropout PRNG (xoshiro256**, four words).
 * Restoring all three plus the LoRA tensors continues training bit for bit.
 */
lathe_status lathe_adamw_state_get(const lathe_model* model, const char* name, float* m_out, float* v_out, size_t count, char* err, size_t err_len);
lathe_status lathe_adamw_state_set(lathe_model* model, const char* name, const float* m, const float* v, size_t count, char* err, size_t err_len);
lathe_status lathe_adamw_step_count_get(const lathe_model* model, int64_t* step_out, char* err, size_t err_len);
/* `step` must be >= 0. */
lathe_status lathe_adamw_step_count_set(lathe_model* model, int64_t step, char* err, size_t err_len);
lathe_status lathe_rng_state_get(const lathe_model* model, uint64_t state_out[4], char* err, size_t err_len);
/* An all-zero state is rejected (xoshiro256** would emit zeros forever). */
lathe_status lathe_rng_state_set(lathe_model* model, const uint64_t state[4], char* err, size_t err_len);

/*
 * QLoRA: stores the frozen weights of the layer linears selected by `modules` (LATHE_LORA_Q ..
 * LATHE_LORA_DOWN bits; lm_head and the embeddings stay f32) as NF4 with double quantisation,
 * as bitsandbytes does (blocks of 64 with an absmax each; the absmax values minus their mean
 * quantised to 8 bits with bitsandbytes' dynamic map in blocks of 256, one f32 scale per block),
 * and frees their f32 copies. Forward and backward then dequantise them tile by tile. Call it
 * after every weight is set; setting a quantised weight afterwards fails. Already quantised
 * linears are skipped; on failure the model is unchanged.
 */
lathe_status lathe_model_quantize_nf4(lathe_model* model, uint32_t modules, char* err, size_t err_len);

/*
 * bf16 base (--base-dtype bf16): stores the frozen weights of the layer linears selected by
 * `modules` (LATHE_LORA_Q .. LATHE_LORA_DOWN bits) in bfloat16, rounded to nearest even, and
 * frees their f32 copies: half the memory. LATHE_LORA_LM_HEAD does the same for the LM head's
 * products: an untied lm_head.weight is stored in bf16; a tied head gets a bf16 copy (the
 * embedding lookup keeps reading the f32 table, and the copy's bytes count in the base's memory).
 * The embeddings and the norms stay f32. Their
 * products then round the activation (forward) or gradient (backward) to bf16 too and sum the
 * products in f32, with AVX512_BF16 dot products where the CPU has them. LoRA weights, their
 * gradients and the optimizer state stay f32. Call it after every weight is set; an NF4 linear
 * (QLoRA) keeps its codes and computes with bf16 tiles (dequantised tile rounded to bf16, the same
 * products); linears already in bf16 are left as they are.
 */
lathe_status lathe_model_convert_bf16(lathe_model* model, uint32_t modules, char* err, size_t err_len);

/*
 * Memory of the frozen base weights as stored now: `base_bytes` (f32 tensors 4 bytes per
 * element; NF4 linears about 0.516: codes, 8-bit absmax, f32 scales and offset) and
 * `base_params` (their element count). Either pointer may be NULL. LoRA tensors, optimizer state
 * and activations are not included.
 */
lathe_status lathe_model_memory(const lathe_model* model, uint64_t* base_bytes, uint64_t* base_params, char* err, size_t err_len);

/*
 * Gradient checkpointing (default off). When on, forward keeps only each decoder layer's input
 * (and the loss-side tensors) and backward recomputes each layer's forward from its saved input,
 * with the dropout RNG state saved before that layer, just before that layer's backward: the
 * same code on the same inputs, so loss and gradients are bit-identical to a run without it.
 */
lathe_status lathe_model_set_gradient_checkpointing(lathe_model* model, int32_t enabled, char* err, size_t err_len);

/*
 * Activation memory of the last lathe_forward_backward: `peak_bytes` is the most bytes held at
 * once for backward (saved layer inputs and intermediates, LoRA saves and dropout masks, the final
 * norm's input/output; not the gradient scratch buffers). 0 before the first call.
 */
lathe_status lathe_model_activation_bytes(const lathe_model* model, uint64_t* peak_bytes, char* err, size_t err_len);

/*
 * Of the labels of the last lathe_forward_backward, how many its logits predicted: the label is
 * the first maximal logit of its position (torch.argmax's choice on ties). With the label count,
 * the mean token accuracy of teacher forcing. 0 before the first call.
 */
lathe_status lathe_model_last_correct(const lathe_model* model, int64_t* correct, char* err, size_t err_len);

/*
 * Loads one .safetensors file: mmaps it read-only, parses its header (8-byte little-endian length,
 * then JSON) and sets every tensor in it by HF name, converting F16 and BF16 to f32 while
 * copying; then unmaps. A name the model does not know, or a shape that differs from the model's,
 * is INVALID_ARGUMENT (naming them); a dtype other than F32/F16/BF16 is UNSUPPORTED; a truncated
 * or malformed file is INVALID_ARGUMENT. Every check runs before any weight changes.
 */
lathe_status lathe_model_load_safetensors(lathe_model* model, const char* path, char* err, size_t err_len);

/*
 * Merges one LoRA pair into its base weight, in place (no model needed):
 *   w[rows, cols] += scale · b[rows, r] · a[r, cols]
 * w is the base Linear weight [out_features, in_features], a PEFT's lora_A [r, in], b lora_B
 * [out, r]; scale is lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA. Each element of b·a is
 * summed in f64, added to w in f64 and rounded to f32 once, as @lathe/models' mergeAdapter does
 * (bit-identical to it). Runs on up to `num_threads` threads (0: every hardware thread; fewer
 * for a small weight); the result does not depend on that number. `w` must not overlap `a` or
 * `b`. Rows, cols and r must be positive, scale finite: otherwise INVALID_ARGUMENT.
 */
lathe_status lathe_lora_merge(float* w, const float* a, const float* b, int64_t rows, int64_t cols, int32_t r, double scale,
                              int32_t num_threads, char* err, size_t err_len);

/*
 * The CPU backend's GEMM micro-kernel, chosen for this CPU at run time by CPUID: "avx512",
 * "avx2" or "portable" (no -march=native at build time, so one binary runs on any x86-64).
 */
const char* lathe_cpu_gemm_kernel(void);
/*
 * The f32 FMA peak that kernel's instruction set reaches on this machine: `threads` threads
 * (0 = the hardware's) each run independent register FMAs for about `seconds`; *gflops_out gets
 * their total GFLOP/s. Benchmarks print a step's achieved GFLOP/s against it.
 */
lathe_status lathe_cpu_fma_peak(int32_t threads, double seconds, double* gflops_out, char* err, size_t err_len);

/*
 * For tests: NF4 quantisation of `n` values exactly as lathe_model_quantize_nf4 stores a weight
 * (blocks of 64, double-quantised absmax), then dequantisation into `out` (n floats).
 * `codes_out`, when not NULL, receives the (n+1)/2 packed code bytes, bitsandbytes' order:
 * element 2i in the high nibble, 2i+1 in the low nibble (an odd n pads with code 7, 0.0).
 * Values must be finite.
 */
lathe_status lathe_nf4_roundtrip(const float* in, size_t n, float* out, uint8_t* codes_out, char* err, size_t err_len);

#ifdef __cplusplus
}
#endif

#endif /* LATHE_ENGINE_H */
