// cuda/attention.cu — grouped-query causal attention within packing segments on the GPU,
// FlashAttention-style: no [T, T] matrix, scores live in registers one tile of keys at a time
// with an online softmax (forward), and backward recomputes the probabilities from q, k and lse.
// Shapes and semantics are backend.h's (and cpu/attention.h's): q, out [B*T, nh*d]; k, v
// [B*T, nkv*d]; query head h reads kv head h / (nh/nkv); token i sees j iff j <= i and
// seg[b,j] == seg[b,i]; scores scaled by 1/sqrt(d); lse [B, nh, T].
//
// Tiles a block never needs are skipped: keys after the query tile (causal) and, when the
// segments of every row are contiguous runs, keys before the segment start of the tile's first
// query (lo) and queries after the segment end of the tile's last key (hi). lo/hi are
// computed on the host by the table (backend.cu) from the host segment ids; null means no
// segment skipping (the mask still applies).
//
// Kernels (f32 arithmetic on CUDA cores; one warp per query row in forward and dQ, per key
// row in dK/dV; lanes own keys when scoring and head dimensions when accumulating):
//   forward:  grid (T/16, nh, B), 4 warps x 4 query rows, key tiles of 32;
//   backward: D_i = dout_i . out_i per (token, head) into scratch; dK/dV over key tiles of 32
//             (each block sums the rep query heads of its kv head itself: written, no atomics);
//             dQ over query tiles of 16. Deterministic.
// This is the correctness-first version, the default: it does not use tensor cores.
// attention_tc.cu has the tensor-core variant (bf16 WMMA tiles) that the backend uses instead
// when Ctx::attention_tc is set (lathe::cuda::set_attention_tensor_cores) and d is 64 or 128;
// the D kernel below serves both.
#include <vector>

#include "cuda/ops.h"

namespace lathe {
namespace cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kBQ = kWarps * kRowsPerWarp;  // query rows per forward / dQ block
constexpr int kBK = 32;                     // keys per tile (one per lane)

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ bool visible(int i, int j, int T, const int32_t* sg) {
  return j <= i && j < T && (!sg || sg[j] == sg[i]);
}

// dot of two rows of d floats in shared memory
__device__ __forceinline__ float dot_sh(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// ---- forward
template <int DT>  // head dims per lane: d <= 32 * DT
__global__ void attention_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                                         const int32_t* lo, int T, int nh, int nkv, int d, float scale) {
  extern __shared__ float sh[];
  const int dp = d + 1;
  float* Qs = sh;                 // [kBQ][d]
  float* Ks = Qs + kBQ * d;       // [kBK][d+1]
  float* Vs = Ks + kBK * dp;      // [kBK][d]
  const int q0 = blockIdx.x * kBQ, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = threadIdx.x; e < kBQ * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    Qs[e] = q0 + r < T ? q[(row0 + q0 + r) * qs + h * d + c] : 0.0f;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][DT];
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
    for (int t = 0; t < DT; ++t) o[rr][t] = 0.0f;
  }
  const int kmax = min(T, q0 + kBQ);
  const int kmin = lo ? lo[row0 + q0] : 0;
  for (int kt = (kmin / kBK) * kBK; kt < kmax; kt += kBK) {
    __syncthreads();
    for (int e = threadIdx.x; e < kBK * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const bool in = kt + r < T;
      Ks[r * dp + c] = in ? k[(row0 + kt + r) * ks + g * d + c] : 0.0f;
      Vs[r * d + c] = in ? v[(row0 + kt + r) * ks + g * d + c] : 0.0f;
    }
    __syncthreads();
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr, i = q0 + r;
      if (i >= T) break;  // warp-uniform
      const int j = kt + lane;
      const bool vis = visible(i, j, T, sg);
      const float s = vis ? dot_sh(Qs + r * d, Ks + lane * dp, d) * scale : -INFINITY;
      const float tmax = warp_max(s);
      if (tmax == -INFINITY) continue;  // no key of this tile is visible to row i
      const float mnew = fmaxf(m[rr], tmax);
      const float p = vis ? expf(s - mnew) : 0.0f;
      const float alpha = expf(m[rr] - mnew);
      l[rr] = l[rr] * alpha + warp_sum(p);
      for (int t = 0; t < DT; ++t) o[rr][t] *= alpha;
      for (int jj = 0; jj < kBK; ++jj) {
        const float pj = __shfl_sync(0xffffffffu, p, jj);
        if (pj == 0.0f) continue;  // warp-uniform
        for (int t = 0; t < DT; ++t) {
          const int c = lane + 32 * t;
          if (c < d) o[rr][t] += pj * Vs[jj * d + c];
        }
      }
      m[rr] = mnew;
    }
  }
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int r = warp * kRowsPerWarp + rr, i = q0 + r;
    if (i >= T) break;
    const float inv = 1.0f / l[rr];
    for (int t = 0; t < DT; ++t) {
      const int c = lane + 32 * t;
      if (c < d) out[(row0 + i) * qs + h * d + c] = o[rr][t] * inv;
    }
    if (lane == 0) lse[(static_cast<int64_t>(b) * nh + h) * T + i] = m[rr] + logf(l[rr]);
  }
}

