//===- DenseLinear.cpp - embedding, linear and matmul kernels -------------===//

#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/DenseKernels.h"

#include <algorithm>

namespace flexmoe::cpu {

namespace {
/// Checks every id before anything is written, so a failing call has no
/// partial effect.
Status checkIds(const int32_t *ids, int64_t numIds, int64_t vocab) {
  for (int64_t i = 0; i < numIds; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      return errorf("token id ", ids[i], " at position ", i,
                    " is outside the vocabulary [0, ", vocab, ")");
  return Status::ok();
}
} // namespace

template <typename T>
Status embedding(const int32_t *ids, int64_t numIds, const T *table,
                 int64_t vocab, int64_t dim, T *out) {
  FLEXMOE_RETURN_IF_ERROR(checkIds(ids, numIds, vocab));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < numIds; ++i)
    std::copy_n(table + ids[i] * dim, dim, out + i * dim);
  return Status::ok();
}

template <typename T>
Status embeddingGrad(const int32_t *ids, int64_t numIds, const T *dy,
                     int64_t vocab, int64_t dim, T *dtable) {
  FLEXMOE_RETURN_IF_ERROR(checkIds(ids, numIds, vocab));
  std::fill_n(dtable, vocab * dim, T(0));
  // Threads split the columns, and each visits the ids in order: repeated
  // ids accumulate in the same order whatever the thread count.
  constexpr int64_t kBlock = 64;
  const int64_t numBlocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < numBlocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(dim, c0 + kBlock);
    for (int64_t i = 0; i < numIds; ++i) {
      T *row = dtable + ids[i] * dim;
      const T *src = dy + i * dim;
      for (int64_t c = c0; c < c1; ++c)
        row[c] += src[c];
    }
  }
  return Status::ok();
}

template <typename T>
void linear(const T *x, const T *w, const T *bias, int64_t m, int64_t k,
            int64_t n, T *y) {
  // The bias rows are written by each GEMM block itself: one fork-join.
  GemmCall<T> call{false, false, m, n, k, T(1), x, k, w, n, T(0), y, n, bias};
  gemmBatch<T>(std::span<const GemmCall<T>>(&call, 1));
}

template <typename T>
void linearGrad(const T *x, const T *w, const T *dy, int64_t m, int64_t k,
                int64_t n, T *dx, T *dw) {
  // dx and dw are independent: one parallel region for both.
  GemmCall<T> calls[2];
  int count = 0;
  if (dx)
    calls[count++] = {false, true, m, k, n, T(1), dy, n, w, n, T(0), dx, k};
  if (dw)
    calls[count++] = {true, false, k, n, m, T(1), x, k, dy, n, T(0), dw, n};
  gemmBatch<T>(std::span<const GemmCall<T>>(calls, count));
}

template <typename T>
void matmul(const T *lhs, const T *rhs, int64_t batch, int64_t m, int64_t k,
            int64_t n, bool transposeLhs, bool transposeRhs, bool rhsBatched,
            T *out) {
  const int64_t lda = transposeLhs ? m : k;
  const int64_t ldb = transposeRhs ? k : n;
  if (!rhsBatched && !transposeLhs) {
    // A broadcast rhs against a row-major lhs is one big GEMM.
    gemm<T>(false, transposeRhs, batch * m, n, k, T(1), lhs, lda, rhs, ldb,
            T(0), out, n);
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    gemm<T>(transposeLhs, transposeRhs, m, n, k, T(1), lhs + b * m * k, lda,
            rhs + (rhsBatched ? b * k * n : 0), ldb, T(0), out + b * m * n, n);
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status embedding<T>(const int32_t *, int64_t, const T *, int64_t,   \
                               int64_t, T *);                                  \
  template Status embeddingGrad<T>(const int32_t *, int64_t, const T *,        \
                                   int64_t, int64_t, T *);                     \
  template void linear<T>(const T *, const T *, const T *, int64_t, int64_t,   \
                          int64_t, T *);                                       \
  template void linearGrad<T>(const T *, const T *, const T *, int64_t,        \
                              int64_t, int64_t, T *, T *);                     \
  template void matmul<T>(const T *, const T *, int64_t, int64_t, int64_t,     \
                          int64_t, bool, bool, bool, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
