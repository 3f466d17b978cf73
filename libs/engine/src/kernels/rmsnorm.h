// kernels/rmsnorm.h — the per-row and per-element math of RMSNorm (HF Llama, f32), shared by the
// CPU backend (cpu/rmsnorm.cpp) and the CUDA one (cuda/rmsnorm.cu). The row reductions (sum of
// x^2, sum of w*dy*x) are each backend's own: they are where a CPU loop and a GPU block differ.
//   forward:  rstd = 1/sqrt(ss/H + eps) with ss = sum x^2;  y_i = w_i * (x_i * rstd)
//   backward: c = s * rstd^3 / H with s = sum w_i dy_i x_i;  dx_i = rstd * w_i * dy_i - x_i * c
#pragma once
#include "kernels/hd.h"

namespace lathe {
namespace kern {

LATHE_HD float rmsnorm_rstd(float sumsq, int H, float eps) { return 1.0f / sqrtf(sumsq / static_cast<float>(H) + eps); }
LATHE_HD float rmsnorm_y(float w, float x, float rstd) { return w * (x * rstd); }
LATHE_HD float rmsnorm_dot_term(float w, float dy, float x) { return w * dy * x; }
LATHE_HD float rmsnorm_bwd_coef(float s, float rstd, int H) { return s * rstd * rstd * rstd / static_cast<float>(H); }
LATHE_HD float rmsnorm_dx(float rstd, float w, float dy, float x, float c) { return rstd * w * dy - x * c; }

}  // namespace kern
}  // namespace lathe
