// cpu/rope.cpp — see rope.h. The angles are computed in f32 as HF does; the rotation is
// kernels/rope.h (shared with CUDA).
#include "cpu/rope.h"

#include "common.h"
#include "kernels/rope.h"

namespace lathe {

static void rope_apply(ThreadPool& pool, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d, float sign) {
  const int half = d / 2;
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int thread) {
    float* cs = pool.scratch(thread, 2 * static_cast<size_t>(half));
    float* sn = cs + half;
    for (int64_t n = b; n < e; ++n) {
      for (int i = 0; i < half; ++i) {
        const float a = kern::rope_angle(pos[n], inv_freq[i]);
        cs[i] = kern::rope_cos(a);
        sn[i] = kern::rope_sin(a, sign);
      }
      for (int h = 0; h < heads; ++h) {
        float* v = x + (n * heads + h) * d;
        for (int i = 0; i < half; ++i) kern::rope_rotate(v[i], v[i + half], cs[i], sn[i]);
      }
    }
  });
}

void rope_forward(ThreadPool& pool, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  rope_apply(pool, x, pos, inv_freq, N, heads, d, 1.0f);
}
void rope_backward(ThreadPool& pool, float* dx, const int32_t* pos, const float* inv_freq, int N, int heads, int d) {
  rope_apply(pool, dx, pos, inv_freq, N, heads, d, -1.0f);  // R(-a) = R(a)^T
}

}  // namespace lathe
