// cpu/attention.h — grouped-query causal softmax attention that honours packing segments.
//
// q: [B*T, nh*d] (after RoPE), k, v: [B*T, nkv*d]; query head h reads kv head h / (nh/nkv)
// (HF repeat_kv). Token i of row b attends to token j iff j <= i and seg[b,j] == seg[b,i]
// (seg NULL: one segment per row). Scores are scaled by 1/sqrt(d).
//   out: [B*T, nh*d];  lse: [B, nh, T] log-sum-exp of each score row, saved for backward.
// backward recomputes the probabilities from q, k and lse (no [T, T] matrix is stored):
//   dP = dout v^T, D_i = dout_i . out_i, dS = P (dP - D), dq = scale dS k, dk = scale dS^T q,
//   dv = P^T dout. dk, dv are summed over the query heads of each group. All outputs written.
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void attention_forward(ThreadPool& pool, float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* seg, int B, int T, int nh, int nkv, int d);
// scratch: 2 * B*nh*T*d floats
void attention_backward(ThreadPool& pool, float* dq, float* dk, float* dv, float* scratch, const float* dout,
                        const float* out, const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* seg, int B, int T, int nh, int nkv, int d);
}  // namespace lathe
