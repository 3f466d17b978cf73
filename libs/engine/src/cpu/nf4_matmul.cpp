// cpu/nf4_matmul.cpp — see nf4_matmul.h. The matmuls dequantise tiles of whole weight rows
// (tile_elems f32 at most, at least one row) into a caller-owned buffer and hand each tile to
// the threaded SGEMM, so the f32 weight never exists whole (for weights larger than one tile).
#include "cpu/nf4_matmul.h"

#include <algorithm>

#include "cpu/gemm.h"
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

}  // namespace

void matmul_nt(ThreadPool& pool, int N, const float* x, const Tensor4& W, float* y, std::vector<float>& tile) {
  const int64_t TR = tile_rows(W);
  tile.resize(static_cast<size_t>(TR * W.cols));
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int64_t R = std::min(TR, W.rows - r0);
    dequantize_tile(pool, W, r0, R, tile.data());
    // y[:, r0:r0+R] = x tile^T
    sgemm(pool, false, true, N, static_cast<int>(R), static_cast<int>(W.cols), 1.0f, x, static_cast<int>(W.cols), tile.data(),
          static_cast<int>(W.cols), 0.0f, y + r0, static_cast<int>(W.rows));
  }
}

void matmul_nn(ThreadPool& pool, int N, const float* dy, const Tensor4& W, float* dx, bool accumulate, std::vector<float>& tile) {
  const int64_t TR = tile_rows(W);
  tile.resize(static_cast<size_t>(TR * W.cols));
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int64_t R = std::min(TR, W.rows - r0);
    dequantize_tile(pool, W, r0, R, tile.data());
    // dx (+)= dy[:, r0:r0+R] tile
    sgemm(pool, false, false, N, static_cast<int>(W.cols), static_cast<int>(R), 1.0f, dy + r0, static_cast<int>(W.rows), tile.data(),
          static_cast<int>(W.cols), (accumulate || r0 > 0) ? 1.0f : 0.0f, dx, static_cast<int>(W.cols));
  }
}

}  // namespace nf4
}  // namespace lathe
