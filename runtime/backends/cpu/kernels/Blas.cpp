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
#include <utility>
#include <vector>

extern "C" void openblas_set_num_threads(int);

namespace flexmoe::cpu {

namespace {

/// Below this many multiply-adds a GEMM is not worth a parallel region.
constexpr double kMinBlockedGemmWork = 64.0 * 64 * 64;
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

/// How a product is cut: numBlocks blocks of `block` rows (byRows) or columns
/// of C. A function of the shape only.
struct Blocking {
  bool byRows;
  int64_t block, numBlocks;
};

template <typename T> Blocking blockingOf(const GemmCall<T> &call) {
  const bool byRows = call.m >= call.n;
  if (call.m == 0 || call.n == 0)
    return {byRows, 0, 0};
  const int64_t length = byRows ? call.m : call.n;
  const double work = static_cast<double>(call.m) * call.n * call.k;
  if (work < kMinBlockedGemmWork)
    return {byRows, length, length > 0 ? 1 : 0};
  int64_t block = (length + kMaxBlocks - 1) / kMaxBlocks;
  block = std::max(kMinBlock, (block + 15) / 16 * 16);
  return {byRows, block, (length + block - 1) / block};
}

/// Block blk of the call: rows (or columns) lo.. of C, with the bias rows
/// written first when the call has one.
template <typename T>
void runBlock(const GemmCall<T> &call, const Blocking &blocking, int64_t blk) {
  const int64_t length = blocking.byRows ? call.m : call.n;
  const int64_t lo = blk * blocking.block;
  const int64_t len = std::min(blocking.block, length - lo);
  const int64_t m = blocking.byRows ? len : call.m;
  const int64_t n = blocking.byRows ? call.n : len;
  const T *a = call.a, *b = call.b;
  T *c = call.c;
  const T *bias = call.rowBias;
  if (blocking.byRows) {
    a += call.transA ? lo : lo * call.lda;
    c += lo * call.ldc;
  } else {
    b += call.transB ? lo * call.ldb : lo;
    c += lo;
    bias = bias ? bias + lo : nullptr;
  }
  T beta = call.beta;
  if (bias) {
    for (int64_t r = 0; r < m; ++r)
      std::copy_n(bias, n, c + r * call.ldc);
    beta = T(1);
  }
  blasGemm(call.transA, call.transB, m, n, call.k, call.alpha, a, call.lda, b,
           call.ldb, beta, c, call.ldc);
}

} // namespace

template <typename T> void gemmBatch(std::span<const GemmCall<T>> calls) {
  useSingleThreadedBlas();
  // Inside a parallel region (active or not: the decision must not depend on
  // the thread count) every product is one call on the calling thread.
  const bool nested = omp_get_level() > 0;
  std::vector<Blocking> blockings(calls.size());
  // (call, block) pairs, in call order.
  std::vector<std::pair<int32_t, int32_t>> tasks;
  for (size_t i = 0; i < calls.size(); ++i) {
    blockings[i] = blockingOf(calls[i]);
    if (nested && blockings[i].numBlocks > 1)
      blockings[i] = {true, calls[i].m, 1};
    for (int64_t blk = 0; blk < blockings[i].numBlocks; ++blk)
      tasks.emplace_back(static_cast<int32_t>(i), static_cast<int32_t>(blk));
  }
  const int64_t numTasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel for schedule(dynamic, 1) if (!nested && numTasks > 1)
  for (int64_t t = 0; t < numTasks; ++t)
    runBlock(calls[tasks[t].first], blockings[tasks[t].first], tasks[t].second);
}

/// A positive thread count from the environment variable, or 0.
static int threadsFromEnv(const char *name) {
  const char *value = std::getenv(name);
  if (!value || !*value)
    return 0;
  char *end = nullptr;
  const long n = std::strtol(value, &end, 10);
  return *end == '\0' && n > 0 && n <= 4096 ? static_cast<int>(n) : 0;
}

int configureCpuThreads() {
  useSingleThreadedBlas();
  if (!threadsFromEnv("OMP_NUM_THREADS"))
    if (int n = threadsFromEnv("OPENBLAS_NUM_THREADS"))
      omp_set_num_threads(n);
  return omp_get_max_threads();
}

template <typename T>
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, T alpha,
          const T *a, int64_t lda, const T *b, int64_t ldb, T beta, T *c,
          int64_t ldc) {
  if (m == 0 || n == 0)
    return;
  const GemmCall<T> call{transA, transB, m,   n,    k, alpha, a,
                         lda,    b,      ldb, beta, c, ldc,   nullptr};
  gemmBatch<T>(std::span<const GemmCall<T>>(&call, 1));
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float,
                          const float *, int64_t, const float *, int64_t, float,
                          float *, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double,
                           const double *, int64_t, const double *, int64_t,
                           double, double *, int64_t);
template void gemmBatch<float>(std::span<const GemmCall<float>>);
template void gemmBatch<double>(std::span<const GemmCall<double>>);

} // namespace flexmoe::cpu