// ---- backward: D[b, h, i] = dout_i . out_i, one warp per (token, head)
__global__ void attention_delta_kernel(float* D, const float* dout, const float* out, int B, int T, int nh, int d) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(B) * T * nh, stride = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5; w < warps; w += stride) {  // warp-uniform
    const int64_t n = w / nh;
    const int h = static_cast<int>(w % nh);
    const int64_t off = n * nh * d + static_cast<int64_t>(h) * d;
    float s = 0.0f;
    for (int c = lane; c < d; c += 32) s += dout[off + c] * out[off + c];
    s = warp_sum(s);
    const int64_t b = n / T, i = n % T;
    if (lane == 0) D[(b * nh + h) * T + i] = s;
  }
}

// dK, dV of kBK keys of kv head g, summed over its rep query heads. Warp w owns keys
// kt + w*8 .. +8; lanes score the 32 queries of a query tile, then own head dims.
template <int DT>
__global__ void attention_dkv_kernel(float* dk, float* dv, const float* dout, const float* lse, const float* D, const float* q,
                                     const float* k, const float* v, const int32_t* seg, const int32_t* hi, int T, int nh, int nkv,
                                     int d, float scale) {
  constexpr int kKeysPerWarp = kBK / kWarps;
  extern __shared__ float sh[];
  const int dp = d + 1;
  float* Ks = sh;                  // [kBK][d]
  float* Vs = Ks + kBK * d;        // [kBK][d]
  float* Qs = Vs + kBK * d;        // [32][d+1]
  float* Os = Qs + 32 * dp;        // [32][d+1]  dout tile
  float* Ls = Os + 32 * dp;        // [32] lse
  float* Ds = Ls + 32;             // [32] D
  const int kt = blockIdx.x * kBK, g = blockIdx.y, b = blockIdx.z, rep = nh / nkv;
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = threadIdx.x; e < kBK * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const bool in = kt + r < T;
    Ks[e] = in ? k[(row0 + kt + r) * ks + g * d + c] : 0.0f;
    Vs[e] = in ? v[(row0 + kt + r) * ks + g * d + c] : 0.0f;
  }
  float dK[kKeysPerWarp][DT], dV[kKeysPerWarp][DT];
  for (int kr = 0; kr < kKeysPerWarp; ++kr)
    for (int t = 0; t < DT; ++t) dK[kr][t] = dV[kr][t] = 0.0f;
  const int last_key = min(kt + kBK, T) - 1;
  const int qend = hi ? hi[row0 + last_key] : T;  // queries past the last key's segment see none of these keys
  for (int hh = 0; hh < rep; ++hh) {
    const int h = g * rep + hh;
    const float* lh = lse + (static_cast<int64_t>(b) * nh + h) * T;
    const float* dh = D + (static_cast<int64_t>(b) * nh + h) * T;
    for (int qt = kt; qt < qend; qt += 32) {  // causal: queries before kt see no key of the tile
      __syncthreads();
      for (int e = threadIdx.x; e < 32 * d; e += blockDim.x) {
        const int r = e / d, c = e % d;
        const bool in = qt + r < T;
        Qs[r * dp + c] = in ? q[(row0 + qt + r) * qs + h * d + c] : 0.0f;
        Os[r * dp + c] = in ? dout[(row0 + qt + r) * qs + h * d + c] : 0.0f;
      }
      if (threadIdx.x < 32) {
        const bool in = qt + threadIdx.x < T;
        Ls[threadIdx.x] = in ? lh[qt + threadIdx.x] : 0.0f;
        Ds[threadIdx.x] = in ? dh[qt + threadIdx.x] : 0.0f;
      }
      __syncthreads();
      const int i = qt + lane;  // this lane's query
      for (int kr = 0; kr < kKeysPerWarp; ++kr) {
        const int jr = warp * kKeysPerWarp + kr, j = kt + jr;
        if (j >= T) break;  // warp-uniform
        const bool vis = i < T && visible(i, j, T, sg);
        float p = 0.0f, ds = 0.0f;
        if (vis) {
          const float s = dot_sh(Qs + lane * dp, Ks + jr * d, d) * scale;
          p = expf(s - Ls[lane]);
          const float dpv = dot_sh(Os + lane * dp, Vs + jr * d, d);
          ds = p * (dpv - Ds[lane]) * scale;
        }
        if (!__any_sync(0xffffffffu, vis)) continue;
        for (int jj = 0; jj < 32; ++jj) {
          const float pj = __shfl_sync(0xffffffffu, p, jj), dsj = __shfl_sync(0xffffffffu, ds, jj);
          if (pj == 0.0f && dsj == 0.0f) continue;  // warp-uniform
          for (int t = 0; t < DT; ++t) {
            const int c = lane + 32 * t;
            if (c < d) {
              dV[kr][t] += pj * Os[jj * dp + c];
              dK[kr][t] += dsj * Qs[jj * dp + c];
            }
          }
        }
      }
    }
  }
  for (int kr = 0; kr < kKeysPerWarp; ++kr) {
    const int j = kt + warp * kKeysPerWarp + kr;
    if (j >= T) break;
    for (int t = 0; t < DT; ++t) {
      const int c = lane + 32 * t;
      if (c < d) {
        dk[(row0 + j) * ks + g * d + c] = dK[kr][t];
        dv[(row0 + j) * ks + g * d + c] = dV[kr][t];
      }
    }
  }
}

