// cpu/gemm.h — threaded single-precision GEMM (row-major), BLIS-style blocking around a register
// micro-kernel chosen at run time for the CPU (gemm_kernels.h: AVX-512F, AVX2+FMA or portable).
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C
//   op(A) = A ([M,K], leading dim lda) or A^T (A stored [K,M]); likewise B ([K,N] or [N,K]).
//
// Each element of C is reduced by one thread in a fixed order, so results do not depend on the
// number of threads or on scheduling (for one kernel; different kernels round differently).
// beta == 0 overwrites C (NaNs in C are not propagated).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lathe {

class ThreadPool;
namespace cpu {
struct GemmKernel;
}

void sgemm(ThreadPool& pool, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// The same with a given micro-kernel (tests and dev/ compare the kernels; the CPU must run it).
void sgemm_with(ThreadPool& pool, const cpu::GemmKernel& kernel, bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                const float* A, int lda, const float* B, int ldb, float beta, float* C, int ldc);

// The same product computed entirely in the calling thread (for kernels that already run one task
// per thread, such as attention's per-head tasks); `work` holds sgemm_serial_work_floats() floats.
void sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                  float beta, float* C, int ldc, float* work);
size_t sgemm_serial_work_floats();

// The task plan shared by sgemm and sgemm_bf16: a task is an nc-column panel of C times a group
// of mc-row tiles (its B panel packed once per K slice and run over all its rows). Narrow products
// get narrower panels, so that there are at least two tasks per thread; groups aim at four tasks
// per thread. A deep product (K at least 8x M and N: the head's dx = dlogits E, K the vocabulary)
// streams both operands from memory: one task per thread, all the rows and a thread's share of
// the columns, so that each operand is read once per thread.
struct GemmTiles {
  int nc_max, tiles_m, tiles_n, group, groups_m;
  int64_t tasks() const { return static_cast<int64_t>(groups_m) * tiles_n; }
};
GemmTiles gemm_tiles(int M, int N, int K, int threads, int mc, int nc, int nr);

// Before a task's K slices: C[i0:i0+mg, j0:j0+nc] *= beta, or filled with zeros when beta = 0 and
// the first slice cannot store (K <= 0 or alpha = 0). Returns whether the first slice stores
// (beta = 0: C is neither zero-filled nor read).
bool gemm_prepare_c(float beta, float alpha, int K, float* C, int ldc, int i0, int mg, int j0, int nc);

// C[M,N] = alpha * A[M,K] B[K,N] + beta C
inline void gemm_nn(ThreadPool& p, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  sgemm(p, false, false, M, N, K, alpha, A, K, B, N, beta, C, N);
}
// C[M,N] = alpha * A[M,K] B[N,K]^T + beta C   (y = x W^T)
inline void gemm_nt(ThreadPool& p, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  sgemm(p, false, true, M, N, K, alpha, A, K, B, K, beta, C, N);
}
// C[M,N] = alpha * A[K,M]^T B[K,N] + beta C   (dW = dy^T x)
inline void gemm_tn(ThreadPool& p, int M, int N, int K, float alpha, const float* A, const float* B, float beta, float* C) {
  sgemm(p, true, false, M, N, K, alpha, A, M, B, N, beta, C, N);
}

}  // namespace lathe
