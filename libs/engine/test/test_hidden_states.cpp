// test_hidden_states.cpp — lathe_hidden_states through the C API: layer 0 is the embedding rows,
// the last layer times the LM head gives the forward's logits, a sequence packed with others
// gets what it gets alone, the call leaves training state alone, and bad arguments come back as
// INVALID_ARGUMENT naming what was wrong. (Values against PyTorch: ts/hidden-states.test.ts.)
#include <algorithm>
#include <memory>

#include "model.h"
#include "test_util.h"

namespace {

using ModelPtr = std::unique_ptr<lathe_model, void (*)(lathe_model*)>;

// LoRA on every layer projection with random non-zero B, so the adapter changes the hidden states.
void add_lora(lathe_model* m, const lathe_model_config& c, float dropout) {
  lathe_lora_config lc{};
  lc.r = 4;
  lc.alpha = 8.0f;
  lc.dropout = dropout;
  lc.target_modules = 0x7F;
  lc.seed = 3;
  char err[256];
  CHECK_OK(lathe_lora_init(m, &lc, err, sizeof err));
  lathe::Rng rng(9, 9);
  for (auto& n : t::lora_names(c, lc.target_modules))
    if (n.find("lora_B") != std::string::npos) {
      auto v = t::random_vec(rng, t::lora_count(c, n, lc.r), -0.2f, 0.2f);
      CHECK_OK(lathe_lora_set(m, n.c_str(), v.data(), v.size(), err, sizeof err));
    }
}

// Two sequences of different lengths, one after another.
const std::vector<int32_t> kLengths = {5, 8};
std::vector<int32_t> two_sequences(int vocab) {
  std::vector<int32_t> tokens(13);
  for (int i = 0; i < 13; ++i) tokens[i] = (i * 7 + 3) % vocab;
  return tokens;
}

std::vector<float> hidden(lathe_model* m, const std::vector<int32_t>& tokens, const std::vector<int32_t>& lengths, int layer, int H) {
  std::vector<float> out(tokens.size() * H);
  char err[512];
  const lathe_status st = lathe_hidden_states(m, tokens.data(), lengths.data(), static_cast<int32_t>(lengths.size()), layer, out.data(),
                                              out.size(), err, sizeof err);
  CHECK_MSG(st == LATHE_OK, err);
  return out;
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) worst = std::max(worst, double(std::fabs(a[i] - b[i])));
  return worst;
}

}  // namespace

TEST(hidden_states_layer_0_is_the_embedding_rows) {
  t::Spec s;
  ModelPtr m(t::make_model(s), lathe_model_free);
  const auto c = t::config_of(s);
  auto tokens = two_sequences(c.vocab_size);
  auto h = hidden(m.get(), tokens, kLengths, 0, c.hidden_size);
  const std::vector<float>& embed = m->weights.at("model.embed_tokens.weight").data;  // the host values
  for (size_t n = 0; n < tokens.size(); ++n)
    CHECK(std::equal(h.begin() + n * c.hidden_size, h.begin() + (n + 1) * c.hidden_size, embed.begin() + size_t(tokens[n]) * c.hidden_size));
}

TEST(hidden_states_of_the_last_layer_times_the_head_give_the_forward_logits) {
  t::Spec s;
  ModelPtr m(t::make_model(s), lathe_model_free);
  const auto c = t::config_of(s);
  add_lora(m.get(), c, 0.1f);  // dropout is on in training only: neither call below applies it
  const int H = c.hidden_size, V = c.vocab_size;
  auto tokens = two_sequences(V);
  auto h = hidden(m.get(), tokens, kLengths, c.num_layers, H);
  const std::vector<float>& head = m->weights.at(s.tied ? "model.embed_tokens.weight" : "lm_head.weight").data;  // the host values
  char err[512];
  for (size_t q = 0, first = 0; q < kLengths.size(); first += kLengths[q], ++q) {
    const int T = kLengths[q];
    std::vector<float> logits(size_t(T) * V);
    CHECK_OK(lathe_forward_backward(m.get(), tokens.data() + first, nullptr, nullptr, nullptr, 1, T, 0, 0, 1.0f, nullptr, nullptr, logits.data(), err,
                                    sizeof err));
    double worst = 0, scale = 0;
    for (int i = 0; i < T; ++i)
      for (int v = 0; v < V; ++v) {
        double dot = 0;
        for (int k = 0; k < H; ++k) dot += double(h[(first + i) * H + k]) * head[size_t(v) * H + k];
        worst = std::max(worst, std::fabs(dot - logits[size_t(i) * V + v]));
        scale = std::max(scale, std::fabs(dot));
      }
    CHECK_MSG(worst <= 1e-5 * scale, "sequence " + std::to_string(q) + ": " + std::to_string(worst) + " of " + std::to_string(scale));
  }
}

