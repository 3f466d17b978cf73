// dev/bench_merge.cpp — lathe_lora_merge's kernel (f64 sums, one rounding: the bits of
// @lathe/models' mergeAdapter) against the f32 alternative it does not use, sgemm with beta 1
// (W += scale·B·A summed in f32 and rounded twice), on one [rows, cols] weight. Prints the time
// of each, their ratio, and how many merged values the f32 route would change.
//   lathe_engine_bench_merge [threads=2] [r=16] [rows=4096] [cols=4096]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/lora_merge.h"
#include "rng.h"
#include "threads.h"

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2, r = argc > 2 ? std::atoi(argv[2]) : 16;
  const int rows = argc > 3 ? std::atoi(argv[3]) : 4096, cols = argc > 4 ? std::atoi(argv[4]) : 4096;
  lathe::Rng rng(1, 1);
  auto random = [&](size_t n, float spread) {
    std::vector<float> v(n);
    for (auto& x : v) x = (rng.uniform() - 0.5f) * 2 * spread;
    return v;
  };
  const auto w = random(static_cast<size_t>(rows) * cols, 0.05f), a = random(static_cast<size_t>(r) * cols, 0.1f), b = random(static_cast<size_t>(rows) * r, 0.05f);
  const double scale = 2.0;
  lathe::ThreadPool pool(threads);
  std::vector<float> f64 = w, f32 = w;
  auto time_ms = [](auto&& fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  double t64 = 1e30, t32 = 1e30;
  for (int rep = 0; rep < 3; ++rep) {  // best of 3; each run starts from W
    f64 = w;
    f32 = w;
    t64 = std::min(t64, time_ms([&] { lathe::lora_merge(pool, f64.data(), a.data(), b.data(), rows, cols, r, scale); }));
    t32 = std::min(t32, time_ms([&] { lathe::sgemm(pool, false, false, rows, cols, r, static_cast<float>(scale), b.data(), r, a.data(), cols, 1.0f, f32.data(), cols); }));
  }
  size_t differ = 0;
  for (size_t i = 0; i < f64.size(); ++i) differ += std::memcmp(&f64[i], &f32[i], sizeof(float)) != 0;
  const double fma = static_cast<double>(rows) * cols * r;
  std::printf("[%d, %d] r %d, %d threads\n", rows, cols, r, threads);
  std::printf("lora_merge (f64 sums)   %8.2f ms  %6.2f G multiply-adds/s\n", t64, fma / t64 / 1e6);
  std::printf("sgemm beta 1 (f32)      %8.2f ms  %6.2f G multiply-adds/s\n", t32, fma / t32 / 1e6);
  std::printf("lora_merge / sgemm time %8.2f; the f32 route changes %.1f%% of the merged values\n", t64 / t32, 100.0 * differ / f64.size());
  return 0;
}
