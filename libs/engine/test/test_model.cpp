// test_model.cpp — behaviour of the whole model through the C API: chunked cross-entropy equals
// one chunk, packing segments isolate each other, seeded determinism (also across thread
// counts), training lowers the loss, and errors come back as a status and a message.
#include <algorithm>

#include "model.h"
#include "test_util.h"

namespace {

lathe_lora_config lora_all(uint64_t seed, float dropout = 0.0f) {
  lathe_lora_config lc{};
  lc.r = 4;
  lc.alpha = 8.0f;
  lc.dropout = dropout;
  lc.target_modules = 0xFF;
  lc.seed = seed;
  return lc;
}

std::vector<int32_t> iota_tokens(int n, int vocab, int mul) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = (i * mul + 3) % vocab;
  return v;
}

void randomise_b(lathe_model* m, const lathe_model_config& c, const lathe_lora_config& lc) {
  lathe::Rng rng(5, 5);
  char err[256];
  for (auto& n : t::lora_names(c, lc.target_modules))
    if (n.find("lora_B") != std::string::npos) {
      auto v = t::random_vec(rng, t::lora_count(c, n, lc.r), -0.2f, 0.2f);
      lathe_lora_set(m, n.c_str(), v.data(), v.size(), err, sizeof err);
    }
}

}  // namespace

TEST(chunked_cross_entropy_equals_a_single_chunk) {
  t::Spec s;
  lathe_model* m = t::make_model(s);
  const auto c = t::config_of(s);
  char err[256];
  auto lc = lora_all(1);
  CHECK_OK(lathe_lora_init(m, &lc, err, sizeof err));
  randomise_b(m, c, lc);
  const int B = 2, T = 11;
  auto tokens = iota_tokens(B * T, c.vocab_size, 7);
  std::vector<int32_t> labels(B * T);
  for (int i = 0; i < B * T; ++i) labels[i] = i % 3 == 0 ? -100 : tokens[(i + 1) % (B * T)];
  std::vector<float> results[2], logits[2];
  float loss[2];
  const int64_t chunks[2] = {1, 1000};
  for (int k = 0; k < 2; ++k) {
    m->ce_chunk_rows = chunks[k];
    logits[k].resize(static_cast<size_t>(B) * T * c.vocab_size);
    int64_t count;
    CHECK_OK(lathe_zero_grad(m, err, sizeof err));
    CHECK_OK(lathe_forward_backward(m, tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 0, 1.0f, &loss[k], &count, logits[k].data(), err, sizeof err));
    for (auto& n : t::lora_names(c, lc.target_modules)) {
      std::vector<float> g(t::lora_count(c, n, lc.r));
      lathe_lora_grad(m, n.c_str(), g.data(), g.size(), err, sizeof err);
      results[k].insert(results[k].end(), g.begin(), g.end());
    }
  }
  CHECK(std::fabs(loss[0] - loss[1]) <= 1e-6f * std::fabs(loss[1]));
  CHECK(logits[0] == logits[1]);
  double worst = 0;
  for (size_t i = 0; i < results[0].size(); ++i) worst = std::max(worst, double(std::fabs(results[0][i] - results[1][i])));
  CHECK_MSG(worst <= 1e-6, std::to_string(worst));
  lathe_model_free(m);
}

