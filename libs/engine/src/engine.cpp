// engine.cpp — the C API of include/lathe_engine.h over model.cpp.
//
// Every entry point catches everything: lathe::Error keeps its status and message (which ends
// with the file and line that raised it, common.h), std::bad_alloc becomes
// LATHE_ERR_OUT_OF_MEMORY, any other exception LATHE_ERR_INTERNAL. Messages name the function
// and the tensor/shape concerned; they are copied into `err` (NUL-terminated, truncated to
// err_len) when err is not NULL.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include "common.h"
#include "lathe_engine.h"
#include "cpu/lora_merge.h"
#include "cpu/gemm_kernels.h"
#include "model.h"
#include "nf4.h"

namespace {

void write_err(char* err, size_t err_len, const char* fn, const std::string& msg) {
  if (!err || err_len == 0) return;
  std::snprintf(err, err_len, "%s: %s", fn, msg.c_str());
}

template <class F>
lathe_status guarded(const char* fn, char* err, size_t err_len, F&& body) {
  if (err && err_len) err[0] = '\0';
  try {
    body();
    return LATHE_OK;
  } catch (const lathe::Error& e) {
    write_err(err, err_len, fn, e.what());
    return e.status;
  } catch (const std::bad_alloc&) {
    write_err(err, err_len, fn, "out of memory");
    return LATHE_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    write_err(err, err_len, fn, std::string("internal error: ") + e.what());
    return LATHE_ERR_INTERNAL;
  } catch (...) {
    write_err(err, err_len, fn, "internal error (unknown exception)");
    return LATHE_ERR_INTERNAL;
  }
}

// The error names the caller's line (common.h).
void need(const void* p, const char* what, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  if (!p) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL", file, line);
}

}  // namespace

extern "C" {

const char* lathe_status_string(lathe_status status) {
  switch (status) {
    case LATHE_OK: return "OK";
    case LATHE_ERR_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case LATHE_ERR_UNSUPPORTED: return "UNSUPPORTED";
    case LATHE_ERR_OUT_OF_MEMORY: return "OUT_OF_MEMORY";
    case LATHE_ERR_NAN: return "NAN";
    case LATHE_ERR_CANCELLED: return "CANCELLED";
    case LATHE_ERR_INTERNAL: return "INTERNAL";
  }
  return "INTERNAL";
}

lathe_status lathe_model_init(const lathe_model_config* config, lathe_model** out, char* err, size_t err_len) {
  return guarded("lathe_model_init", err, err_len, [&] {
    need(config, "config");
    need(out, "out");
    *out = nullptr;
    auto* m = new lathe_model();
    try {
      lathe::model_init(*m, *config);
    } catch (...) {
      delete m;
      throw;
    }
    *out = m;
  });
}

void lathe_model_free(lathe_model* model) { delete model; }

const char* lathe_backend_name(int32_t index) {
  // The registry is built on first use and may throw (an incomplete table): no name then.
  try {
    const lathe_backend* b = lathe_backend_get(index);
    return b ? b->name : nullptr;
  } catch (...) {
    return nullptr;
  }
}

const char* lathe_model_backend(const lathe_model* model) { return model && model->backend.ops ? model->backend.ops->name : nullptr; }

lathe_status lathe_model_set_weight(lathe_model* model, const char* name, const float* data, size_t count, char* err, size_t err_len) {
  return guarded("lathe_model_set_weight", err, err_len, [&] {
    need(model, "model");
    need(name, "name");
    lathe::model_set_weight(*model, name, data, count);
  });
}

lathe_status lathe_lora_init(lathe_model* model, const lathe_lora_config* config, char* err, size_t err_len) {
  return guarded("lathe_lora_init", err, err_len, [&] {
    need(model, "model");
    need(config, "config");
    lathe::model_lora_init(*model, *config);
  });
}

static void lora_copy(lathe_model* model, const char* name, float* out, const float* in, size_t count, int which) {
  need(model, "model");
  need(name, "name");
  std::vector<int64_t> shape;
  lathe::Buffer<float>& t = lathe::model_lora_tensor(*model, name, which, &shape);
  if (count != t.size())
    throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, std::string(name) + ": expected " + std::to_string(t.size()) + " elements (shape " +
                                                       lathe::shape_str(shape) + "), got " + std::to_string(count));
  if (in) t.assign(model->backend, in, count);
  else { need(out, "out"); t.to_host(out); }
}

