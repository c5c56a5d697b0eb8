//===- Blas.h - row-major GEMM on the CPU for float and double ---*- C++
//-*-===//
//
// One entry point for the kernels' matrix products, so that float (training)
// and double (gradient checks) share the kernels' code.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_BLAS_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_BLAS_H

#include <cstdint>
#include <span>

namespace flexmoe::cpu {

/// C[m,n] = alpha · op(A)[m,k] · op(B)[k,n] + beta · C, all row-major with
/// leading dimensions lda, ldb, ldc; op transposes when the flag is set.
/// Outside a parallel region large products spread over the OpenMP threads;
/// inside one (e.g. one task per attention head) the call runs on the calling
/// thread. Either way the result does not depend on the thread count.
template <typename T>
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, T alpha,
          const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c,
          int64_t ldc);

/// One product for gemmBatch: C = alpha·op(A)·op(B) + beta·C as for gemm, or,
/// when rowBias is set, C = rowBias (broadcast over C's rows, n values) +
/// alpha·op(A)·op(B), ignoring beta and C's old contents.
template <typename T> struct GemmCall {
  bool transA = false, transB = false;
  int64_t m = 0, n = 0, k = 0;
  T alpha = T(1);
  const T *a = nullptr;
  int64_t lda = 0;
  const T *b = nullptr;
  int64_t ldb = 0;
  T beta = T(0);
  T *c = nullptr;
  int64_t ldc = 0;
  const T *rowBias = nullptr;
};

/// Independent products (no call writes memory another reads or writes) in
/// one parallel region: each call is cut into the blocks gemm would cut it
/// into, and all blocks of all calls are shared out together, so a layer of
/// many small GEMMs (one per expert) or two independent ones (a linear's dx
/// and dw) costs one fork-join instead of one per GEMM. Bitwise the same as
/// calling gemm on each (after filling C with rowBias and using beta = 1).
template <typename T> void gemmBatch(std::span<const GemmCall<T>> calls);

/// Sets the kernels' thread count and returns it: OMP_NUM_THREADS when set
/// (OpenMP reads it itself), else OPENBLAS_NUM_THREADS when set (OpenBLAS runs
/// single-threaded inside the OpenMP threads, so the two name one setting),
/// else OpenMP's default, the cores this process may run on. Call it from
/// the thread that launches the kernels.
int configureCpuThreads();

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_BLAS_H
