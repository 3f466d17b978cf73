// cuda/attention_tc.cu — the tensor-core variant of attention.cu (same op, same shapes and
// masks): FlashAttention-2-style tiles of 64 queries x 64 keys whose products run on bf16
// tensor cores through WMMA (16x16x16 fragments, f32 accumulation). q, k, v, dout are converted
// to bf16 as the tiles are loaded; scores, the online softmax, lse and every accumulator stay f32
// (the probabilities are rounded to bf16 for the P·V and dS products, as FlashAttention does).
// Chosen per backend state (lathe::cuda::set_attention_tensor_cores) for head dims 64 and 128;
// other head dims, and the default, use attention.cu's f32 kernels. Results agree with the f32
// kernels to bf16 rounding (dev/gpu/cuda_ops_test checks 3e-2 of the largest value).
//
// forward:  block = 64 queries of one head, 4 warps x 16 rows; per key tile: S = Q K^T (WMMA),
//           masked online softmax in f32 (2 lanes per row), O (f32, shared memory) = O*alpha + P V.
// backward: D = dO.O (attention.cu's kernel); dK/dV per 64 keys of a kv head (4 warps x 16 keys,
//           S^T = K Q^T and dP^T = V dO^T recomputed, dV += P^T dO, dK += dS^T Q, summed over the
//           group's query heads in the block); dQ per 64 queries (dQ += dS K). Deterministic.
// Shared memory: up to 187 KiB per block (opted in; Hopper has 227 KiB).
#include <mma.h>

#include "cuda/ops.h"

// bf16 WMMA fragments exist from sm_80 on; below that <mma.h> leaves them incomplete types and
// the kernels fail to compile with errors that do not say why. The usual cause: a build whose
// target got no CUDA architectures (nvcc's default is sm_75), e.g. lathe_engine_core configured
// without -DCMAKE_CUDA_ARCHITECTURES: the CMakeLists sets its default of 90 only after that
// target exists (dev/gpu/run.sh passes it explicitly).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "cuda/attention_tc.cu needs sm_80 or newer: configure with -DCMAKE_CUDA_ARCHITECTURES=90 (or 80;90)"
#endif