TEST(hidden_states_of_a_sequence_do_not_depend_on_the_others_in_the_call) {
  t::Spec s;
  ModelPtr m(t::make_model(s), lathe_model_free);
  const auto c = t::config_of(s);
  add_lora(m.get(), c, 0.0f);
  const int H = c.hidden_size;
  auto tokens = two_sequences(c.vocab_size);
  for (int layer = 0; layer <= c.num_layers; ++layer) {
    auto both = hidden(m.get(), tokens, kLengths, layer, H);
    std::vector<int32_t> second(tokens.begin() + kLengths[0], tokens.end());
    auto alone = hidden(m.get(), second, {kLengths[1]}, layer, H);
    const double worst = max_abs_diff(both.data() + size_t(kLengths[0]) * H, alone.data(), alone.size());
    CHECK_MSG(worst <= 1e-5, "layer " + std::to_string(layer) + ": " + std::to_string(worst));
  }
}

TEST(hidden_states_leave_gradients_rng_and_the_next_training_step_unchanged) {
  t::Spec s;
  const auto c = t::config_of(s);
  const int B = 1, T = 13;
  auto tokens = two_sequences(c.vocab_size);
  std::vector<int32_t> labels(T);
  for (int i = 0; i < T; ++i) labels[i] = i + 1 < T ? tokens[i + 1] : -100;
  std::vector<std::vector<float>> grads[2];
  float loss[2];
  uint64_t rng_before[4], rng_after[4];
  char err[512];
  for (int run = 0; run < 2; ++run) {
    ModelPtr m(t::make_model(s), lathe_model_free);
    add_lora(m.get(), c, 0.1f);
    CHECK_OK(lathe_zero_grad(m.get(), err, sizeof err));
    if (run == 1) {
      CHECK_OK(lathe_rng_state_get(m.get(), rng_before, err, sizeof err));
      for (int layer = 0; layer <= c.num_layers; ++layer) hidden(m.get(), tokens, kLengths, layer, c.hidden_size);
      CHECK_OK(lathe_rng_state_get(m.get(), rng_after, err, sizeof err));
      CHECK(std::equal(rng_before, rng_before + 4, rng_after));
      for (auto& kv : m->loras) {
        const std::vector<float> gA = kv.second->gA.to_host();
        CHECK(std::all_of(gA.begin(), gA.end(), [](float g) { return g == 0.0f; }));
        CHECK(kv.second->u.empty());  // nothing kept for backward
      }
    }
    int64_t count = 0;
    CHECK_OK(lathe_forward_backward(m.get(), tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 1, 1.0f, &loss[run], &count, nullptr, err,
                                    sizeof err));
    for (auto& kv : m->loras) grads[run].push_back(kv.second->gA.to_host()), grads[run].push_back(kv.second->gB.to_host());
  }
  CHECK(loss[0] == loss[1]);
  CHECK(grads[0] == grads[1]);
}

TEST(hidden_states_reject_bad_arguments_with_a_message) {
  t::Spec s;
  ModelPtr m(t::make_model(s), lathe_model_free);
  const auto c = t::config_of(s);
  const int H = c.hidden_size;
  auto tokens = two_sequences(c.vocab_size);
  std::vector<float> out(tokens.size() * H);
  char err[512];
  auto call = [&](const std::vector<int32_t>& tok, const std::vector<int32_t>& lengths, int layer, size_t out_count) {
    return lathe_hidden_states(m.get(), tok.data(), lengths.data(), static_cast<int32_t>(lengths.size()), layer, out.data(), out_count, err,
                               sizeof err);
  };
  CHECK(call(tokens, kLengths, c.num_layers + 1, out.size()) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "layer 3 is outside [0, 2]") != nullptr);
  CHECK(call(tokens, kLengths, -1, out.size()) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "layer -1") != nullptr);
  CHECK(call(tokens, {5, 0, 8}, 1, out.size()) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "sequence 1 is empty") != nullptr);
  auto bad = tokens;
  bad[7] = c.vocab_size;
  CHECK(call(bad, kLengths, 1, out.size()) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "sequence 1, token 2: id 41 is outside the vocabulary [0, 41)") != nullptr);
  CHECK(call(tokens, kLengths, 1, out.size() - 1) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "expected sum(lengths) * hidden_size = 13 * 16 = 208") != nullptr);
  CHECK(lathe_hidden_states(m.get(), tokens.data(), kLengths.data(), 0, 1, out.data(), out.size(), err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "count must be > 0") != nullptr);
}
