// dev/bench.cpp — training throughput of the CPU engine (forward + backward + AdamW) on a random
// tiny model. Usage: lathe_engine_bench [threads=2] [batch=4] [seq=256] [preset=tiny|smol] [base=f32|bf16] [r=8] [steps=3]
// (timed after one warm-up step; prints the mean and the fastest step)
//   tiny: vocab 2048, hidden 128, intermediate 352, 4 layers, 4 heads / 2 kv (~1M params, tied)
//   smol: SmolLM-135M shape (vocab 49152, hidden 576, intermediate 1536, 30 layers, 9 / 3 heads)
// LoRA r 8 on all 7 projections. Prints tokens/s; no assertions (see STYLE.md: benchmarks print).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lathe_engine.h"
#include "rng.h"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2, B = argc > 2 ? std::atoi(argv[2]) : 4, T = argc > 3 ? std::atoi(argv[3]) : 256;
  const std::string preset = argc > 4 ? argv[4] : "tiny";
  const std::string base = argc > 5 ? argv[5] : "f32";
  const int r = argc > 6 ? std::atoi(argv[6]) : 8;
  const int steps = argc > 7 ? std::max(1, std::atoi(argv[7])) : 3;
  lathe_model_config c{};
  if (preset == "smol") {
    c.vocab_size = 49152; c.hidden_size = 576; c.intermediate_size = 1536; c.num_layers = 30; c.num_heads = 9; c.num_kv_heads = 3; c.head_dim = 64;
  } else {
    c.vocab_size = 2048; c.hidden_size = 128; c.intermediate_size = 352; c.num_layers = 4; c.num_heads = 4; c.num_kv_heads = 2; c.head_dim = 32;
  }
  c.rms_norm_eps = 1e-5f; c.rope_theta = 10000.0f; c.tie_word_embeddings = 1; c.num_threads = threads;
  c.backend = "cpu";  // the CPU engine's bench, also where a GPU would make "auto" choose CUDA
  char err[512];
  lathe_model* m = nullptr;
  if (lathe_model_init(&c, &m, err, sizeof err)) { std::fprintf(stderr, "%s\n", err); return 1; }
  lathe::Rng rng(1, 1);
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size, qd = c.num_heads * c.head_dim, kd = c.num_kv_heads * c.head_dim;
  int64_t params = 0;
  auto set = [&](const std::string& name, int64_t n, bool norm) {
    std::vector<float> v(n);
    for (auto& x : v) x = norm ? 1.0f : (rng.uniform() - 0.5f) * 0.1f;
    params += n;
    if (lathe_model_set_weight(m, name.c_str(), v.data(), n, err, sizeof err)) std::fprintf(stderr, "%s\n", err);
  };
  set("model.embed_tokens.weight", V * H, false);
  set("model.norm.weight", H, true);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    set(p + "input_layernorm.weight", H, true); set(p + "post_attention_layernorm.weight", H, true);
    set(p + "self_attn.q_proj.weight", qd * H, false); set(p + "self_attn.k_proj.weight", kd * H, false);
    set(p + "self_attn.v_proj.weight", kd * H, false); set(p + "self_attn.o_proj.weight", H * qd, false);
    set(p + "mlp.gate_proj.weight", I * H, false); set(p + "mlp.up_proj.weight", I * H, false); set(p + "mlp.down_proj.weight", H * I, false);
  }
  lathe_lora_config lc{};
  if (base == "bf16" && lathe_model_convert_bf16(m, 0xFF, err, sizeof err)) std::fprintf(stderr, "%s\n", err);
  lc.r = r; lc.alpha = 2.0f * r; lc.target_modules = 0x7F; lc.seed = 1;
  lathe_lora_init(m, &lc, err, sizeof err);
  std::vector<int32_t> tokens(B * T), labels(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = static_cast<int32_t>(rng.next() % V);
  for (int i = 0; i < B * T; ++i) labels[i] = (i + 1) % T == 0 ? -100 : tokens[i + 1];
  auto step = [&] {
    float loss, norm; int64_t count;
    lathe_zero_grad(m, err, sizeof err);
    if (lathe_forward_backward(m, tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 1, 1.0f, &loss, &count, nullptr, err, sizeof err)) std::fprintf(stderr, "%s\n", err);
    lathe_adamw_step(m, 1e-4f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, &norm, err, sizeof err);
  };
  step();
  double s = 0, fastest = 1e30;
  for (int i = 0; i < steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    step();
    const double d = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s += d;
    fastest = std::min(fastest, d);
  }
  std::printf("preset %s (%.2fM params, %s base, r %d), batch %d x seq %d, threads %d: %.0f tokens/s (forward+backward+adamw), %.3f s/step; fastest step %.0f tokens/s\n",
              preset.c_str(), params / 1e6, base.c_str(), r, B, T, threads, steps * double(B) * T / s, s / steps, double(B) * T / fastest);
  lathe_model_free(m);
}
