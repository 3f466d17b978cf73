// cuda/blas.cu — every cuBLAS(Lt) call of the engine, in this one file: it is compiled only where
// CMake finds CUDA::cublasLt (the CI machine has nvcc but not the library, so there the other
// .cu files are compile-checked and this one is not).
//
// All products are row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C, computed by cuBLASLt
// (column-major) as C^T = op(B)^T op(A)^T, so A and B swap places and no data is transposed.
//   gemm_f32:     f32 operands, f32 compute (CUBLAS_COMPUTE_32F: no TF32, so LoRA products and
//                 the f32 head stay within f32 rounding of the CPU's);
//   bf16_matmul:  x rounded to bf16 (one conversion kernel), W bf16, f32 output, f32 compute;
//   nf4 matmuls:  the activation rounded to bf16 once, the weight dequantised to bf16 in tiles of
//                 whole rows (nf4.cu; at most kTileElems, a whole 8B-model weight in one tile)
//                 and multiplied tile by tile.
// Algorithms: cuBLASLt's first heuristic for each shape, cached (with its descriptors) per
// shape, leading dims, types and pointer alignments; a 32 MiB workspace.
#include <cublasLt.h>

#include <map>
#include <tuple>

#include "cuda/ops.h"

namespace lathe {
namespace cuda {

namespace {

[[noreturn]] void blas_fail(cublasStatus_t s, const char* what, const char* file, int line) {
  throw Error(s == CUBLAS_STATUS_ALLOC_FAILED ? LATHE_ERR_OUT_OF_MEMORY : LATHE_ERR_INTERNAL,
              std::string("cuBLASLt: ") + what + " failed with status " + std::to_string(static_cast<int>(s)), file, line);
}

}  // namespace
}  // namespace cuda
}  // namespace lathe

#define LATHE_BLAS_CHECK(call)                                                              \
  do {                                                                                      \
    const cublasStatus_t st_ = (call);                                                      \
    if (st_ != CUBLAS_STATUS_SUCCESS) ::lathe::cuda::blas_fail(st_, #call, __FILE__, __LINE__); \
  } while (0)

namespace lathe {
namespace cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr int64_t kTileElems = int64_t{1} << 26;  // NF4 dequantisation tile (bf16): 128 MiB at most

// What selects a cuBLASLt plan: transposes, sizes, leading dims, operand type, alignments.
using PlanKey = std::tuple<int, int, int, int, int, int64_t, int64_t, int64_t, int, int, int, int>;

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

int alignment_of(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && (u % a) != 0) a >>= 1;
  return a;
}

}  // namespace

struct Blas {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::map<PlanKey, Plan> plans;
};

Blas* blas_create(Ctx& c) {
  Blas* b = new Blas();
  try {
    LATHE_BLAS_CHECK(cublasLtCreate(&b->handle));
    LATHE_CUDA_CHECK(cudaMallocAsync(&b->workspace, kWorkspaceBytes, c.stream));
  } catch (...) {
    blas_destroy(b, c.stream);
    throw;
  }
  return b;
}

void blas_destroy(Blas* b, cudaStream_t stream) {
  if (!b) return;
  for (auto& kv : b->plans) {
    Plan& p = kv.second;
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (b->workspace) cudaFreeAsync(b->workspace, stream);
  if (b->handle) cublasLtDestroy(b->handle);
  delete b;
}

namespace {

// Row-major C[M,N] (f32, ldc) = alpha op(A) op(B) + beta C with A, B of type `ab` (f32 or bf16).
void lt_matmul(Ctx& ctx, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const void* A, int lda, const void* B, int ldb,
               cudaDataType_t ab, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {  // an empty sum: C = beta C
    if (beta == 0.0f) {
      for (int i = 0; i < M; ++i) LATHE_CUDA_CHECK(cudaMemsetAsync(C + static_cast<int64_t>(i) * ldc, 0, sizeof(float) * N, ctx.stream));
    } else if (beta != 1.0f) {
      for (int i = 0; i < M; ++i) scale(ctx, C + static_cast<int64_t>(i) * ldc, N, beta);
    }
    return;
  }
  Blas& bl = *ctx.blas;
  // column-major: C'[N x M] = X[N x K] Y[K x M], X = op(B)^T from B's buffer, Y = op(A)^T from A's
  const cublasOperation_t opx = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, opy = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const PlanKey key{trans_a, trans_b, M, N, K, lda, ldb, ldc, static_cast<int>(ab), alignment_of(A), alignment_of(B), alignment_of(C)};
  auto it = bl.plans.find(key);
  if (it == bl.plans.end()) {
    Plan p;
    LATHE_BLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LATHE_BLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof opx));
    LATHE_BLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof opy));
    // stored shapes (before op), column-major
    LATHE_BLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, trans_b ? K : N, trans_b ? N : K, ldb));
    LATHE_BLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, trans_a ? M : K, trans_a ? K : M, lda));
    LATHE_BLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, N, M, ldc));
    cublasLtMatmulPreference_t pref = nullptr;
    LATHE_BLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t align_x = static_cast<uint32_t>(alignment_of(B)), align_y = static_cast<uint32_t>(alignment_of(A)),
                   align_c = static_cast<uint32_t>(alignment_of(C));
    cublasLtMatmulHeuristicResult_t heur{};
    int found = 0;
    cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_x, sizeof align_x);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_y, sizeof align_y);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c, sizeof align_c);
    if (st == CUBLAS_STATUS_SUCCESS)
      st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c, sizeof align_c);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulAlgoGetHeuristic(bl.handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &heur, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st == CUBLAS_STATUS_SUCCESS && found == 0) st = CUBLAS_STATUS_NOT_SUPPORTED;
    if (st != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(p.a);
      cublasLtMatrixLayoutDestroy(p.b);
      cublasLtMatrixLayoutDestroy(p.c);
      cublasLtMatmulDescDestroy(p.desc);
      blas_fail(st, ("choosing an algorithm for " + std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K)).c_str(), __FILE__,
                __LINE__);
    }
    p.algo = heur.algo;
    it = bl.plans.emplace(key, p).first;
  }
  const Plan& p = it->second;
  LATHE_BLAS_CHECK(cublasLtMatmul(bl.handle, p.desc, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo, bl.workspace, kWorkspaceBytes,
                                  ctx.stream));
}

