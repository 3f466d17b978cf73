// kernels/hd.h — what the shared kernel bodies under src/kernels/ need to compile both as host
// C++ (the CPU backend, g++/clang) and as CUDA device code (src/cuda/, nvcc).
//
// LATHE_HD marks a body callable from both sides: `__host__ __device__` under nvcc, plain
// `inline` for the host compiler (which never sees a CUDA keyword). The math calls are the C
// library's float/double functions (expf, sqrtf, exp, log ...): on the host they are the same
// functions std::exp/std::sqrt call for those types, so the CPU backend's results do not change;
// on the device they are CUDA's versions (within a few ulp of them), which is why other
// backends are compared with a tolerance and the CPU one bit for bit.
#pragma once
#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define LATHE_HD __host__ __device__ __forceinline__
#else
#define LATHE_HD inline
#endif
