// cuda/common.cuh — what every file of the CUDA backend shares: the checks that turn a CUDA
// error into a lathe::Error naming the file and line (STYLE.md: every call and launch checked,
// no exit/abort inside a Node addon), the backend's per-model state (Ctx), its scratch buffers
// and the launch helpers. Only host code and small device helpers here; the kernels live in one
// file per op (rmsnorm.cu, rope.cu, ...), the cuBLASLt calls in blas.cu alone.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "backend.h"
#include "common.h"

namespace lathe {
namespace cuda {

// Throws lathe::Error: LATHE_ERR_OUT_OF_MEMORY for an allocation failure, else INTERNAL, with
// the CUDA error's name, what was called and where.
[[noreturn]] void fail(cudaError_t e, const char* what, const char* file, int line);
inline void check(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) fail(e, what, file, line);
}

}  // namespace cuda
}  // namespace lathe

#define LATHE_CUDA_CHECK(call) ::lathe::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows here (a fault inside shows at the next sync).
#define LATHE_CUDA_LAUNCHED(kernel) ::lathe::cuda::check(cudaGetLastError(), "launch of " #kernel, __FILE__, __LINE__)

namespace lathe {
namespace cuda {

struct Blas;  // blas.cu: the cuBLASLt handle, its workspace and the chosen algorithms

// A device buffer grown on demand on the stream (stream-ordered free and malloc), kept between
// ops and freed with the Ctx.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
};

// The backend's per-model state. Owns its stream, its scratch buffers and the cuBLASLt state;
// every allocation made through alloc() is recorded so that ctx_free releases what a caller
// forgot (and peak() reports the most held at once).
struct Ctx {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  Blas* blas = nullptr;
  float* nf4_tables = nullptr;  // device: the NF4 codebook [16] then the dynamic map [256]
  Scratch ints_a, ints_b, bytes_a, bf16_a, bf16_b, reduce, ce_out;
  struct Block {
    void* base;    // what the pool returned (the pointer handed out is base rounded up to 256 bytes)
    size_t bytes;  // what the caller asked for
  };
  std::unordered_map<void*, Block> live;  // alloc()'d pointers
  size_t held = 0, peak = 0;
  bool attention_tc = false;  // attention on tensor cores (attention_tc.cu) where the head dim allows

  // A buffer of at least `bytes` in `s` (its old contents are not kept).
  void* grow(Scratch& s, size_t bytes);
  // Copies `count` elements of a host array into `s` on the stream; returns the device copy.
  template <class T>
  T* stage(Scratch& s, const T* host, size_t count) {
    if (count == 0) return nullptr;
    void* d = grow(s, sizeof(T) * count);
    LATHE_CUDA_CHECK(cudaMemcpyAsync(d, host, sizeof(T) * count, cudaMemcpyHostToDevice, stream));
    return static_cast<T*>(d);
  }
  void sync() { LATHE_CUDA_CHECK(cudaStreamSynchronize(stream)); }
};

inline Ctx& ctx_of(lathe_backend_ctx* c) { return *reinterpret_cast<Ctx*>(c); }

// Blocks for an element-wise launch over n items (grid-stride loops cover the rest).
inline unsigned blocks_for(int64_t n, int threads = 256) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

// ---- block reductions (blockDim.x a multiple of 32, at most 1024)
#if defined(__CUDACC__)
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum over the block; every thread gets the result. `sh` holds 32 T.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read by a previous call
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  T r = lane < warps ? sh[lane] : T(0);
  if (warp == 0) r = warp_sum(r);
  if (threadIdx.x == 0) sh[0] = r;
  __syncthreads();
  return sh[0];
}
#endif

}  // namespace cuda
}  // namespace lathe