// dQ of kBQ query rows of head h: dq_i = sum_j dS_ij k_j
template <int DT>
__global__ void attention_dq_kernel(float* dq, const float* dout, const float* lse, const float* D, const float* q, const float* k,
                                    const float* v, const int32_t* seg, const int32_t* lo, int T, int nh, int nkv, int d, float scale) {
  extern __shared__ float sh[];
  const int dp = d + 1;
  float* Qs = sh;              // [kBQ][d]
  float* Os = Qs + kBQ * d;    // [kBQ][d]
  float* Ks = Os + kBQ * d;    // [kBK][d+1]
  float* Vs = Ks + kBK * dp;   // [kBK][d+1]
  const int q0 = blockIdx.x * kBQ, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
  const int64_t qs = static_cast<int64_t>(nh) * d, ks = static_cast<int64_t>(nkv) * d, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int e = threadIdx.x; e < kBQ * d; e += blockDim.x) {
    const int r = e / d, c = e % d;
    const bool in = q0 + r < T;
    Qs[e] = in ? q[(row0 + q0 + r) * qs + h * d + c] : 0.0f;
    Os[e] = in ? dout[(row0 + q0 + r) * qs + h * d + c] : 0.0f;
  }
  const float* lh = lse + (static_cast<int64_t>(b) * nh + h) * T;
  const float* dh = D + (static_cast<int64_t>(b) * nh + h) * T;
  float L[kRowsPerWarp], Dr[kRowsPerWarp], acc[kRowsPerWarp][DT];
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp * kRowsPerWarp + rr;
    L[rr] = i < T ? lh[i] : 0.0f;
    Dr[rr] = i < T ? dh[i] : 0.0f;
    for (int t = 0; t < DT; ++t) acc[rr][t] = 0.0f;
  }
  const int kmax = min(T, q0 + kBQ);
  const int kmin = lo ? lo[row0 + q0] : 0;
  for (int kt = (kmin / kBK) * kBK; kt < kmax; kt += kBK) {
    __syncthreads();
    for (int e = threadIdx.x; e < kBK * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const bool in = kt + r < T;
      Ks[r * dp + c] = in ? k[(row0 + kt + r) * ks + g * d + c] : 0.0f;
      Vs[r * dp + c] = in ? v[(row0 + kt + r) * ks + g * d + c] : 0.0f;
    }
    __syncthreads();
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr, i = q0 + r;
      if (i >= T) break;
      const int j = kt + lane;
      const bool vis = visible(i, j, T, sg);
      float ds = 0.0f;
      if (vis) {
        const float s = dot_sh(Qs + r * d, Ks + lane * dp, d) * scale;
        const float p = expf(s - L[rr]);
        const float dpv = dot_sh(Os + r * d, Vs + lane * dp, d);
        ds = p * (dpv - Dr[rr]) * scale;
      }
      if (!__any_sync(0xffffffffu, vis)) continue;
      for (int jj = 0; jj < kBK; ++jj) {
        const float dsj = __shfl_sync(0xffffffffu, ds, jj);
        if (dsj == 0.0f) continue;
        for (int t = 0; t < DT; ++t) {
          const int c = lane + 32 * t;
          if (c < d) acc[rr][t] += dsj * Ks[jj * dp + c];
        }
      }
    }
  }
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp * kRowsPerWarp + rr;
    if (i >= T) break;
    for (int t = 0; t < DT; ++t) {
      const int c = lane + 32 * t;
      if (c < d) dq[(row0 + i) * qs + h * d + c] = acc[rr][t];
    }
  }
}