lathe_status lathe_lora_set(lathe_model* model, const char* name, const float* data, size_t count, char* err, size_t err_len) {
  return guarded("lathe_lora_set", err, err_len, [&] {
    need(data, "data");
    lora_copy(model, name, nullptr, data, count, 0);
  });
}

lathe_status lathe_lora_get(const lathe_model* model, const char* name, float* out, size_t count, char* err, size_t err_len) {
  return guarded("lathe_lora_get", err, err_len, [&] { lora_copy(const_cast<lathe_model*>(model), name, out, nullptr, count, 0); });
}

lathe_status lathe_lora_grad(const lathe_model* model, const char* name, float* out, size_t count, char* err, size_t err_len) {
  return guarded("lathe_lora_grad", err, err_len, [&] { lora_copy(const_cast<lathe_model*>(model), name, out, nullptr, count, 1); });
}

lathe_status lathe_zero_grad(lathe_model* model, char* err, size_t err_len) {
  return guarded("lathe_zero_grad", err, err_len, [&] {
    need(model, "model");
    lathe::model_zero_grad(*model);
  });
}

lathe_status lathe_forward_backward(lathe_model* model, const int32_t* tokens, const int32_t* labels, const int32_t* positions,
                                    const int32_t* segments, int32_t batch, int32_t seq, int32_t backward, int32_t training,
                                    float grad_scale, float* loss_out, int64_t* label_count_out, float* logits_out, char* err,
                                    size_t err_len) {
  return guarded("lathe_forward_backward", err, err_len, [&] {
    need(model, "model");
    lathe::model_forward_backward(*model, tokens, labels, positions, segments, batch, seq, backward != 0, training != 0, grad_scale,
                                  loss_out, label_count_out, logits_out);
  });
}

lathe_status lathe_hidden_states(lathe_model* model, const int32_t* tokens, const int32_t* lengths, int32_t count, int32_t layer,
                                 float* out, size_t out_count, char* err, size_t err_len) {
  return guarded("lathe_hidden_states", err, err_len, [&] {
    need(model, "model");
    lathe::model_hidden_states(*model, tokens, lengths, count, layer, out, out_count);
  });
}

lathe_status lathe_adamw_step(lathe_model* model, float lr, float beta1, float beta2, float eps, float weight_decay, float max_grad_norm,
                              float* grad_norm_out, char* err, size_t err_len) {
  return guarded("lathe_adamw_step", err, err_len, [&] {
    need(model, "model");
    const float norm = lathe::model_adamw_step(*model, lr, beta1, beta2, eps, weight_decay, max_grad_norm);
    if (grad_norm_out) *grad_norm_out = norm;
  });
}

// A LoRA tensor's AdamW moments: which 0 reads into m_out/v_out, 1 writes from m/v.
static void adam_copy(lathe_model* model, const char* name, float* m_out, float* v_out, const float* m_in, const float* v_in, size_t count) {
  need(model, "model");
  need(name, "name");
  std::vector<int64_t> shape;
  const lathe::Buffer<float>& p = lathe::model_lora_tensor(*model, name, 0, &shape);
  if (count != p.size())
    throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, std::string(name) + ": expected " + std::to_string(p.size()) + " elements (shape " +
                                                       lathe::shape_str(shape) + "), got " + std::to_string(count));
  lathe::Buffer<float>* mv[2];
  lathe::model_adam_moments(*model, name, &mv[0], &mv[1]);
  if (m_in) {
    mv[0]->assign(model->backend, m_in, count);
    mv[1]->assign(model->backend, v_in, count);
  } else {
    mv[0]->to_host(m_out);
    mv[1]->to_host(v_out);
  }
}

