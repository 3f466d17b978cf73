// test_bf16.cpp — the bf16 base (lathe_model_convert_bf16, cpu/gemm_bf16.h): its products against
// an f64 product of the same bf16-rounded operands, the same bits for any thread count, and a
// model on a bf16 base against the same model on its f32 base.
//
// bf16 tolerance: a bf16 value carries 8 significant bits (relative rounding error up to 2^-9,
// ~2e-3), and the forward rounds both the weights and each linear's input. Against the f32 base
// we allow 2e-2 relative on each of 3 steps' losses and 5e-2 of the largest element on each LoRA
// gradient of step 1 (after a step the two models' LoRA weights differ, and Adam moves elements
// with tiny gradients by a full step, so later gradients are not compared); observed differences
// are printed.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cpu/gemm_bf16.h"
#include "rng.h"
#include "test_util.h"
#include "threads.h"

TEST(bf16_products_match_the_f64_product_of_bf16_operands_and_any_thread_count_gives_the_same_bits) {
  std::printf("  bf16 GEMM path on this CPU: %s\n", lathe::bf16_gemm_path());
  lathe::Rng rng(5, 1);
  // (K past 512 runs in equal slices; K >= 8 M and 8 N is a deep product, one task per thread
  // over all rows; beta = 0 stores the first slice without reading C)
  const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {97, 200, 259}, {12, 32, 16}, {130, 33, 600}, {25, 70, 513}, {40, 100, 1030}, {12, 40, 1100}};
  for (auto& s : sizes) {
    const int M = s[0], N = s[1], K = s[2];
    for (int trans_w = 0; trans_w < 2; ++trans_w)
    for (float beta : {1.0f, 0.0f}) {
      const auto A = t::random_vec(rng, static_cast<size_t>(M) * K, -1, 1);
      const auto Wf = t::random_vec(rng, static_cast<size_t>(K) * N, -1, 1);
      std::vector<uint16_t> W(Wf.size());
      for (size_t i = 0; i < W.size(); ++i) W[i] = lathe::f32_to_bf16(Wf[i]);
      const int ldw = trans_w ? K : N;  // W [N, K] or [K, N]
      auto C0 = t::random_vec(rng, static_cast<size_t>(M) * N, -1, 1);
      std::vector<double> ref(C0.size());
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double acc = 0;
          for (int k = 0; k < K; ++k) {
            const double a = lathe::bf16_to_f32(lathe::f32_to_bf16(A[static_cast<size_t>(i) * K + k]));
            const double w = lathe::bf16_to_f32(trans_w ? W[static_cast<size_t>(j) * K + k] : W[static_cast<size_t>(k) * N + j]);
            acc += a * w;
          }
          ref[static_cast<size_t>(i) * N + j] = 0.5 * acc + beta * C0[static_cast<size_t>(i) * N + j];
        }
      std::vector<float> C1 = C0, C3 = C0, work;
      lathe::ThreadPool p1(1), p3(3);
      lathe::sgemm_bf16(p1, trans_w, M, N, K, 0.5f, A.data(), K, W.data(), ldw, beta, C1.data(), N, work);
      lathe::sgemm_bf16(p3, trans_w, M, N, K, 0.5f, A.data(), K, W.data(), ldw, beta, C3.data(), N, work);
      double worst = 0;
      for (size_t i = 0; i < C1.size(); ++i) worst = std::max(worst, std::fabs(C1[i] - ref[i]));
      CHECK_MSG(worst < 1e-5 * std::sqrt(double(K)) + 1e-6, "M,N,K=" + std::to_string(M) + "," + std::to_string(N) + "," + std::to_string(K) +
                                                             " trans_w=" + std::to_string(trans_w) + " beta=" + std::to_string(beta) + " err " + std::to_string(worst));
      CHECK(std::memcmp(C1.data(), C3.data(), C1.size() * sizeof(float)) == 0);
    }
  }
}

