//===- Blas.cpp - OpenBLAS behind flexmoe::cpu::gemm ----------------------===//
//
// One threading layer: OpenBLAS runs single-threaded and the kernels' OpenMP
// threads share out the GEMMs. Two pools (OpenBLAS's pthreads and OpenMP's)
// each sized to the cores spin against each other, and a threaded GEMM called
// from inside an OpenMP region oversubscribes the cores; on a loaded machine
// either costs far more than the GEMM itself.
//
// Inside a parallel region (active or not: the decision must not depend on
// the thread count) a GEMM is one call on the calling thread. A large GEMM
// outside any parallel region is cut into blocks of C's rows
// (or columns) whose size depends only on the GEMM's shape, never on the
// thread count, and each block is one single-threaded OpenBLAS call: every
// element of C is computed by the same call whatever the number of threads,
// so results are bitwise independent of it.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/Blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>

extern "C" void openblas_set_num_threads(int);

namespace flexmoe::cpu {

namespace {

/// Below this many multiply-adds a GEMM is not worth a parallel region.
constexpr double kMinParallelWork = 64.0 * 64 * 64;
/// C is cut into at most this many blocks along its longer side...
constexpr int64_t kMaxBlocks = 8;
/// ...each at least this long (a multiple of the micro-kernels' 16/8).
constexpr int64_t kMinBlock = 32;

void useSingleThreadedBlas() {
  static const bool done = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)done;
}

void blasGemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, const float *b,
              int64_t ldb, float beta, float *c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
              transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}

void blasGemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
              double alpha, const double *a, int64_t lda, const double *b,
              int64_t ldb, double beta, double *c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
              transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}

template <typename T>
void gemmImpl(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
              T alpha, const T *a, int64_t lda, const T *b, int64_t ldb, T beta,
              T *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  useSingleThreadedBlas();
  const double work = static_cast<double>(m) * n * k;
  const bool byRows = m >= n;
  const int64_t length = byRows ? m : n;
  int64_t block = (length + kMaxBlocks - 1) / kMaxBlocks;
  block = std::max(kMinBlock, (block + 15) / 16 * 16);
  const int64_t numBlocks = (length + block - 1) / block;
  if (omp_get_level() > 0 || work < kMinParallelWork || numBlocks < 2) {
    blasGemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < numBlocks; ++blk) {
    const int64_t lo = blk * block, len = std::min(block, length - lo);
    if (byRows) {
      // Rows lo.. of op(A) and of C.
      const T *aBlk = transA ? a + lo : a + lo * lda;
      blasGemm(transA, transB, len, n, k, alpha, aBlk, lda, b, ldb, beta,
               c + lo * ldc, ldc);
    } else {
      // Columns lo.. of op(B) and of C.
      const T *bBlk = transB ? b + lo * ldb : b + lo;
      blasGemm(transA, transB, m, len, k, alpha, a, lda, bBlk, ldb, beta,
               c + lo, ldc);
    }
  }
}

/// A positive thread count from the environment variable, or 0.
int threadsFromEnv(const char *name) {
  const char *value = std::getenv(name);
  if (!value || !*value)
    return 0;
  char *end = nullptr;
  const long n = std::strtol(value, &end, 10);
  return *end == '\0' && n > 0 && n <= 4096 ? static_cast<int>(n) : 0;
}

} // namespace

int configureCpuThreads() {
  useSingleThreadedBlas();
  if (!threadsFromEnv("OMP_NUM_THREADS"))
    if (int n = threadsFromEnv("OPENBLAS_NUM_THREADS"))
      omp_set_num_threads(n);
  return omp_get_max_threads();
}

template <>
void gemm<float>(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, const float *b,
                 int64_t ldb, float beta, float *c, int64_t ldc) {
  gemmImpl(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <>
void gemm<double>(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
                  double alpha, const double *a, int64_t lda, const double *b,
                  int64_t ldb, double beta, double *c, int64_t ldc) {
  gemmImpl(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

} // namespace flexmoe::cpu
