// dev/gpu/emu/cuda/common.cuh — the emulator's stand-in for src/cuda/common.cuh (Ctx without a device, no-op checks,
// the same block reductions over emulated shuffles). Found before src/ on the include path.
#pragma once
#include "emu.h"
#include <string>
#include <stdexcept>
#include "backend.h"
#include "common.h"


#define LATHE_CUDA_CHECK(call) (void)0
#define LATHE_CUDA_LAUNCHED(kernel) (void)0
namespace lathe { namespace cuda {
struct Blas;
struct Scratch { void* p = nullptr; size_t bytes = 0; };
struct Ctx {
  cudaStream_t stream = nullptr;
  float* nf4_tables = nullptr;
  bool attention_tc = false;
};
inline unsigned blocks_for(int64_t n, int threads = 256) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}
template <class T> inline T warp_sum(T v) { for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o); return v; }
template <class T> inline T block_sum(T v, T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T r = lane < warps ? sh[lane] : T(0);
  if (warp == 0) r = warp_sum(r);
  if (threadIdx.x == 0) sh[0] = r;
  __syncthreads();
  return sh[0];
}
}}
#define cudaFuncSetAttribute(...) 0