namespace {

struct StepResult {
  float loss = 0;
  std::vector<std::vector<float>> grads;
};

StepResult step(lathe_model* m, const std::vector<std::string>& names, const lathe_model_config& c, int r) {
  const int B = 2, T = 9;
  std::vector<int32_t> tokens(B * T), labels(B * T);
  for (int i = 0; i < B * T; ++i) tokens[i] = (i * 7 + 3) % c.vocab_size;
  for (int i = 0; i < B * T; ++i) labels[i] = (i + 1) % T == 0 ? -100 : tokens[i + 1];
  char err[512];
  StepResult out;
  int64_t count = 0;
  CHECK(lathe_zero_grad(m, err, sizeof err) == LATHE_OK);
  CHECK_MSG(lathe_forward_backward(m, tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 0, 1.0f, &out.loss, &count, nullptr, err, sizeof err) ==
                LATHE_OK,
            err);
  for (const std::string& n : names) {
    std::vector<float> g(t::lora_count(c, n, r));
    CHECK(lathe_lora_grad(m, n.c_str(), g.data(), g.size(), err, sizeof err) == LATHE_OK);
    out.grads.push_back(std::move(g));
  }
  float norm = 0;
  CHECK(lathe_adamw_step(m, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, &norm, err, sizeof err) == LATHE_OK);
  return out;
}

}  // namespace