namespace lathe {
namespace cuda {
namespace {

using namespace nvcuda;
using bf16 = __nv_bfloat16;

constexpr int kTile = 64;   // queries and keys per tile
constexpr int kW = 4;       // warps per block, 16 rows each
constexpr int kSLd = kTile + 4;  // f32 score rows (ld a multiple of 4 floats)
constexpr int kPLd = kTile + 8;  // bf16 probability rows (ld a multiple of 8)

template <int D>
struct Lds {
  static constexpr int bf = D + 8;  // bf16 rows of q/k/v/dO tiles
  static constexpr int f = D + 4;   // f32 rows of O/dK/dV/dQ accumulators
};

// out[16][64] (f32, ldo) = A[16][KD] B[64][KD]^T, A and B bf16 row-major in shared memory
template <int KD>
__device__ __forceinline__ void tile_abt(float* out, int ldo, const bf16* A, int lda, const bf16* B, int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
  for (int j = 0; j < kTile / 16; ++j) {
    wmma::fill_fragment(acc, 0.0f);
#pragma unroll
    for (int kk = 0; kk < KD / 16; ++kk) {
      wmma::load_matrix_sync(a, A + kk * 16, lda);
      wmma::load_matrix_sync(b, B + j * 16 * ldb + kk * 16, ldb);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(out + j * 16, acc, ldo, wmma::mem_row_major);
  }
}

// C[16][ND] (f32, ldc) += A[16][64] B[64][ND], A and B bf16 row-major in shared memory
template <int ND>
__device__ __forceinline__ void tile_ab_acc(float* C, int ldc, const bf16* A, int lda, const bf16* B, int ldb) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
  for (int n = 0; n < ND / 16; ++n) {
    wmma::load_matrix_sync(acc, C + n * 16, ldc, wmma::mem_row_major);
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) {
      wmma::load_matrix_sync(a, A + kk * 16, lda);
      wmma::load_matrix_sync(b, B + kk * 16 * ldb + n * 16, ldb);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(C + n * 16, acc, ldc, wmma::mem_row_major);
  }
}

// 64 rows of D f32 from global (row stride `stride`, `valid` rows exist) into bf16 shared memory
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const float* src, int64_t stride, int valid) {
  for (int e = threadIdx.x; e < kTile * D; e += blockDim.x) {
    const int r = e / D, c = e % D;
    dst[r * Lds<D>::bf + c] = __float2bfloat16_rn(r < valid ? src[r * stride + c] : 0.0f);
  }
}

__device__ __forceinline__ bool visible(int i, int j, int T, const int32_t* sg) {
  return i < T && j <= i && j < T && (!sg || sg[j] == sg[i]);
}

template <class T>
__device__ __forceinline__ T* carve(unsigned char*& p, size_t count) {
  T* r = reinterpret_cast<T*>(p);
  p += (sizeof(T) * count + 127) / 128 * 128;
  return r;
}

template <int D>
constexpr size_t forward_smem() {
  return 3 * size_t{kTile} * Lds<D>::bf * 2 + size_t{kW} * 16 * kSLd * 4 + size_t{kW} * 16 * kPLd * 2 + size_t{kW} * 16 * Lds<D>::f * 4 + 4 * 128;
}

template <int D>
__global__ void __launch_bounds__(kW * 32) attention_tc_forward_kernel(float* out, float* lse, const float* q, const float* k, const float* v,
                                                                       const int32_t* seg, const int32_t* lo, int T, int nh, int nkv,
                                                                       float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* p = smem;
  bf16* Qs = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Ks = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Vs = carve<bf16>(p, kTile * Lds<D>::bf);
  float* Ss = carve<float>(p, kW * 16 * kSLd);
  bf16* Ps = carve<bf16>(p, kW * 16 * kPLd);
  float* Os = carve<float>(p, kW * 16 * Lds<D>::f);
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
  const int64_t qs = static_cast<int64_t>(nh) * D, ks = static_cast<int64_t>(nkv) * D, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* S = Ss + warp * 16 * kSLd;
  bf16* P = Ps + warp * 16 * kPLd;
  float* O = Os + warp * 16 * Lds<D>::f;
  load_tile<D>(Qs, q + (row0 + q0) * qs + h * D, qs, min(kTile, T - q0));
  for (int e = lane; e < 16 * Lds<D>::f; e += 32) O[e] = 0.0f;
  const int rr = lane >> 1, half = lane & 1;  // this lane's row of the warp's 16 and half of the columns
  const int i = q0 + warp * 16 + rr;
  const int wlast = q0 + warp * 16 + 15;  // the warp's last query
  float m = -INFINITY, l = 0.0f;
  const int kmax = min(T, q0 + kTile);
  const int kmin = lo ? lo[row0 + q0] : 0;
  for (int kt = (kmin / kTile) * kTile; kt < kmax; kt += kTile) {
    __syncthreads();
    load_tile<D>(Ks, k + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
    load_tile<D>(Vs, v + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
    __syncthreads();
    if (q0 + warp * 16 >= T || kt > wlast) continue;  // warp-uniform: no row of this warp sees the tile
    tile_abt<D>(S, kSLd, Qs + warp * 16 * Lds<D>::bf, Lds<D>::bf, Ks, Lds<D>::bf);
    __syncwarp();
    float s[32], tmax = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < 32; ++jj) {
      const int c = half * 32 + jj, j = kt + c;
      s[jj] = visible(i, j, T, sg) ? S[rr * kSLd + c] * scale : -INFINITY;
      tmax = fmaxf(tmax, s[jj]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float mnew = fmaxf(m, tmax);
    float alpha = 1.0f, sum = 0.0f;
    if (mnew != -INFINITY) {
      alpha = expf(m - mnew);  // m = -inf (nothing seen yet): 0
#pragma unroll
      for (int jj = 0; jj < 32; ++jj) {
        s[jj] = s[jj] == -INFINITY ? 0.0f : expf(s[jj] - mnew);
        sum += s[jj];
      }
    } else {
#pragma unroll
      for (int jj = 0; jj < 32; ++jj) s[jj] = 0.0f;
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    l = l * alpha + sum;
    m = mnew;
#pragma unroll
    for (int jj = 0; jj < 32; ++jj) P[rr * kPLd + half * 32 + jj] = __float2bfloat16_rn(s[jj]);
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) O[rr * Lds<D>::f + c] *= alpha;
    __syncwarp();
    tile_ab_acc<D>(O, Lds<D>::f, P, kPLd, Vs, Lds<D>::bf);
    __syncwarp();
  }
  if (i < T) {
    const float inv = 1.0f / l;
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) out[(row0 + i) * qs + h * D + c] = O[rr * Lds<D>::f + c] * inv;
    if (half == 0) lse[(static_cast<int64_t>(b) * nh + h) * T + i] = m + logf(l);
  }
}

template <int D>
constexpr size_t dkv_smem() {
  return 4 * size_t{kTile} * Lds<D>::bf * 2 + 2 * kTile * 4 + 2 * size_t{kW} * 16 * kSLd * 4 + 2 * size_t{kW} * 16 * kPLd * 2 +
         2 * size_t{kW} * 16 * Lds<D>::f * 4 + 10 * 128;
}

template <int D>
__global__ void __launch_bounds__(kW * 32) attention_tc_dkv_kernel(float* dk, float* dv, const float* dout, const float* lse, const float* Dv,
                                                                   const float* q, const float* k, const float* v, const int32_t* seg,
                                                                   const int32_t* hi, int T, int nh, int nkv, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* p = smem;
  bf16* Ks = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Vs = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Qs = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Os = carve<bf16>(p, kTile * Lds<D>::bf);  // dout tile
  float* Ls = carve<float>(p, kTile);
  float* Ds = carve<float>(p, kTile);
  float* Sts = carve<float>(p, kW * 16 * kSLd);
  float* dPts = carve<float>(p, kW * 16 * kSLd);
  bf16* Pts = carve<bf16>(p, kW * 16 * kPLd);
  bf16* dSts = carve<bf16>(p, kW * 16 * kPLd);
  float* dKs = carve<float>(p, kW * 16 * Lds<D>::f);
  float* dVs = carve<float>(p, kW * 16 * Lds<D>::f);
  const int kt = blockIdx.x * kTile, g = blockIdx.y, b = blockIdx.z, rep = nh / nkv;
  const int64_t qs = static_cast<int64_t>(nh) * D, ks = static_cast<int64_t>(nkv) * D, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* St = Sts + warp * 16 * kSLd;
  float* dPt = dPts + warp * 16 * kSLd;
  bf16* Pt = Pts + warp * 16 * kPLd;
  bf16* dSt = dSts + warp * 16 * kPLd;
  float* dK = dKs + warp * 16 * Lds<D>::f;
  float* dV = dVs + warp * 16 * Lds<D>::f;
  load_tile<D>(Ks, k + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
  load_tile<D>(Vs, v + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
  for (int e = lane; e < 16 * Lds<D>::f; e += 32) dK[e] = dV[e] = 0.0f;
  const int rr = lane >> 1, half = lane & 1;  // this lane's key row of the warp's 16, half of the queries
  const int j = kt + warp * 16 + rr;
  const int last_key = min(kt + kTile, T) - 1;
  const int qend = hi ? hi[row0 + last_key] : T;
  const bool warp_has_keys = kt + warp * 16 < T;
  for (int hh = 0; hh < rep; ++hh) {
    const int h = g * rep + hh;
    const float* lh = lse + (static_cast<int64_t>(b) * nh + h) * T;
    const float* dh = Dv + (static_cast<int64_t>(b) * nh + h) * T;
    for (int qt = (kt / kTile) * kTile; qt < qend; qt += kTile) {
      __syncthreads();
      load_tile<D>(Qs, q + (row0 + qt) * qs + h * D, qs, min(kTile, T - qt));
      load_tile<D>(Os, dout + (row0 + qt) * qs + h * D, qs, min(kTile, T - qt));
      for (int e = threadIdx.x; e < kTile; e += blockDim.x) {
        Ls[e] = qt + e < T ? lh[qt + e] : 0.0f;
        Ds[e] = qt + e < T ? dh[qt + e] : 0.0f;
      }
      __syncthreads();
      if (!warp_has_keys || qt + kTile - 1 < kt + warp * 16) continue;  // warp-uniform: no query of the tile sees these keys
      tile_abt<D>(St, kSLd, Ks + warp * 16 * Lds<D>::bf, Lds<D>::bf, Qs, Lds<D>::bf);   // S^T = K Q^T
      tile_abt<D>(dPt, kSLd, Vs + warp * 16 * Lds<D>::bf, Lds<D>::bf, Os, Lds<D>::bf);  // dP^T = V dO^T
      __syncwarp();
#pragma unroll 8
      for (int jj = 0; jj < 32; ++jj) {
        const int c = half * 32 + jj, i = qt + c;
        float pv = 0.0f, ds = 0.0f;
        if (visible(i, j, T, sg)) {
          pv = expf(St[rr * kSLd + c] * scale - Ls[c]);
          ds = pv * (dPt[rr * kSLd + c] - Ds[c]) * scale;
        }
        Pt[rr * kPLd + c] = __float2bfloat16_rn(pv);
        dSt[rr * kPLd + c] = __float2bfloat16_rn(ds);
      }
      __syncwarp();
      tile_ab_acc<D>(dV, Lds<D>::f, Pt, kPLd, Os, Lds<D>::bf);   // dV += P^T dO
      tile_ab_acc<D>(dK, Lds<D>::f, dSt, kPLd, Qs, Lds<D>::bf);  // dK += dS^T Q
      __syncwarp();
    }
  }
  __syncwarp();
  if (j < T)
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) {
      dk[(row0 + j) * ks + g * D + c] = dK[rr * Lds<D>::f + c];
      dv[(row0 + j) * ks + g * D + c] = dV[rr * Lds<D>::f + c];
    }
}

template <int D>
constexpr size_t dq_smem() {
  return 4 * size_t{kTile} * Lds<D>::bf * 2 + 2 * size_t{kW} * 16 * kSLd * 4 + size_t{kW} * 16 * kPLd * 2 + size_t{kW} * 16 * Lds<D>::f * 4 +
         8 * 128;
}

template <int D>
__global__ void __launch_bounds__(kW * 32) attention_tc_dq_kernel(float* dq, const float* dout, const float* lse, const float* Dv, const float* q,
                                                                  const float* k, const float* v, const int32_t* seg, const int32_t* lo, int T,
                                                                  int nh, int nkv, float scale) {
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* p = smem;
  bf16* Qs = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Os = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Ks = carve<bf16>(p, kTile * Lds<D>::bf);
  bf16* Vs = carve<bf16>(p, kTile * Lds<D>::bf);
  float* Ss = carve<float>(p, kW * 16 * kSLd);
  float* dPs = carve<float>(p, kW * 16 * kSLd);
  bf16* dSs = carve<bf16>(p, kW * 16 * kPLd);
  float* dQs = carve<float>(p, kW * 16 * Lds<D>::f);
  const int q0 = blockIdx.x * kTile, h = blockIdx.y, b = blockIdx.z, g = h / (nh / nkv);
  const int64_t qs = static_cast<int64_t>(nh) * D, ks = static_cast<int64_t>(nkv) * D, row0 = static_cast<int64_t>(b) * T;
  const int32_t* sg = seg ? seg + row0 : nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* S = Ss + warp * 16 * kSLd;
  float* dP = dPs + warp * 16 * kSLd;
  bf16* dS = dSs + warp * 16 * kPLd;
  float* dQ = dQs + warp * 16 * Lds<D>::f;
  load_tile<D>(Qs, q + (row0 + q0) * qs + h * D, qs, min(kTile, T - q0));
  load_tile<D>(Os, dout + (row0 + q0) * qs + h * D, qs, min(kTile, T - q0));
  for (int e = lane; e < 16 * Lds<D>::f; e += 32) dQ[e] = 0.0f;
  const int rr = lane >> 1, half = lane & 1;
  const int i = q0 + warp * 16 + rr;
  const float L = i < T ? lse[(static_cast<int64_t>(b) * nh + h) * T + i] : 0.0f;
  const float Di = i < T ? Dv[(static_cast<int64_t>(b) * nh + h) * T + i] : 0.0f;
  const int wlast = q0 + warp * 16 + 15;
  const int kmax = min(T, q0 + kTile);
  const int kmin = lo ? lo[row0 + q0] : 0;
  for (int kt = (kmin / kTile) * kTile; kt < kmax; kt += kTile) {
    __syncthreads();
    load_tile<D>(Ks, k + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
    load_tile<D>(Vs, v + (row0 + kt) * ks + g * D, ks, min(kTile, T - kt));
    __syncthreads();
    if (q0 + warp * 16 >= T || kt > wlast) continue;
    tile_abt<D>(S, kSLd, Qs + warp * 16 * Lds<D>::bf, Lds<D>::bf, Ks, Lds<D>::bf);   // S = Q K^T
    tile_abt<D>(dP, kSLd, Os + warp * 16 * Lds<D>::bf, Lds<D>::bf, Vs, Lds<D>::bf);  // dP = dO V^T
    __syncwarp();
#pragma unroll 8
    for (int jj = 0; jj < 32; ++jj) {
      const int c = half * 32 + jj, j = kt + c;
      float ds = 0.0f;
      if (visible(i, j, T, sg)) {
        const float pv = expf(S[rr * kSLd + c] * scale - L);
        ds = pv * (dP[rr * kSLd + c] - Di) * scale;
      }
      dS[rr * kPLd + c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    tile_ab_acc<D>(dQ, Lds<D>::f, dS, kPLd, Ks, Lds<D>::bf);  // dQ += dS K
    __syncwarp();
  }
  if (i < T)
    for (int c = half * (D / 2); c < (half + 1) * (D / 2); ++c) dq[(row0 + i) * qs + h * D + c] = dQ[rr * Lds<D>::f + c];
}

template <class K>
void opt_in(K kernel, size_t smem) {
  LATHE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
}

template <int D>
void forward_d(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo, int B,
               int T, int nh, int nkv) {
  constexpr size_t smem = forward_smem<D>();
  opt_in(attention_tc_forward_kernel<D>, smem);
  attention_tc_forward_kernel<D><<<dim3((T + kTile - 1) / kTile, nh, B), kW * 32, smem, c.stream>>>(out, lse, q, k, v, seg, lo, T, nh, nkv,
                                                                                                  1.0f / sqrtf(static_cast<float>(D)));
  LATHE_CUDA_LAUNCHED(attention_tc_forward_kernel);
}

template <int D>
void backward_d(Ctx& c, float* dq, float* dk, float* dv, const float* Dv, const float* dout, const float* lse, const float* q, const float* k,
                const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B, int T, int nh, int nkv) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  constexpr size_t s_kv = dkv_smem<D>(), s_q = dq_smem<D>();
  opt_in(attention_tc_dkv_kernel<D>, s_kv);
  attention_tc_dkv_kernel<D><<<dim3((T + kTile - 1) / kTile, nkv, B), kW * 32, s_kv, c.stream>>>(dk, dv, dout, lse, Dv, q, k, v, seg, hi, T, nh,
                                                                                                 nkv, scale);
  LATHE_CUDA_LAUNCHED(attention_tc_dkv_kernel);
  opt_in(attention_tc_dq_kernel<D>, s_q);
  attention_tc_dq_kernel<D><<<dim3((T + kTile - 1) / kTile, nh, B), kW * 32, s_q, c.stream>>>(dq, dout, lse, Dv, q, k, v, seg, lo, T, nh, nkv,
                                                                                              scale);
  LATHE_CUDA_LAUNCHED(attention_tc_dq_kernel);
}

}  // namespace

bool attention_tc_supports(int d) { return d == 64 || d == 128; }

void attention_tc_forward(Ctx& c, float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* seg, const int32_t* lo,
                          int B, int T, int nh, int nkv, int d) {
  if (d == 64) forward_d<64>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv);
  else forward_d<128>(c, out, lse, q, k, v, seg, lo, B, T, nh, nkv);
}

void attention_tc_backward(Ctx& c, float* dq, float* dk, float* dv, const float* D, const float* dout, const float* lse, const float* q,
                           const float* k, const float* v, const int32_t* seg, const int32_t* lo, const int32_t* hi, int B, int T, int nh,
                           int nkv, int d) {
  if (d == 64) backward_d<64>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv);
  else backward_d<128>(c, dq, dk, dv, D, dout, lse, q, k, v, seg, lo, hi, B, T, nh, nkv);
}

}  // namespace cuda
}  // namespace lathe
