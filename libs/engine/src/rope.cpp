// rope.cpp — see rope.h. inv_freq and the angles are computed in f32 as HF does.
#include "rope.h"

#include <cmath>

#include "common.h"

namespace lathe {

std::vector<float> rope_inv_freq(const lathe_model_config& cfg) {
  const int d = cfg.head_dim, half = d / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i)
    inv[i] = 1.0f / std::pow(cfg.rope_theta, static_cast<float>(2 * i) / static_cast<float>(d));
  if (cfg.rope_scaling == LATHE_ROPE_LLAMA3) {
    const float factor = cfg.rope_factor, low = cfg.rope_low_freq_factor, high = cfg.rope_high_freq_factor;
    const float old_len = static_cast<float>(cfg.rope_original_max_position);
    const float low_wavelen = old_len / low, high_wavelen = old_len / high;
    for (int i = 0; i < half; ++i) {
      const float f = inv[i];
      const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
      float scaled = wavelen > low_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth = (old_len / wavelen - low) / (high - low);
        scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
      }
      inv[i] = scaled;
    }
  }
  return inv;
}

static void rope_apply(ThreadPool& pool, float* x, const int32_t* pos, const float* inv_freq, int N, int heads, int d, float sign) {
  const int half = d / 2;
  parallel_rows(pool, N, [&](int64_t b, int64_t e, int thread) {
    float* cs = pool.scratch(thread, 2 * static_cast<size_t>(half));
    float* sn = cs + half;
    for (int64_t n = b; n < e; ++n) {
      const float p = static_cast<float>(pos[n]);
      for (int i = 0; i < half; ++i) {
        const float a = p * inv_freq[i];
        cs[i] = std::cos(a);
        sn[i] = sign * std::sin(a);
      }
      for (int h = 0; h < heads; ++h) {
        float* v = x + (n * heads + h) * d;
        for (int i = 0; i < half; ++i) {
          const float x0 = v[i], x1 = v[i + half];
          v[i] = x0 * cs[i] - x1 * sn[i];
          v[i + half] = x1 * cs[i] + x0 * sn[i];
        }
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
