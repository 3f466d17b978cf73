// cpu/basic.cpp — see basic.h.
#include "cpu/basic.h"

#include <algorithm>
#include <cstring>

#include "common.h"
#include "cpu/vec.h"

namespace lathe {

void copy(float* dst, const float* src, int64_t n) {
  if (n > 0) std::memcpy(dst, src, sizeof(float) * n);
}

void zero(float* dst, int64_t n) { std::fill(dst, dst + n, 0.0f); }

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_bias(ThreadPool& pool, float* y, const float* bias, int64_t rows, int cols) {
  parallel_rows(pool, rows, [&](int64_t b, int64_t e, int) {
    for (int64_t n = b; n < e; ++n) axpy(y + n * cols, 1.0f, bias, cols);
  });
}

void gather_rows(float* dst, const float* src, const int32_t* rows, int count, int cols) {
  for (int i = 0; i < count; ++i)
    std::memcpy(dst + static_cast<int64_t>(i) * cols, src + static_cast<int64_t>(rows[i]) * cols, sizeof(float) * cols);
}

void scatter_rows(float* dst, const float* src, const int32_t* rows, int count, int cols) {
  for (int i = 0; i < count; ++i)
    std::memcpy(dst + static_cast<int64_t>(rows[i]) * cols, src + static_cast<int64_t>(i) * cols, sizeof(float) * cols);
}

}  // namespace lathe