// Launches `kernel` with `smem` bytes of dynamic shared memory (opting in above 48 KB).
template <class K>
void set_smem(K kernel, size_t smem) {
  if (smem > 48 * 1024) LATHE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}

template <int DT>
void forward_dt(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo,
                int B, int T, int nh, int nkv, int d) {
  const size_t smem = sizeof(float) * (kBQ * d + kBK * (d + 1) + kBK * d);
  set_smem(attention_forward_kernel<DT>, smem);
  const dim3 grid((T + kBQ - 1) / kBQ, nh, B);
  attention_forward_kernel<DT><<<grid, kWarps * 32, smem, c.stream>>>(out, lse, q, k, v, seg, lo, T, nh, nkv, d, 1.0f / sqrtf(static_cast<float>(d)));
  LATHE_CUDA_LAUNCHED(attention_forward_kernel);
}

template <int DT>
void backward_dt(Ctx& c, float* dq, float* dk, float* dv, float* D, const float* dout, const float* lse, const float* q, const float* k,
                 const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B, int T, int nh, int nkv, int d) {
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const size_t smem_kv = sizeof(float) * (2 * kBK * d + 2 * 32 * (d + 1) + 64);
  set_smem(attention_dkv_kernel<DT>, smem_kv);
  attention_dkv_kernel<DT><<<dim3((T + kBK - 1) / kBK, nkv, B), kWarps * 32, smem_kv, c.stream>>>(dk, dv, dout, lse, D, q, k, v, seg, hi, T,
                                                                                                  nh, nkv, d, scale);
  LATHE_CUDA_LAUNCHED(attention_dkv_kernel);
  const size_t smem_q = sizeof(float) * (2 * kBQ * d + 2 * kBK * (d + 1));
  set_smem(attention_dq_kernel<DT>, smem_q);
  attention_dq_kernel<DT><<<dim3((T + kBQ - 1) / kBQ, nh, B), kWarps * 32, smem_q, c.stream>>>(dq, dout, lse, D, q, k, v, seg, lo, T, nh,
                                                                                               nkv, d, scale);
  LATHE_CUDA_LAUNCHED(attention_dq_kernel);
}

void unsupported_head_dim(int d) {
  throw Error(LATHE_ERR_UNSUPPORTED, "the CUDA attention supports head_dim up to 256, got " + std::to_string(d));
}

}  // namespace

void attention_forward(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg,
                       const int32_t* lo, const int32_t* hi, int B, int T, int nh, int nkv, int d) {
  (void)hi;
  if (B <= 0 || T <= 0) return;
  if (c.attention_tc && attention_tc_supports(d)) return attention_tc_forward(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv, d);
  if (d <= 32) forward_dt<1>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv, d);
  else if (d <= 64) forward_dt<2>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv, d);
  else if (d <= 128) forward_dt<4>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv, d);
  else if (d <= 256) forward_dt<8>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv, d);
  else unsupported_head_dim(d);
}

void attention_backward(Ctx& c, float* dq, float* dk, float* dv, float* scratch, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B,
                        int T, int nh, int nkv, int d) {
  if (B <= 0 || T <= 0) return;
  float* D = scratch;  // [B, nh, T] (scratch holds 2*B*T*nh*d floats)
  const int64_t warps = static_cast<int64_t>(B) * T * nh;
  attention_delta_kernel<<<blocks_for(warps * 32), 256, 0, c.stream>>>(D, dout, out, B, T, nh, d);
  LATHE_CUDA_LAUNCHED(attention_delta_kernel);
  if (c.attention_tc && attention_tc_supports(d)) return attention_tc_backward(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv, d);
  if (d <= 32) backward_dt<1>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv, d);
  else if (d <= 64) backward_dt<2>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv, d);
  else if (d <= 128) backward_dt<4>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv, d);
  else if (d <= 256) backward_dt<8>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv, d);
  else unsupported_head_dim(d);
}

}  // namespace cuda
}  // namespace lathe
