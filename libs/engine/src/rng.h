// rng.h — the engine's documented PRNG: xoshiro256** (Blackman & Vigna) seeded by splitmix64.
//
// uniform() = (next() >> 40) * 2^-24, a float in [0, 1). Streams are derived from a seed and a
// stream id (splitmix64 of seed ^ id·golden), so LoRA initialisation and dropout masks are
// independent but both fixed by lathe_lora_config.seed.
#pragma once
#include <cstdint>

namespace lathe {

inline uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

struct Rng {
  uint64_t s[4] = {1, 2, 3, 4};

  Rng() = default;
  Rng(uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0x9E3779B97F4A7C15ull);
    for (auto& v : s) v = splitmix64(x);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
};

}  // namespace lathe