// modules: 0x7F (the linears) or 0xFF (and the LM head: an untied lm_head.weight is stored in
// bf16 instead of f32; a tied head gets a bf16 copy beside the f32 table the lookup reads).
// qlora: both models store the linears as NF4 first; the bf16 one then computes with bf16 tiles.
static void bf16_base_case(uint32_t modules, bool tied, bool qlora = false) {
  t::Spec s;
  s.tied = tied;
  s.hidden = 32;
  s.intermediate = 48;
  s.head_dim = 8;
  const lathe_model_config c = t::config_of(s);
  lathe_model* f32 = t::make_model(s);
  lathe_model* b16 = t::make_model(s);
  CHECK(f32 && b16);
  if (!f32 || !b16) return;
  char err[512];
  if (qlora) CHECK(lathe_model_quantize_nf4(f32, 0x7F, err, sizeof err) == LATHE_OK && lathe_model_quantize_nf4(b16, 0x7F, err, sizeof err) == LATHE_OK);
  uint64_t bytes_f32 = 0, bytes_b16 = 0;
  CHECK(lathe_model_memory(f32, &bytes_f32, nullptr, err, sizeof err) == LATHE_OK);
  CHECK_MSG(lathe_model_convert_bf16(b16, modules, err, sizeof err) == LATHE_OK, err);
  CHECK(lathe_model_memory(b16, &bytes_b16, nullptr, err, sizeof err) == LATHE_OK);
  const uint64_t H = c.hidden_size, I = c.intermediate_size, qd = uint64_t(c.num_heads) * c.head_dim, kd = uint64_t(c.num_kv_heads) * c.head_dim;
  const uint64_t linear_params = uint64_t(c.num_layers) * (2 * H * qd + 2 * H * kd + 3 * H * I);
  const int64_t head_params = (modules & LATHE_LORA_LM_HEAD) ? int64_t(c.vocab_size) * c.hidden_size : 0;
  // 4 bytes -> 2 per linear weight; an untied head saves as much, a tied head's copy costs 2 more
  const int64_t want_saved = (qlora ? 0 : int64_t(linear_params) * 2) + (tied ? -2 : 2) * head_params;  // NF4 codes stay
  CHECK_MSG(int64_t(bytes_f32) - int64_t(bytes_b16) == want_saved, "saved " + std::to_string(int64_t(bytes_f32) - int64_t(bytes_b16)) + " bytes, want " + std::to_string(want_saved));
  // Setting a converted weight fails, naming why.
  std::vector<float> w(static_cast<size_t>(c.hidden_size) * c.hidden_size);
  CHECK(lathe_model_set_weight(b16, "model.layers.0.self_attn.q_proj.weight", w.data(), w.size(), err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT &&
        std::strstr(err, qlora ? "NF4" : "bf16"));
  if (head_params) {  // the head's weight too (a tied head: the embedding table it copies)
    std::vector<float> e(static_cast<size_t>(head_params));
    CHECK(lathe_model_set_weight(b16, tied ? "model.embed_tokens.weight" : "lm_head.weight", e.data(), e.size(), err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT &&
          std::strstr(err, "bf16"));
  }
  lathe_lora_config lc{};
  lc.r = 4;
  lc.alpha = 8;
  lc.target_modules = 0x7F;
  lc.seed = 3;
  CHECK(lathe_lora_init(f32, &lc, err, sizeof err) == LATHE_OK && lathe_lora_init(b16, &lc, err, sizeof err) == LATHE_OK);
  // Non-zero B, so that every gradient flows.
  const auto names = t::lora_names(c, 0x7F);
  lathe::Rng rng(9, 1);
  for (const std::string& n : names)
    if (n.find("lora_B") != std::string::npos) {
      auto v = t::random_vec(rng, t::lora_count(c, n, lc.r), -0.05f, 0.05f);
      CHECK(lathe_lora_set(f32, n.c_str(), v.data(), v.size(), err, sizeof err) == LATHE_OK);
      CHECK(lathe_lora_set(b16, n.c_str(), v.data(), v.size(), err, sizeof err) == LATHE_OK);
    }
  double worst_loss = 0, worst_grad = 0;
  for (int k = 0; k < 3; ++k) {
    const StepResult a = step(f32, names, c, lc.r), b = step(b16, names, c, lc.r);
    const double dl = std::fabs(a.loss - b.loss) / std::fabs(a.loss);
    worst_loss = std::max(worst_loss, dl);
    CHECK_MSG(dl <= 2e-2, "step " + std::to_string(k + 1) + " loss f32 " + std::to_string(a.loss) + " bf16 " + std::to_string(b.loss));
    if (k > 0) continue;  // gradients on the same parameters: step 1 (later steps start from parameters that differ by then)
    for (size_t i = 0; i < names.size(); ++i) {
      double mx = 0, diff = 0;
      for (size_t j = 0; j < a.grads[i].size(); ++j) {
        mx = std::max(mx, double(std::fabs(a.grads[i][j])));
        diff = std::max(diff, double(std::fabs(a.grads[i][j] - b.grads[i][j])));
      }
      const double rel = mx > 0 ? diff / mx : diff;
      worst_grad = std::max(worst_grad, rel);
      CHECK_MSG(rel <= 5e-2, "step " + std::to_string(k + 1) + " " + names[i] + ": " + std::to_string(rel) + " of its largest element");
    }
  }
  std::printf("  bf16 base (%s%s%s) vs f32 base: losses of 3 steps within %.2e relative, step 1's LoRA gradients within %.2e of their largest element\n",
              head_params ? "linears and LM head" : "linears", tied ? ", tied" : "", qlora ? ", NF4 linears with bf16 tiles" : "", worst_loss, worst_grad);
  lathe_model_free(f32);
  lathe_model_free(b16);
}

TEST(a_bf16_base_halves_the_linears_memory_and_trains_within_bf16_tolerance_of_the_f32_base) {
  bf16_base_case(0x7F, false);
  bf16_base_case(0x7F, true);
}

TEST(qlora_with_bf16_tiles_trains_within_bf16_tolerance_of_qlora_with_f32_tiles) {
  bf16_base_case(0x7F, false, true);
  bf16_base_case(0xFF, true, true);
}

TEST(a_bf16_lm_head_halves_its_memory_untied_and_trains_within_bf16_tolerance_tied_or_not) {
  bf16_base_case(0xFF, false);
  bf16_base_case(0xFF, true);
  // an unknown bit is refused
  lathe_model* m = t::make_model(t::Spec{});
  char err[512];
  CHECK(m && lathe_model_convert_bf16(m, 0x100, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  lathe_model_free(m);
}
