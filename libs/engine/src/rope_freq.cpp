// rope_freq.cpp — see rope_freq.h. In f32, as HF computes inv_freq.
#include "rope_freq.h"

#include <cmath>

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

}  // namespace lathe
