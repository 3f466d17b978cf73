// cross_entropy.h — causal-LM cross-entropy fused with the LM head, computed in chunks, on a
// backend (backend.h: gemm, gather/scatter_rows and the per-chunk cross_entropy op).
//
//   logits[n,:] = h[n,:] W^T (+ scale * u[n,:] B^T with a LoRA on lm_head, u = drop(h) A^T)
//   loss = sum over rows with label != -100 of (logsumexp(logits[n]) - logits[n, label[n]])
// h: [N, H], W: [V, H] (backend memory, f32 or bf16), labels: [N] (host). Only rows with a label are computed (all rows when
// logits are requested). The rows are processed a chunk at a time (chunk_rows x V floats of
// logits at most: the whole [N, V] matrix never exists), and within a chunk the logits buffer is
// turned into d loss/d logits in place: coef * (softmax - onehot), so each chunk's GEMMs run once.
// With dh non-null: dh[n,:] = dlogits W for the computed rows (other rows untouched: the caller
// zeroes dh), and for a head LoRA gB += scale dlogits^T u and du = scale dlogits B ([N, r]).
// logits_out (host, [N, V], may be null) receives the logits of every row, downloaded chunk by
// chunk. Returns the loss sum (double, summed row by row in order) and the label count; with
// correct_out, the labelled rows whose argmax (first maximal logit) is their label.
#pragma once
#include <cstdint>

#include "backend.h"

namespace lathe {

// The per-chunk buffers, in backend memory, kept by the caller between calls.
struct CrossEntropyScratch {
  Buffer<float> h, logits, dh, u, du;  // [chunk, H], [chunk, V], [chunk, H], [chunk, r], [chunk, r]
};

// The head's frozen weight [V, H] in backend memory: f32, or bf16 (f32 null; its products round
// the activation or the logits' gradient to bf16 and sum in f32, as every bf16 linear does).
struct HeadWeight {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;
};

struct HeadLoRA {
  const float* u = nullptr;  // [N, r]
  const float* B = nullptr;  // [V, r]
  float* gB = nullptr;       // [V, r]
  float* du = nullptr;       // [N, r], rows with a label written (caller zeroes)
  int r = 0;
  float scale = 0.0f;
};

double cross_entropy_forward_backward(const Backend& be, const float* h, const int32_t* labels, int N, int H, int V, HeadWeight W,
                                      const HeadLoRA* lora, float coef, float* dh, float* logits_out, int64_t chunk_rows,
                                      CrossEntropyScratch& scratch, int64_t* count_out, int64_t* correct_out = nullptr);

}  // namespace lathe
