// kernels/cross_entropy.h — the per-row math of the LM-head cross-entropy, shared by
// cpu/cross_entropy.cpp (one row per loop) and cuda/cross_entropy.cu (one row per block):
//   argmax: the first maximal logit (as torch.argmax): a scan in increasing index keeps a later
//           value only when strictly larger (ce_argmax_scan); two candidates from different
//           ranges combine keeping the larger value, the lower index on ties (ce_argmax_combine);
//   lse = mx + log(sum_j exp_neg(l_j - mx)), each term in f32 (kernels/exp.h), summed in f64
//   over the row maximum mx;
//   loss = lse - double(l[label]);  gradient l_j := coef * exp_neg(l_j - float(lse)), then coef
//   is subtracted at the label (float(lse) >= mx, so the exponent is never positive).
#pragma once
#include "kernels/exp.h"
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD void ce_argmax_scan(float& mx, int& arg, float v, int j) {
  if (v > mx) {
    mx = v;
    arg = j;
  }
}
LATHE_HD void ce_argmax_combine(float& mx, int& arg, float v, int j) {
  if (v > mx || (v == mx && j < arg)) {
    mx = v;
    arg = j;
  }
}
LATHE_HD float ce_exp_term(float l, float mx) { return exp_neg(l - mx); }
LATHE_HD double ce_lse(float mx, double sum) { return static_cast<double>(mx) + log(sum); }
LATHE_HD double ce_row_loss(double lse, float label_logit) { return lse - static_cast<double>(label_logit); }
LATHE_HD float ce_grad(float l, float lse, float coef) { return coef * exp_neg(l - lse); }

}  // namespace kern
}  // namespace lathe
