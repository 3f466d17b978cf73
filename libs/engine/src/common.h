// common.h — errors and small helpers shared by the ops.
//
// lathe::Error carries a lathe_status; engine.cpp turns it (and std::bad_alloc, and anything
// else) into a status + message at the C boundary. parallel_rows splits [0, n) into contiguous
// ranges for the pool.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "lathe_engine.h"
#include "threads.h"

namespace lathe {

struct Error : std::runtime_error {
  lathe_status status;
  Error(lathe_status s, const std::string& msg) : std::runtime_error(msg), status(s) {}
};

template <class F>
void parallel_rows(ThreadPool& pool, int64_t n, F&& fn /* fn(begin, end, thread) */) {
  if (n <= 0) return;
  const int64_t tasks = std::min<int64_t>(n, static_cast<int64_t>(pool.size()) * 4);
  pool.run(tasks, [&](int64_t t, int thread) {
    const int64_t b = n * t / tasks, e = n * (t + 1) / tasks;
    if (b < e) fn(b, e, thread);
  });
}

// dot product with 8 independent partial sums (vectorises without -ffast-math)
inline float dot(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

inline void axpy(float* y, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace lathe
