// cuda/nf4.cu — NF4 dequantisation on the GPU (QLoRA): rows [r0, r1) of a weight stored as nf4.h
// describes (codes two per byte, element 2i in the high nibble; absmax per 64 elements
// double-quantised to 8 bits per 256 blocks) into a bf16 tile that the bf16 matmul reads
// (blas.cu). The value is computed exactly as the CPU's nf4::dequantize_rows in f32 (map[q] *
// scale, then + offset, then codebook * absmax, each rounded: no fused multiply-add, as
// bitsandbytes and cpu/ do), then rounded to bf16 (bitsandbytes dequantises to the compute dtype
// too). tables: the 16 NF4 values then the 256 entries of the dynamic map, on the device.
#include "cuda/ops.h"

namespace lathe {
namespace cuda {
namespace {

__global__ void nf4_dequantize_kernel(const uint8_t* codes, const uint8_t* absmax_q, const float* absmax_scale, float offset,
                                      const float* tables, int64_t first, int64_t count, __nv_bfloat16* tile) {
  const float* codebook = tables;
  const float* dmap = tables + 16;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < count; t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = first + t;
    const uint8_t byte = codes[e >> 1];
    const int code = (e & 1) ? (byte & 0xF) : (byte >> 4);
    const int64_t b = e / 64;
    const float absmax = __fadd_rn(__fmul_rn(dmap[absmax_q[b]], absmax_scale[b / 256]), offset);
    tile[t] = __float2bfloat16_rn(__fmul_rn(codebook[code], absmax));
  }
}

}  // namespace

void nf4_dequantize_rows(Ctx& c, const Nf4View& W, int64_t r0, int64_t r1, __nv_bfloat16* tile) {
  const int64_t count = (r1 - r0) * W.cols;
  if (count <= 0) return;
  nf4_dequantize_kernel<<<blocks_for(count), 256, 0, c.stream>>>(W.codes, W.absmax_q, W.absmax_scale, W.offset, c.nf4_tables, r0 * W.cols,
                                                                 count, tile);
  LATHE_CUDA_LAUNCHED(nf4_dequantize_kernel);
}

}  // namespace cuda
}  // namespace lathe
