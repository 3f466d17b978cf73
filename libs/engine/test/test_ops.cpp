// test_ops.cpp — SGEMM variants against a naive triple loop; llama3 RoPE frequencies against
// values computed with HF's formula in Python (f64).
#include <cstdio>
#include <cstring>

#include "cpu/gemm.h"
#include "cpu/gemm_kernels.h"
#include "rope_freq.h"
#include "test_util.h"
#include "threads.h"

TEST(sgemm_nn_nt_tn_match_naive_for_odd_sizes_and_any_thread_count_with_every_kernel_this_cpu_runs) {
  lathe::Rng rng(1, 1);
  // ({6, 16, 256} and {40, 70, 1200} are deep products: K >= 8 M and 8 N, one task per thread)
  const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {97, 200, 259}, {6, 16, 256}, {130, 33, 600}, {12, 32, 17}, {25, 70, 513}, {40, 70, 1200}};
  int kernels = 0;
  for (const char* name : {"portable", "avx2", "avx512"}) {
  const lathe::cpu::GemmKernel* kern = lathe::cpu::gemm_kernel_by_name(name);
  if (!kern) {
    std::printf("  (the %s GEMM kernel is not checked: this CPU cannot run it)\n", name);
    continue;
  }
  ++kernels;
  for (int threads : {1, 3}) {
    lathe::ThreadPool pool(threads);
    for (auto& s : sizes) {
      const int M = s[0], N = s[1], K = s[2];
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (float beta : {0.0f, 1.0f, 0.5f}) {
            auto A = t::random_vec(rng, static_cast<size_t>(M) * K, -1, 1), B = t::random_vec(rng, static_cast<size_t>(K) * N, -1, 1);
            auto C = t::random_vec(rng, static_cast<size_t>(M) * N, -1, 1), ref = C;
            for (int i = 0; i < M; ++i)
              for (int j = 0; j < N; ++j) {
                double acc = 0;
                for (int k = 0; k < K; ++k) acc += double(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
                ref[i * N + j] = static_cast<float>(0.7 * acc + beta * ref[i * N + j]);
              }
            lathe::sgemm_with(pool, *kern, ta, tb, M, N, K, 0.7f, A.data(), ta ? M : K, B.data(), tb ? K : N, beta, C.data(), N);
            double worst = 0;
            for (size_t i = 0; i < C.size(); ++i) worst = std::max(worst, std::fabs(double(C[i]) - ref[i]));
            CHECK_MSG(worst < 1e-4 * std::sqrt(double(K)) + 1e-5, std::string(name) + " M,N,K=" + std::to_string(M) + "," + std::to_string(N) + "," + std::to_string(K) +
                                                                 " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " err " + std::to_string(worst));
          }
    }
  }
  }
  CHECK(kernels >= 1);
  // One kernel gives the same bits for any thread count (each element is summed by one thread).
  const int M = 200, N = 300, K = 700;
  auto A = t::random_vec(rng, static_cast<size_t>(M) * K, -1, 1), B = t::random_vec(rng, static_cast<size_t>(K) * N, -1, 1);
  std::vector<float> C1(static_cast<size_t>(M) * N), C2(C1.size());
  lathe::ThreadPool p1(1), p2(2);
  lathe::sgemm(p1, false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C1.data(), N);
  lathe::sgemm(p2, false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C2.data(), N);
  CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0);
  // and for a deep product (the head's dx: all rows per task, columns split by thread count)
  const int Md = 50, Nd = 90, Kd = 2000;
  auto Ad = t::random_vec(rng, static_cast<size_t>(Md) * Kd, -1, 1), Bd = t::random_vec(rng, static_cast<size_t>(Kd) * Nd, -1, 1);
  std::vector<float> D1(static_cast<size_t>(Md) * Nd), D2(D1.size()), D3(D1.size());
  lathe::ThreadPool p3(3);
  lathe::sgemm(p1, false, false, Md, Nd, Kd, 1.0f, Ad.data(), Kd, Bd.data(), Nd, 0.0f, D1.data(), Nd);
  lathe::sgemm(p2, false, false, Md, Nd, Kd, 1.0f, Ad.data(), Kd, Bd.data(), Nd, 0.0f, D2.data(), Nd);
  lathe::sgemm(p3, false, false, Md, Nd, Kd, 1.0f, Ad.data(), Kd, Bd.data(), Nd, 0.0f, D3.data(), Nd);
  CHECK(std::memcmp(D1.data(), D2.data(), D1.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(D1.data(), D3.data(), D1.size() * sizeof(float)) == 0);
}

TEST(rope_llama3_inv_freq_matches_hf_compute_llama3_parameters) {
  // head_dim 8, theta 10000, factor 8, low 1, high 4, original 64 (low wavelen 64, high 16):
  // base inv_freq [1, 0.1, 0.01, 0.001] -> wavelens [6.28, 62.8, 628, 6283]:
  // high band kept, medium smoothed, low divided by 8. Expected values from HF's formula in f64.
  lathe_model_config c{};
  c.head_dim = 8;
  c.rope_theta = 10000.0f;
  c.rope_scaling = LATHE_ROPE_LLAMA3;
  c.rope_factor = 8.0f;
  c.rope_low_freq_factor = 1.0f;
  c.rope_high_freq_factor = 4.0f;
  c.rope_original_max_position = 64;
  const auto inv = lathe::rope_inv_freq(c);
  // medium: smooth = (64/62.83 - 1)/3 = 0.006206; (1-s)*0.1/8 + s*0.1 = 0.0130430...
  const double expected[4] = {1.0, (1 - (64 / (2 * M_PI / 0.1) - 1) / 3) * 0.1 / 8 + (64 / (2 * M_PI / 0.1) - 1) / 3 * 0.1, 0.01 / 8, 0.001 / 8};
  CHECK(inv.size() == 4);
  for (int i = 0; i < 4; ++i) CHECK_MSG(std::fabs(inv[i] - expected[i]) <= 1e-6 * expected[i], std::to_string(i) + ": " + std::to_string(inv[i]));
}
