// cross_entropy.cpp — see cross_entropy.h. The row lists and labels are host data; the rows of
// h, u and the outputs move through gather_rows / scatter_rows; requested logits are downloaded.
#include "cross_entropy.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace lathe {

double cross_entropy_forward_backward(const Backend& be, const float* h, const int32_t* labels, int N, int H, int V, HeadWeight W,
                                      const HeadLoRA* lora, float coef, float* dh, float* logits_out, int64_t chunk_rows,
                                      CrossEntropyScratch& scratch, int64_t* count_out, int64_t* correct_out) {
  std::vector<int32_t> rows;
  int64_t count = 0;
  for (int n = 0; n < N; ++n) {
    const bool has = labels && labels[n] != -100;
    count += has;
    if (has || logits_out) rows.push_back(n);
  }
  *count_out = count;
  if (correct_out) *correct_out = 0;
  if (rows.empty()) return 0.0;
  const int64_t cr = std::max<int64_t>(1, std::min<int64_t>(chunk_rows, static_cast<int64_t>(rows.size())));
  const int r = lora ? lora->r : 0;
  Buffer<float>&xin = scratch.h, &logit = scratch.logits, &dx = scratch.dh, &uc = scratch.u, &duc = scratch.du;
  xin.resize(be, cr * H);
  logit.resize(be, cr * V);
  dx.resize(be, dh ? cr * H : 0);
  uc.resize(be, cr * r);
  duc.resize(be, cr * r);
  std::vector<int32_t> lab(cr);
  std::vector<float> host_logits(logits_out ? cr * V : 0);
  double total = 0.0;
  for (size_t c0 = 0; c0 < rows.size(); c0 += cr) {
    const int m = static_cast<int>(std::min<int64_t>(cr, rows.size() - c0));
    const int32_t* chunk = &rows[c0];
    bool any_label = false;
    for (int i = 0; i < m; ++i) {
      lab[i] = labels ? labels[chunk[i]] : -100;
      any_label |= lab[i] != -100;
    }
    be.ops->gather_rows(be.ctx, xin.data(), h, chunk, m, H);
    if (r) be.ops->gather_rows(be.ctx, uc.data(), lora->u, chunk, m, r);
    if (W.bf16) be.ops->bf16_matmul(be.ctx, true, m, V, H, xin.data(), W.bf16, H, false, logit.data());  // x W^T
    else gemm_nt(be, m, V, H, 1.0f, xin.data(), W.f32, 0.0f, logit.data());
    if (r) gemm_nt(be, m, V, r, lora->scale, uc.data(), lora->B, 1.0f, logit.data());
    if (logits_out) {
      be.ops->download(be.ctx, host_logits.data(), logit.data(), sizeof(float) * m * V);
      for (int i = 0; i < m; ++i)
        std::memcpy(logits_out + static_cast<size_t>(chunk[i]) * V, &host_logits[static_cast<size_t>(i) * V], sizeof(float) * V);
    }
    const bool backward = dh != nullptr;
    be.ops->cross_entropy(be.ctx, logit.data(), lab.data(), m, V, coef, backward, &total, correct_out);
    if (!backward || !any_label) continue;
    if (W.bf16) be.ops->bf16_matmul(be.ctx, false, m, H, V, logit.data(), W.bf16, H, false, dx.data());  // dh = dlogits W
    else gemm_nn(be, m, H, V, 1.0f, logit.data(), W.f32, 0.0f, dx.data());
    be.ops->scatter_rows(be.ctx, dh, dx.data(), chunk, m, H);
    if (r) {
      gemm_tn(be, V, r, m, lora->scale, logit.data(), uc.data(), 1.0f, lora->gB);   // gB += s dlogits^T u
      gemm_nn(be, m, r, V, lora->scale, logit.data(), lora->B, 0.0f, duc.data());   // du = s dlogits B
      be.ops->scatter_rows(be.ctx, lora->du, duc.data(), chunk, m, r);
    }
  }
  return total;
}

}  // namespace lathe