lathe_status lathe_adamw_state_get(const lathe_model* model, const char* name, float* m_out, float* v_out, size_t count, char* err, size_t err_len) {
  return guarded("lathe_adamw_state_get", err, err_len, [&] {
    need(m_out, "m_out");
    need(v_out, "v_out");
    adam_copy(const_cast<lathe_model*>(model), name, m_out, v_out, nullptr, nullptr, count);
  });
}

lathe_status lathe_adamw_state_set(lathe_model* model, const char* name, const float* m, const float* v, size_t count, char* err, size_t err_len) {
  return guarded("lathe_adamw_state_set", err, err_len, [&] {
    need(m, "m");
    need(v, "v");
    for (size_t i = 0; i < count; ++i)
      if (!std::isfinite(m[i]) || !std::isfinite(v[i]) || v[i] < 0.0f)
        throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, std::string(name ? name : "?") + ": moment " + std::to_string(i) + " is not finite (or v < 0)");
    adam_copy(model, name, nullptr, nullptr, m, v, count);
  });
}

lathe_status lathe_adamw_step_count_get(const lathe_model* model, int64_t* step_out, char* err, size_t err_len) {
  return guarded("lathe_adamw_step_count_get", err, err_len, [&] {
    need(model, "model");
    need(step_out, "step_out");
    *step_out = model->adam_step;
  });
}

lathe_status lathe_adamw_step_count_set(lathe_model* model, int64_t step, char* err, size_t err_len) {
  return guarded("lathe_adamw_step_count_set", err, err_len, [&] {
    need(model, "model");
    if (step < 0) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "step must be >= 0, got " + std::to_string(step));
    model->adam_step = step;
  });
}

lathe_status lathe_rng_state_get(const lathe_model* model, uint64_t state_out[4], char* err, size_t err_len) {
  return guarded("lathe_rng_state_get", err, err_len, [&] {
    need(model, "model");
    need(state_out, "state_out");
    for (int i = 0; i < 4; ++i) state_out[i] = model->dropout_rng.s[i];
  });
}

lathe_status lathe_rng_state_set(lathe_model* model, const uint64_t state[4], char* err, size_t err_len) {
  return guarded("lathe_rng_state_set", err, err_len, [&] {
    need(model, "model");
    need(state, "state");
    if ((state[0] | state[1] | state[2] | state[3]) == 0) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "the all-zero xoshiro256** state is invalid");
    for (int i = 0; i < 4; ++i) model->dropout_rng.s[i] = state[i];
  });
}

lathe_status lathe_model_quantize_nf4(lathe_model* model, uint32_t modules, char* err, size_t err_len) {
  return guarded("lathe_model_quantize_nf4", err, err_len, [&] {
    need(model, "model");
    lathe::model_quantize_nf4(*model, modules);
  });
}

lathe_status lathe_model_convert_bf16(lathe_model* model, uint32_t modules, char* err, size_t err_len) {
  return guarded("lathe_model_convert_bf16", err, err_len, [&] {
    need(model, "model");
    lathe::model_convert_bf16(*model, modules);
  });
}

lathe_status lathe_model_memory(const lathe_model* model, uint64_t* base_bytes, uint64_t* base_params, char* err, size_t err_len) {
  return guarded("lathe_model_memory", err, err_len, [&] {
    need(model, "model");
    lathe::model_memory(*model, base_bytes, base_params);
  });
}

lathe_status lathe_model_set_gradient_checkpointing(lathe_model* model, int32_t enabled, char* err, size_t err_len) {
  return guarded("lathe_model_set_gradient_checkpointing", err, err_len, [&] {
    need(model, "model");
    model->grad_ckpt = enabled != 0;
    if (!model->grad_ckpt) {
      model->ck = lathe::LayerActs();
    }
  });
}

lathe_status lathe_model_activation_bytes(const lathe_model* model, uint64_t* peak_bytes, char* err, size_t err_len) {
  return guarded("lathe_model_activation_bytes", err, err_len, [&] {
    need(model, "model");
    need(peak_bytes, "peak_bytes");
    *peak_bytes = model->act_peak_bytes;
  });
}

