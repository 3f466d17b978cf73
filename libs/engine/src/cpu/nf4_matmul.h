// cpu/nf4_matmul.h — the QLoRA matmuls on an NF4 weight W [rows, cols] (nf4.h), dequantised on
// the fly in tiles of whole rows (W.tile_elems f32 at most, at least one row) into `tile`:
//   matmul_nt: y[N, rows] = x[N, cols] W^T      (y written; the forward of a Linear)
//   matmul_nn: dx[N, cols] (+)= dy[N, rows] W    (the input gradient of a Linear)
// Each tile goes to the threaded SGEMM (cpu/gemm.h): the result is sgemm's on the dequantised
// weight, up to rounding where matmul_nn adds tile after tile (test_nf4 checks 1e-6). With
// W.bf16_tiles (--base-dtype bf16 on a QLoRA model) the tile is rounded to bf16 and multiplied
// by cpu/gemm_bf16.h, as a bf16 base weight is.
#pragma once
#include <cstdint>
#include <vector>

#include "nf4.h"

namespace lathe {

class ThreadPool;

namespace nf4 {

// y[N, rows] = x[N, cols] W^T (beta 0), dequantising tiles of rows into `tile`.
void matmul_nt(ThreadPool& pool, int N, const float* x, const Tensor4& W, float* y, std::vector<float>& tile);
// dx[N, cols] (+)= dy[N, rows] W.
void matmul_nn(ThreadPool& pool, int N, const float* dy, const Tensor4& W, float* dx, bool accumulate, std::vector<float>& tile);

}  // namespace nf4
}  // namespace lathe
