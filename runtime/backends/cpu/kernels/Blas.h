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

/// Sets the kernels' thread count and returns it: OMP_NUM_THREADS when set
/// (OpenMP reads it itself), else OPENBLAS_NUM_THREADS when set (OpenBLAS runs
/// single-threaded inside the OpenMP threads, so the two name one setting),
/// else OpenMP's default, the cores this process may run on. Call it from
/// the thread that launches the kernels.
int configureCpuThreads();

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_BLAS_H