lathe_status lathe_model_last_correct(const lathe_model* model, int64_t* correct, char* err, size_t err_len) {
  return guarded("lathe_model_last_correct", err, err_len, [&] {
    need(model, "model");
    need(correct, "correct");
    *correct = model->last_correct;
  });
}

lathe_status lathe_model_load_safetensors(lathe_model* model, const char* path, char* err, size_t err_len) {
  return guarded("lathe_model_load_safetensors", err, err_len, [&] {
    need(model, "model");
    need(path, "path");
    lathe::model_load_safetensors(*model, path);
    lathe::model_weights_changed(*model);
  });
}

lathe_status lathe_lora_merge(float* w, const float* a, const float* b, int64_t rows, int64_t cols, int32_t r, double scale,
                              int32_t num_threads, char* err, size_t err_len) {
  return guarded("lathe_lora_merge", err, err_len, [&] {
    need(w, "w");
    need(a, "a");
    need(b, "b");
    if (rows <= 0 || cols <= 0 || r <= 0)
      throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "rows, cols and r must be positive, got " + std::to_string(rows) + ", " +
                                                         std::to_string(cols) + ", " + std::to_string(r));
    if (rows > INT64_MAX / cols) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "rows x cols overflows");
    if (!std::isfinite(scale)) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "scale must be finite");
    // Threads cost tens of microseconds to start: give each at least ~1M multiply-adds.
    const double work = static_cast<double>(rows) * static_cast<double>(cols) * r;
    const int64_t hardware = num_threads > 0 ? num_threads : std::max(1u, std::thread::hardware_concurrency());
    const int64_t threads = std::min({static_cast<int64_t>(work / (1 << 20)) + 1, hardware, rows});
    lathe::ThreadPool pool(static_cast<int>(threads));
    lathe::lora_merge(pool, w, a, b, rows, cols, r, scale);
  });
}

lathe_status lathe_nf4_roundtrip(const float* in, size_t n, float* out, uint8_t* codes_out, char* err, size_t err_len) {
  return guarded("lathe_nf4_roundtrip", err, err_len, [&] {
    if (n == 0) return;
    need(in, "in");
    need(out, "out");
    for (size_t i = 0; i < n; ++i)
      if (!std::isfinite(in[i])) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "in[" + std::to_string(i) + "] is not finite");
    const lathe::nf4::Quantized t = lathe::nf4::quantize_tensor(in, 1, static_cast<int64_t>(n));
    lathe::nf4::dequantize_rows(t, 0, 1, out);
    if (codes_out) std::memcpy(codes_out, t.codes.data(), t.codes.size());
  });
}

const char* lathe_cpu_gemm_kernel(void) { return lathe::cpu::gemm_kernel_best().name; }

lathe_status lathe_cpu_fma_peak(int32_t threads, double seconds, double* gflops_out, char* err, size_t err_len) {
  return guarded("lathe_cpu_fma_peak", err, err_len, [&] {
    need(gflops_out, "gflops_out");
    if (threads < 0) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "threads must be >= 0, got " + std::to_string(threads));
    if (!(seconds > 0.0 && seconds <= 60.0)) throw lathe::Error(LATHE_ERR_INVALID_ARGUMENT, "seconds must be in (0, 60]");
    const lathe::cpu::GemmKernel& k = lathe::cpu::gemm_kernel_best();
    lathe::ThreadPool pool(threads);
    const int n = pool.size();
    std::vector<double> flops(n, 0.0);
    std::atomic<int> started{0};
    std::chrono::steady_clock::time_point t0;
    // One task per thread: each waits until all have started (so no thread takes two), then runs
    // short rounds until the deadline.
    pool.run(n, [&](int64_t, int thread) {
      if (started.fetch_add(1) + 1 == n) t0 = std::chrono::steady_clock::now();
      while (started.load() < n) std::this_thread::yield();
      const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
      do flops[thread] += k.fma_peak(int64_t{1} << 18);
      while (std::chrono::steady_clock::now() < until);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0.0;
    for (double f : flops) total += f;
    *gflops_out = total / s / 1e9;
  });
}

}  // extern "C"
