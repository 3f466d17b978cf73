// bf16.h — conversions between f32 and bfloat16 (the top 16 bits of an f32), for weights stored
// in bf16 (lathe_model_convert_bf16) and the kernels that read them.
#pragma once
#include <cstdint>

namespace lathe {

// bf16 <-> f32 (round to nearest even; NaN stays NaN)
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

}  // namespace lathe
