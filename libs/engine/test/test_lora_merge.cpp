// test_lora_merge.cpp — lathe_lora_merge (W += scale·B·A) against a naive f64 loop, bit for bit,
// across thread counts and tile edges; its argument errors.
#include "cpu/lora_merge.h"
#include "test_util.h"
#include "threads.h"

namespace {

// The arithmetic lathe_lora_merge promises (that of @lathe/models' mergeAdapter): sums in f64 over
// k ascending, zero B values skipped, w + scale·sum in f64, one rounding to f32.
std::vector<float> naive_merge(std::vector<float> w, const std::vector<float>& a, const std::vector<float>& b, int64_t rows, int64_t cols, int r,
                               double scale) {
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t i = 0; i < cols; ++i) {
      double sum = 0;
      for (int k = 0; k < r; ++k)
        if (b[o * r + k] != 0.0f) sum += double(b[o * r + k]) * double(a[k * cols + i]);
      // volatile: the product is rounded on its own, as in mergeAdapter, even where the
      // compiler would fuse it into the add.
      volatile double delta = scale * sum;
      w[o * cols + i] = static_cast<float>(double(w[o * cols + i]) + delta);
    }
  return w;
}

}  // namespace

TEST(lora_merge_equals_a_naive_f64_loop_bit_for_bit_for_any_thread_count) {
  lathe::Rng rng(5, 5);
  // cols 1100 crosses the 512-column tiles twice; rows 1 and 37 are uneven across threads.
  const int64_t shapes[][3] = {{1, 1, 1}, {37, 1100, 5}, {64, 48, 8}, {300, 513, 16}};
  for (auto& s : shapes) {
    const int64_t rows = s[0], cols = s[1];
    const int r = static_cast<int>(s[2]);
    auto w = t::random_vec(rng, rows * cols, -0.5f, 0.5f), a = t::random_vec(rng, r * cols, -0.2f, 0.2f), b = t::random_vec(rng, rows * r, -0.05f, 0.05f);
    for (size_t i = 0; i < b.size(); i += 7) b[i] = 0.0f;  // skipped terms
    for (double scale : {16.0 / 8, 16.0 / std::sqrt(8.0), -0.3}) {
      const auto want = naive_merge(w, a, b, rows, cols, r, scale);
      for (int threads : {1, 3, 0}) {
        auto got = w;
        char err[256];
        CHECK_OK(lathe_lora_merge(got.data(), a.data(), b.data(), rows, cols, r, scale, threads, err, sizeof err));
        CHECK_MSG(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)) == 0,
                  "[" + std::to_string(rows) + ", " + std::to_string(cols) + "] r " + std::to_string(r) + " threads " + std::to_string(threads));
      }
    }
  }
}

TEST(lora_merge_spreads_a_large_weight_over_the_pool_with_the_same_bits) {
  // Enough work (2048 x 1024 x 16) for every thread of a pool of 4.
  lathe::Rng rng(6, 6);
  const int64_t rows = 2048, cols = 1024;
  const int r = 16;
  auto w = t::random_vec(rng, rows * cols, -0.5f, 0.5f), a = t::random_vec(rng, r * cols, -0.2f, 0.2f), b = t::random_vec(rng, rows * r, -0.05f, 0.05f);
  auto one = w, four = w;
  lathe::ThreadPool p1(1), p4(4);
  lathe::lora_merge(p1, one.data(), a.data(), b.data(), rows, cols, r, 2.0);
  lathe::lora_merge(p4, four.data(), a.data(), b.data(), rows, cols, r, 2.0);
  CHECK(std::memcmp(one.data(), four.data(), one.size() * sizeof(float)) == 0);
  CHECK(one != w);
}

TEST(lora_merge_rejects_bad_arguments_with_a_message) {
  float w[4] = {}, a[2] = {}, b[2] = {};
  char err[256];
  CHECK(lathe_lora_merge(w, a, b, 2, 2, 0, 1.0, 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(std::strstr(err, "lathe_lora_merge: rows, cols and r must be positive") != nullptr, err);
  CHECK(lathe_lora_merge(w, nullptr, b, 2, 2, 1, 1.0, 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(std::strstr(err, "a is NULL") != nullptr, err);
  CHECK(lathe_lora_merge(w, a, b, 2, 2, 1, std::nan(""), 1, err, sizeof err) == LATHE_ERR_INVALID_ARGUMENT);
  CHECK_MSG(std::strstr(err, "scale must be finite") != nullptr, err);
}