TEST(a_packed_segment_is_independent_of_the_other_segments_in_its_row) {
  t::Spec s;
  lathe_model* m = t::make_model(s);
  const auto c = t::config_of(s);
  const int V = c.vocab_size, T = 12;
  // row: segment 0 = tokens 0..4, segment 1 = tokens 5..11
  auto tokens = iota_tokens(T, V, 5);
  std::vector<int32_t> seg(T), pos(T);
  for (int i = 0; i < T; ++i) {
    seg[i] = i < 5 ? 0 : 1;
    pos[i] = i < 5 ? i : i - 5;
  }
  char err[256];
  std::vector<float> a(T * V), b(T * V), alone(7 * V);
  CHECK_OK(lathe_forward_backward(m, tokens.data(), nullptr, pos.data(), seg.data(), 1, T, 0, 0, 1.0f, nullptr, nullptr, a.data(), err, sizeof err));
  auto changed = tokens;
  for (int i = 0; i < 5; ++i) changed[i] = (changed[i] + 11) % V;
  CHECK_OK(lathe_forward_backward(m, changed.data(), nullptr, pos.data(), seg.data(), 1, T, 0, 0, 1.0f, nullptr, nullptr, b.data(), err, sizeof err));
  CHECK(std::equal(a.begin() + 5 * V, a.end(), b.begin() + 5 * V));   // segment 1 unchanged, bit for bit
  CHECK(!std::equal(a.begin(), a.begin() + 5 * V, b.begin()));        // segment 0 did change
  // and segment 1 alone in its own row gives the same logits
  std::vector<int32_t> t1(tokens.begin() + 5, tokens.end());
  CHECK_OK(lathe_forward_backward(m, t1.data(), nullptr, nullptr, nullptr, 1, 7, 0, 0, 1.0f, nullptr, nullptr, alone.data(), err, sizeof err));
  double worst = 0;
  for (int i = 0; i < 7 * V; ++i) worst = std::max(worst, double(std::fabs(alone[i] - a[5 * V + i])));
  CHECK_MSG(worst <= 1e-5, std::to_string(worst));
  lathe_model_free(m);
}

namespace {
// 20 AdamW steps memorising 2 sequences; returns the losses and the final parameters.
std::vector<float> train(int threads, uint64_t seed, float dropout, std::vector<float>* losses) {
  t::Spec s;
  s.threads = threads;
  s.vocab = 64;
  s.hidden = 32;
  s.intermediate = 48;
  s.head_dim = 8;
  lathe_model* m = t::make_model(s);
  const auto c = t::config_of(s);
  char err[256];
  auto lc = lora_all(seed, dropout);
  CHECK_OK(lathe_lora_init(m, &lc, err, sizeof err));
  const int B = 2, T = 16;
  std::vector<int32_t> tokens(B * T), labels(B * T);
  lathe::Rng rng(42, 42);
  for (auto& x : tokens) x = static_cast<int32_t>(rng.next() % c.vocab_size);
  for (int i = 0; i < B * T; ++i) labels[i] = (i + 1) % T == 0 ? -100 : tokens[i + 1];
  for (int step = 0; step < 20; ++step) {
    float loss, norm;
    int64_t count;
    CHECK_OK(lathe_zero_grad(m, err, sizeof err));
    CHECK_OK(lathe_forward_backward(m, tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 1, 1.0f, &loss, &count, nullptr, err, sizeof err));
    CHECK_OK(lathe_adamw_step(m, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, &norm, err, sizeof err));
    if (losses) losses->push_back(loss);
  }
  std::vector<float> params;
  for (auto& n : t::lora_names(c, lc.target_modules)) {
    std::vector<float> p(t::lora_count(c, n, lc.r));
    lathe_lora_get(m, n.c_str(), p.data(), p.size(), err, sizeof err);
    params.insert(params.end(), p.begin(), p.end());
  }
  lathe_model_free(m);
  return params;
}
}  // namespace

TEST(twenty_adamw_steps_memorising_two_sequences_lower_the_loss) {
  std::vector<float> losses;
  train(2, 1, 0.0f, &losses);
  std::fprintf(stderr, "  loss %.4f -> %.4f\n", losses.front(), losses.back());
  CHECK(losses.back() < 0.5f * losses.front());
}

TEST(same_seed_gives_identical_bits_with_dropout_and_across_thread_counts) {
  const auto a = train(1, 9, 0.1f, nullptr), b = train(3, 9, 0.1f, nullptr), d = train(2, 10, 0.1f, nullptr);
  CHECK(a == b);
  CHECK(a != d);
}

