// cpu/gemm_bf16.h — products with a frozen weight stored in bf16 (--base-dtype bf16):
//
//   y[M,N]  = alpha * bf16(x)[M,K] W[N,K]^T + beta y      (trans_w: the forward, y = x W^T)
//   dx[M,N] = alpha * bf16(dy)[M,K] W[K,N]   + beta dx     (!trans_w: the input gradient, dx = dy W)
//
// The f32 operand is rounded to bf16 (nearest even) and each product of two bf16 values is summed
// in f32: with AVX512_BF16 by vdpbf16ps (pairs of k per lane, gemm_avx512bf16.cpp), elsewhere by
// widening both to f32 exactly and using the f32 GEMM, which rounds the same products (only the
// order of the f32 sums differs). Each element is summed by one thread in a fixed order, so the
// result does not depend on the number of threads (for one code path).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "bf16.h"

namespace lathe {

class ThreadPool;

// `work`: a caller-owned buffer: bf16(A) packed once per product (AVX512_BF16), or the fallback
// path's widened operands.
void sgemm_bf16(ThreadPool& pool, bool trans_w, int M, int N, int K, float alpha, const float* A, int lda, const uint16_t* W,
                int ldw, float beta, float* C, int ldc, std::vector<float>& work);

// Whether this CPU takes the AVX512_BF16 path ("avx512bf16") or the widening one ("f32").
const char* bf16_gemm_path();

}  // namespace lathe
