// cpu/nf4_matmul.cpp — see nf4_matmul.h. The matmuls dequantise tiles of whole weight rows
// (tile_elems f32 at most, at least one row) into a caller-owned buffer and hand each tile to
// the threaded SGEMM (or, with W.bf16_tiles, round it to bf16 for the bf16 GEMM), so the f32
// weight never exists whole (for weights larger than one tile).
#include "cpu/nf4_matmul.h"

#include <algorithm>

#include "bf16.h"
#include "common.h"
#include "cpu/gemm.h"
#include "cpu/gemm_bf16.h"
#include "threads.h"

namespace lathe {
namespace nf4 {

namespace {

// Dequantises rows [r0, r0+R) into tile, splitting the rows over the pool.
void dequantize_tile(ThreadPool& pool, const Tensor4& W, int64_t r0, int64_t R, float* tile) {
  const int64_t tasks = std::min<int64_t>(R, pool.size());
  pool.run(tasks, [&](int64_t t, int) {
    const int64_t b = r0 + R * t / tasks, e = r0 + R * (t + 1) / tasks;
    if (b < e) dequantize_rows(W, b, e, tile + (b - r0) * W.cols);
  });
}

int64_t tile_rows(const Tensor4& W) {
  return std::max<int64_t>(1, std::min<int64_t>(W.rows, W.tile_elems / std::max<int64_t>(1, W.cols)));
}

// With W.bf16_tiles: the dequantised tile [R, cols] rounded to bf16 into the words after it in
// `tile` (which holds R*cols floats, then R*cols/2 floats' worth of bf16), returned.
const uint16_t* to_bf16_tile(ThreadPool& pool, std::vector<float>& tile, int64_t n) {
  uint16_t* t16 = reinterpret_cast<uint16_t*>(tile.data() + n);
  const float* src = tile.data();
  parallel_rows(pool, n, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) t16[i] = f32_to_bf16(src[i]);
  });
  return t16;
}

size_t tile_floats(const Tensor4& W, int64_t TR) {
  const size_t n = static_cast<size_t>(TR * W.cols);
  return W.bf16_tiles ? n + (n + 1) / 2 : n;
}

}  // namespace

void matmul_nt(ThreadPool& pool, int N, const float* x, const Tensor4& W, float* y, std::vector<float>& tile) {
  const int64_t TR = tile_rows(W);
  tile.resize(tile_floats(W, TR));
  static thread_local std::vector<float> work;  // the bf16 products' packed operand
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int64_t R = std::min(TR, W.rows - r0);
    dequantize_tile(pool, W, r0, R, tile.data());
    // y[:, r0:r0+R] = x tile^T
    if (W.bf16_tiles) {
      sgemm_bf16(pool, true, N, static_cast<int>(R), static_cast<int>(W.cols), 1.0f, x, static_cast<int>(W.cols), to_bf16_tile(pool, tile, TR * W.cols),
                 static_cast<int>(W.cols), 0.0f, y + r0, static_cast<int>(W.rows), work);
      continue;
    }
    sgemm(pool, false, true, N, static_cast<int>(R), static_cast<int>(W.cols), 1.0f, x, static_cast<int>(W.cols), tile.data(),
          static_cast<int>(W.cols), 0.0f, y + r0, static_cast<int>(W.rows));
  }
}

void matmul_nn(ThreadPool& pool, int N, const float* dy, const Tensor4& W, float* dx, bool accumulate, std::vector<float>& tile) {
  const int64_t TR = tile_rows(W);
  tile.resize(tile_floats(W, TR));
  static thread_local std::vector<float> work;
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int64_t R = std::min(TR, W.rows - r0);
    dequantize_tile(pool, W, r0, R, tile.data());
    // dx (+)= dy[:, r0:r0+R] tile
    if (W.bf16_tiles) {
      sgemm_bf16(pool, false, N, static_cast<int>(W.cols), static_cast<int>(R), 1.0f, dy + r0, static_cast<int>(W.rows),
                 to_bf16_tile(pool, tile, TR * W.cols), static_cast<int>(W.cols), (accumulate || r0 > 0) ? 1.0f : 0.0f, dx,
                 static_cast<int>(W.cols), work);
      continue;
    }
    sgemm(pool, false, false, N, static_cast<int>(W.cols), static_cast<int>(R), 1.0f, dy + r0, static_cast<int>(W.rows), tile.data(),
          static_cast<int>(W.cols), (accumulate || r0 > 0) ? 1.0f : 0.0f, dx, static_cast<int>(W.cols));
  }
}

}  // namespace nf4
}  // namespace lathe
