// dev/bench_gemm.cpp — GFLOP/s of the CPU GEMM with each micro-kernel this CPU runs, on the
// training step's shapes (SmolLM-135M: N = 1024 tokens, hidden 576, intermediate 1536, vocab
// 49152 in chunks of 85 rows), against the kernel's register-FMA peak on the same threads.
// Usage: lathe_engine_bench_gemm [threads=2] [kernel: all, portable, avx2, avx512, bf16]. Prints; asserts nothing.
// bf16: the --base-dtype bf16 products (f32 activations times bf16 weights) on the layer and head shapes.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bf16.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "cpu/gemm_kernels.h"
#include "rng.h"
#include "threads.h"

namespace {

struct Shape { const char* what; bool ta, tb; int M, N, K; };

// One warm-up product, then as many as fit in 0.3 s; prints the shape's GFLOP/s.
template <class F>
void time_product(const Shape& sh, F&& run) {
  run();
  int reps = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double s = 0;
  do {
    run();
    ++reps;
    s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (s < 0.3);
  std::printf("  %-30s %7.1f GFLOP/s\n", sh.what, 2.0 * sh.M * sh.N * sh.K * reps / s / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  lathe::ThreadPool pool(threads);
  const Shape shapes[] = {
      {"q/o  y=xW^T   1024x576x576", false, true, 1024, 576, 576},
      {"up   y=xW^T   1024x1536x576", false, true, 1024, 1536, 576},
      {"down y=xW^T   1024x576x1536", false, true, 1024, 576, 1536},
      {"up   dx=dyW   1024x576x1536", false, false, 1024, 576, 1536},
      {"head y=xW^T   85x49152x576", false, true, 85, 49152, 576},
      {"head dx=dyW   85x576x49152", false, false, 85, 576, 49152},
      {"head y=xW^T   256x49152x576", false, true, 256, 49152, 576},
      {"head dx=dyW   256x576x49152", false, false, 256, 576, 49152},
      {"lora gA=du^Tx 16x576x1024", true, false, 16, 576, 1024},
      {"lora t=xA^T   1024x16x576", false, true, 1024, 16, 576},
      {"lora dt=dyB   1024x16x1536", false, false, 1024, 16, 1536},
      {"lora gB=dy^Tt 1536x16x1024", true, false, 1536, 16, 1024},
      {"lora y+=tB^T  1024x1536x16", false, true, 1024, 1536, 16},
  };
  lathe::Rng rng(1, 1);
  const std::string only = argc > 2 ? argv[2] : "all";
  for (const char* name : {"portable", "avx2", "avx512"}) {
    if (only != "all" && only != name) continue;
    const lathe::cpu::GemmKernel* k = lathe::cpu::gemm_kernel_by_name(name);
    if (!k) continue;
    // register-FMA peak on `threads` threads
    const int64_t iters = 20000000;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<double> flops(threads);
    pool.run(threads, [&](int64_t task, int) { flops[task] = k->fma_peak(iters); });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), total = 0;
    for (double f : flops) total += f;
    std::printf("%-8s FMA peak %.1f GFLOP/s on %d threads\n", name, total / s / 1e9, threads);
    for (const Shape& sh : shapes) {
      std::vector<float> A(static_cast<size_t>(sh.M) * sh.K), B(static_cast<size_t>(sh.K) * sh.N), C(static_cast<size_t>(sh.M) * sh.N);
      for (auto& x : A) x = rng.uniform();
      for (auto& x : B) x = rng.uniform();
      const int lda = sh.ta ? sh.M : sh.K, ldb = sh.tb ? sh.K : sh.N;
      time_product(sh, [&] { lathe::sgemm_with(pool, *k, sh.ta, sh.tb, sh.M, sh.N, sh.K, 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(), sh.N); });
    }
  }
  if (only == "all" || only == "bf16") {
    std::printf("bf16 (%s): f32 x bf16 weights\n", lathe::bf16_gemm_path());
    std::vector<float> work;
    for (const Shape& sh : shapes) {
      if (sh.ta || sh.M < 64 || sh.N < 64) continue;  // the bf16 path takes the frozen weights' products only
      std::vector<float> A(static_cast<size_t>(sh.M) * sh.K), C(static_cast<size_t>(sh.M) * sh.N);
      std::vector<uint16_t> W(static_cast<size_t>(sh.K) * sh.N);
      for (auto& x : A) x = rng.uniform();
      for (auto& w : W) w = lathe::f32_to_bf16(rng.uniform());
      const int ldw = sh.tb ? sh.K : sh.N;
      time_product(sh, [&] { lathe::sgemm_bf16(pool, sh.tb, sh.M, sh.N, sh.K, 1.0f, A.data(), sh.K, W.data(), ldw, 0.0f, C.data(), sh.N, work); });
    }
  }
}
