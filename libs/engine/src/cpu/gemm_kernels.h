// cpu/gemm_kernels.h — the GEMM micro-kernels, one per instruction set, and the choice among them
// at run time (CPUID through __builtin_cpu_supports), so one binary runs on any x86-64 CPU.
//
// Each kernel lives in its own translation unit compiled for its ISA alone (CMakeLists.txt sets
// the flags per file): gemm_avx512.cpp (AVX-512F, 12x32 registers), gemm_avx2.cpp (AVX2+FMA,
// 6x16), gemm_portable.cpp (no ISA flags, 6x16 with GCC vector extensions). Those files include
// nothing with inline functions that another file could also emit (no std templates), so no
// AVX-512 code can leak into the rest of the library through the linker's choice of a copy.
//
// block(kc, mc, nc, A, rs, ks, Bp, alpha, C, ldc, edge, store): C[0:mc, 0:nc] += alpha * sum_k a(i,k) Bp
// (store: C = alpha * ..., C not read: the first K slice of a beta = 0 product)
// over one K slice, where a(i,k) = A[i*rs + k*ks] is read in place (A needs no packing: its
// values are broadcast) and Bp holds ceil(nc/nr) slivers of [kc][nr] (gemm.cpp packs them,
// zero-padded); `edge` (kc*mr floats) takes a partial last row panel. Every element's k-sum runs
// in order 0..kc-1 in one lane.
// pack_bt, when set, packs a transposed B (y = x W^T: W stored [N, K]) with register transposes;
// pack_bn, when set, a B stored [K, N] (dx = dy W) with full-width row copies.
// fma_peak(iters) runs iters rounds of independent register FMAs and returns the flops done.
#pragma once
#include <cstdint>

namespace lathe {
namespace cpu {

struct GemmKernel {
  const char* name;  // "avx512", "avx2", "portable"
  int mr, nr;
  void (*block)(int kc, int mc, int nc, const float* A, long rs, long ks, const float* Bp, float alpha, float* C, int ldc, float* edge, bool store);
  double (*fma_peak)(int64_t iters);
  // Packs op(B) = B^T (B stored [N, K]) as gemm.cpp's pack_b does, faster; null: gemm.cpp's.
  void (*pack_bt)(const float* B, int ldb, int k0, int j0, int kc, int nc, float* Bp);
  // Packs op(B) = B (stored [K, N]) the same way with full-width copies; null: gemm.cpp's.
  void (*pack_bn)(const float* B, int ldb, int k0, int j0, int kc, int nc, float* Bp);
};

const GemmKernel& gemm_kernel_portable();
const GemmKernel& gemm_kernel_avx2();
const GemmKernel& gemm_kernel_avx512();

// The kernel for `name` when this CPU can run it, else null ("best": the fastest it can run).
const GemmKernel* gemm_kernel_by_name(const char* name);
// The fastest kernel this CPU runs (checked once).
const GemmKernel& gemm_kernel_best();

}  // namespace cpu
}  // namespace lathe