int64_t tile_rows(const Nf4View& W) {
  return std::max<int64_t>(1, std::min<int64_t>(W.rows, kTileElems / std::max<int64_t>(1, W.cols)));
}

}  // namespace

void gemm_f32(Ctx& c, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
              float beta, float* C, int ldc) {
  lt_matmul(c, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, CUDA_R_32F, beta, C, ldc);
}

void bf16_matmul(Ctx& c, bool trans_w, int M, int N, int K, const float* x, const __nv_bfloat16* W, int ldw, bool accumulate, float* y) {
  if (M <= 0 || N <= 0) return;
  auto* xb = static_cast<__nv_bfloat16*>(c.grow(c.bf16_a, sizeof(__nv_bfloat16) * static_cast<size_t>(M) * K));
  to_bf16(c, xb, x, static_cast<int64_t>(M) * K);
  lt_matmul(c, false, trans_w, M, N, K, 1.0f, xb, K, W, ldw, CUDA_R_16BF, accumulate ? 1.0f : 0.0f, y, N);
}

void nf4_matmul_nt(Ctx& c, int N, const float* x, const Nf4View& W, float* y) {
  const int cols = static_cast<int>(W.cols), rows = static_cast<int>(W.rows);
  if (N <= 0 || rows <= 0) return;
  auto* xb = static_cast<__nv_bfloat16*>(c.grow(c.bf16_a, sizeof(__nv_bfloat16) * static_cast<size_t>(N) * cols));
  to_bf16(c, xb, x, static_cast<int64_t>(N) * cols);
  const int64_t TR = tile_rows(W);
  auto* tile = static_cast<__nv_bfloat16*>(c.grow(c.bf16_b, sizeof(__nv_bfloat16) * static_cast<size_t>(TR * W.cols)));
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int R = static_cast<int>(std::min(TR, W.rows - r0));
    nf4_dequantize_rows(c, W, r0, r0 + R, tile);
    // y[:, r0:r0+R] = xb tile^T
    lt_matmul(c, false, true, N, R, cols, 1.0f, xb, cols, tile, cols, CUDA_R_16BF, 0.0f, y + r0, rows);
  }
}

void nf4_matmul_nn(Ctx& c, int N, const float* dy, const Nf4View& W, float* dx, bool accumulate) {
  const int cols = static_cast<int>(W.cols), rows = static_cast<int>(W.rows);
  if (N <= 0 || cols <= 0) return;
  auto* db = static_cast<__nv_bfloat16*>(c.grow(c.bf16_a, sizeof(__nv_bfloat16) * static_cast<size_t>(N) * rows));
  to_bf16(c, db, dy, static_cast<int64_t>(N) * rows);
  const int64_t TR = tile_rows(W);
  auto* tile = static_cast<__nv_bfloat16*>(c.grow(c.bf16_b, sizeof(__nv_bfloat16) * static_cast<size_t>(TR * W.cols)));
  for (int64_t r0 = 0; r0 < W.rows; r0 += TR) {
    const int R = static_cast<int>(std::min(TR, W.rows - r0));
    nf4_dequantize_rows(c, W, r0, r0 + R, tile);
    // dx (+)= db[:, r0:r0+R] tile
    lt_matmul(c, false, false, N, cols, R, 1.0f, db + r0, rows, tile, cols, CUDA_R_16BF, (accumulate || r0 > 0) ? 1.0f : 0.0f, dx, cols);
  }
}

}  // namespace cuda
}  // namespace lathe
