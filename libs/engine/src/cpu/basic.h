// cpu/basic.h — data movement and element-wise ops of the training step, on the CPU:
//   copy(dst, src, n)                      dst = src
//   zero(dst, n)                           dst = 0
//   add(y, x, n)                           y += x              (the residual stream: x += o(att))
//   add_bias(pool, y, bias, rows, cols)    y[r, :] += bias     y [rows, cols], bias [cols]
//   gather_rows(dst, src, rows, count, cols)   dst[i, :] = src[rows[i], :]   i < count
//   scatter_rows(dst, src, rows, count, cols)  dst[rows[i], :] = src[i, :]
// Sequential except add_bias (one Linear's output at a time is large enough for the pool).
#pragma once
#include <cstdint>

#include "threads.h"

namespace lathe {
void copy(float* dst, const float* src, int64_t n);
void zero(float* dst, int64_t n);
void add(float* y, const float* x, int64_t n);
void add_bias(ThreadPool& pool, float* y, const float* bias, int64_t rows, int cols);
void gather_rows(float* dst, const float* src, const int32_t* rows, int count, int cols);
void scatter_rows(float* dst, const float* src, const int32_t* rows, int count, int cols);
}  // namespace lathe
