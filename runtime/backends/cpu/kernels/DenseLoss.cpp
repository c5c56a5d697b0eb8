//===- DenseLoss.cpp - cross_entropy and its gradient ---------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/Parallel.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

namespace {
/// Counts the rows that contribute; an error names the first bad label.
StatusOr<int64_t> countLabels(const int32_t *labels, int64_t rows,
                              int64_t vocab, int64_t ignoreIndex) {
  int64_t count = 0;
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[r] == ignoreIndex)
      continue;
    if (labels[r] < 0 || labels[r] >= vocab)
      return errorf("label ", labels[r], " at position ", r,
                    " is outside the vocabulary [0, ", vocab,
                    ") and is not the ignore_index ", ignoreIndex);
    ++count;
  }
  return count;
}

/// max and log Σ exp(x − max) of one row of logits.
template <typename T>
void rowLogSumExp(const T *x, int64_t vocab, double &maxv, double &lse) {
  maxv = static_cast<double>(*std::max_element(x, x + vocab));
  double sum = 0;
  for (int64_t c = 0; c < vocab; ++c)
    sum += std::exp(static_cast<double>(x[c]) - maxv);
  lse = std::log(sum);
}
} // namespace

template <typename T>
Status crossEntropy(const T *logits, const int32_t *labels, int64_t rows,
                    int64_t vocab, int64_t ignoreIndex, T *loss) {
  StatusOr<int64_t> count = countLabels(labels, rows, vocab, ignoreIndex);
  if (!count)
    return count.status();
  // Per-row losses, then one ordered sum: deterministic under any thread
  // count.
  std::vector<double> rowLoss(rows, 0.0);
#pragma omp parallel for schedule(static) if (worthThreads(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    if (labels[r] == ignoreIndex)
      continue;
    const T *x = logits + r * vocab;
    double maxv, lse;
    rowLogSumExp(x, vocab, maxv, lse);
    rowLoss[r] = maxv + lse - static_cast<double>(x[labels[r]]);
  }
  double total = 0;
  for (double l : rowLoss)
    total += l;
  // With every label ignored the mean is empty; 0 keeps training finite
  // (PyTorch returns NaN).
  *loss = *count ? static_cast<T>(total / static_cast<double>(*count)) : T(0);
  return Status::ok();
}

template <typename T>
Status crossEntropyGrad(const T *logits, const int32_t *labels, int64_t rows,
                        int64_t vocab, int64_t ignoreIndex, T dloss,
                        T *dlogits) {
  StatusOr<int64_t> count = countLabels(labels, rows, vocab, ignoreIndex);
  if (!count)
    return count.status();
  const double factor =
      *count ? static_cast<double>(dloss) / static_cast<double>(*count) : 0.0;
#pragma omp parallel for schedule(static) if (worthThreads(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    T *g = dlogits + r * vocab;
    if (labels[r] == ignoreIndex) {
      std::fill_n(g, vocab, T(0));
      continue;
    }
    const T *x = logits + r * vocab;
    double maxv, lse;
    rowLogSumExp(x, vocab, maxv, lse);
    for (int64_t c = 0; c < vocab; ++c)
      g[c] = static_cast<T>(factor *
                            std::exp(static_cast<double>(x[c]) - maxv - lse));
    g[labels[r]] -= static_cast<T>(factor);
  }
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status crossEntropy<T>(const T *, const int32_t *, int64_t,         \
                                  int64_t, int64_t, T *);                      \
  template Status crossEntropyGrad<T>(const T *, const int32_t *, int64_t,     \
                                      int64_t, int64_t, T, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