TEST(errors_come_back_as_a_status_and_a_message) {
  t::Spec s;
  const auto c = t::config_of(s);
  lathe_model* m = nullptr;
  char err[512];
  CHECK(lathe_model_init(&c, &m, err, sizeof err) == LATHE_OK);
  std::vector<float> w(16 * 16);
  CHECK(lathe_model_set_weight(m, "model.layers.0.self_attn.qq_proj.weight", w.data(), w.size(), err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "qq_proj") != nullptr);
  CHECK(lathe_model_set_weight(m, "model.layers.0.self_attn.k_proj.weight", w.data(), 5, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "k_proj") && std::strstr(err, "[8, 16]") && std::strstr(err, "got 5"));
  std::vector<int32_t> tok(4, 1);
  CHECK(lathe_forward_backward(m, tok.data(), tok.data(), nullptr, nullptr, 1, 4, 0, 0, 1.0f, nullptr, nullptr, nullptr, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "never set") != nullptr);
  lathe_model_free(m);

  m = t::make_model(s);
  tok[2] = c.vocab_size;
  CHECK(lathe_forward_backward(m, tok.data(), nullptr, nullptr, nullptr, 1, 4, 0, 0, 1.0f, nullptr, nullptr, nullptr, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "tokens[2]") != nullptr);
  float x;
  CHECK(lathe_lora_get(m, "model.layers.0.self_attn.q_proj.lora_A.weight", &x, 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  auto lc = lora_all(1);
  lc.target_modules = LATHE_LORA_Q;
  CHECK_OK(lathe_lora_init(m, &lc, err, sizeof err));
  CHECK(lathe_lora_get(m, "model.layers.0.self_attn.v_proj.lora_A.weight", &x, 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "v_proj") != nullptr);
  CHECK(lathe_lora_get(m, "model.layers.0.self_attn.q_proj.lora_A.weight", &x, 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "[4, 16]") != nullptr);
  // a NaN weight gives LATHE_ERR_NAN
  std::vector<float> nan(16, std::nanf(""));
  CHECK_OK(lathe_model_set_weight(m, "model.norm.weight", nan.data(), 16, err, sizeof err));
  tok[2] = 1;
  CHECK(lathe_forward_backward(m, tok.data(), tok.data(), nullptr, nullptr, 1, 4, 1, 0, 1.0f, nullptr, nullptr, nullptr, err, sizeof err) == LATHE_ERR_NAN);
  // bad config
  auto bad = c;
  bad.num_kv_heads = 3;
  lathe_model* m2 = nullptr;
  CHECK(lathe_model_init(&bad, &m2, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT && m2 == nullptr);
  CHECK(std::strstr(err, "num_kv_heads") != nullptr);
  // truncation never overflows
  char tiny[8];
  CHECK(lathe_model_set_weight(m, "nope", w.data(), 1, tiny, sizeof tiny) == LATHE_ERR_INVALID_ARGUMENT && std::strlen(tiny) == 7);
  lathe_model_free(m);
}

TEST(status_names_are_spelled_once_and_engine_errors_name_their_file_and_line) {
  const std::pair<lathe_status, const char*> names[] = {{LATHE_OK, "OK"},
                                                        {LATHE_ERR_INVALID_ARGUMENT, "INVALID_ARGUMENT"},
                                                        {LATHE_ERR_UNSUPPORTED, "UNSUPPORTED"},
                                                        {LATHE_ERR_OUT_OF_MEMORY, "OUT_OF_MEMORY"},
                                                        {LATHE_ERR_NAN, "NAN"},
                                                        {LATHE_ERR_CANCELLED, "CANCELLED"},
                                                        {LATHE_ERR_INTERNAL, "INTERNAL"}};
  for (auto& [status, name] : names) CHECK_MSG(std::strcmp(lathe_status_string(status), name) == 0, name);
  CHECK(std::strcmp(lathe_status_string(static_cast<lathe_status>(99)), "INTERNAL") == 0);
  // "<function>: <what> (at <file under libs/engine>:<line>)", the line that raised it
  auto located = [](const char* err, const char* file) {
    const char* at = std::strstr(err, " (at ");
    if (!at || std::strncmp(at + 5, file, std::strlen(file)) != 0) return false;
    const char* line = at + 5 + std::strlen(file);
    return line[0] == ':' && std::atoi(line + 1) > 0 && err[std::strlen(err) - 1] == ')';
  };
  char err[512];
  lathe_model* m = nullptr;
  CHECK(lathe_model_init(nullptr, &m, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(std::strncmp(err, "lathe_model_init: config is NULL", 32) == 0 && located(err, "src/engine.cpp"), err);
  m = t::make_model(t::Spec{});
  std::vector<float> w(3);
  CHECK(lathe_model_set_weight(m, "model.norm.weight", w.data(), w.size(), err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(located(err, "src/model.cpp"), err);
  CHECK(lathe_model_load_safetensors(m, "/nonexistent/model.safetensors", err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(std::strstr(err, "cannot open") && located(err, "src/safetensors.cpp"), err);
  lathe_model_free(m);
}

namespace {
// Runs `steps` AdamW steps of the 2-sequence task on `m` (dropout on: it consumes the RNG).
void run_steps(lathe_model* m, const lathe_model_config& c, int steps) {
  char err[256];
  const int B = 2, T = 16;
  std::vector<int32_t> tokens(B * T), labels(B * T);
  lathe::Rng rng(42, 42);
  for (auto& x : tokens) x = static_cast<int32_t>(rng.next() % c.vocab_size);
  for (int i = 0; i < B * T; ++i) labels[i] = (i + 1) % T == 0 ? -100 : tokens[i + 1];
  for (int step = 0; step < steps; ++step) {
    float loss, norm;
    int64_t count;
    CHECK_OK(lathe_zero_grad(m, err, sizeof err));
    CHECK_OK(lathe_forward_backward(m, tokens.data(), labels.data(), nullptr, nullptr, B, T, 1, 1, 1.0f, &loss, &count, nullptr, err, sizeof err));
    CHECK_OK(lathe_adamw_step(m, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, &norm, err, sizeof err));
  }
}
}  // namespace

TEST(restoring_lora_adamw_moments_step_count_and_rng_state_resumes_bit_for_bit) {
  t::Spec s;
  s.vocab = 64;
  s.hidden = 32;
  s.intermediate = 48;
  s.head_dim = 8;
  const auto c = t::config_of(s);
  const auto lc = lora_all(3, 0.1f);
  const auto names = t::lora_names(c, lc.target_modules);
  char err[256];
  auto params = [&](lathe_model* m) {
    std::vector<float> out;
    for (auto& n : names) {
      std::vector<float> p(t::lora_count(c, n, lc.r));
      CHECK_OK(lathe_lora_get(m, n.c_str(), p.data(), p.size(), err, sizeof err));
      out.insert(out.end(), p.begin(), p.end());
    }
    return out;
  };
  lathe_model* whole = t::make_model(s);
  CHECK_OK(lathe_lora_init(whole, &lc, err, sizeof err));
  run_steps(whole, c, 8);

  lathe_model* first = t::make_model(s);
  CHECK_OK(lathe_lora_init(first, &lc, err, sizeof err));
  run_steps(first, c, 5);
  lathe_model* second = t::make_model(s);
  auto other = lora_all(99, 0.1f);  // a different init and RNG, all overwritten below
  CHECK_OK(lathe_lora_init(second, &other, err, sizeof err));
  for (auto& n : names) {
    const size_t k = t::lora_count(c, n, lc.r);
    std::vector<float> p(k), mo(k), vo(k);
    CHECK_OK(lathe_lora_get(first, n.c_str(), p.data(), k, err, sizeof err));
    CHECK_OK(lathe_adamw_state_get(first, n.c_str(), mo.data(), vo.data(), k, err, sizeof err));
    CHECK_OK(lathe_lora_set(second, n.c_str(), p.data(), k, err, sizeof err));
    CHECK_OK(lathe_adamw_state_set(second, n.c_str(), mo.data(), vo.data(), k, err, sizeof err));
  }
  int64_t t5 = 0;
  CHECK_OK(lathe_adamw_step_count_get(first, &t5, err, sizeof err));
  CHECK(t5 == 5);
  CHECK_OK(lathe_adamw_step_count_set(second, t5, err, sizeof err));
  uint64_t st[4];
  CHECK_OK(lathe_rng_state_get(first, st, err, sizeof err));
  CHECK_OK(lathe_rng_state_set(second, st, err, sizeof err));
  run_steps(second, c, 3);
  CHECK(params(second) == params(whole));

  // errors: wrong count, unknown tensor, negative step, zero RNG state
  std::vector<float> one(1);
  CHECK(lathe_adamw_state_get(second, names[0].c_str(), one.data(), one.data(), 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(err, "got 1") != nullptr);
  CHECK(lathe_adamw_state_set(second, "model.layers.0.self_attn.qq_proj.lora_A.weight", one.data(), one.data(), 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK(lathe_adamw_step_count_set(second, -1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  const uint64_t zero[4] = {0, 0, 0, 0};
  CHECK(lathe_rng_state_set(second, zero, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  lathe_model_free(whole);
  lathe_model_free(first);
  lathe_model_free(second);
}
