//===- DenseNorm.cpp - layer_norm and softmax kernels ---------------------===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/Parallel.h"

#include <algorithm>
#include <cmath>

namespace flexmoe::cpu {

namespace {
/// Mean and 1/sqrt(biased variance + epsilon) of one row, in double so that
/// float rows keep their precision.
template <typename T>
void rowStatsImpl(const T *x, int64_t dim, double epsilon, double &mean,
                  double &rstd) {
  double sum = 0;
  for (int64_t c = 0; c < dim; ++c)
    sum += static_cast<double>(x[c]);
  mean = sum / static_cast<double>(dim);
  double sq = 0;
  for (int64_t c = 0; c < dim; ++c) {
    const double d = static_cast<double>(x[c]) - mean;
    sq += d * d;
  }
  rstd = 1.0 / std::sqrt(sq / static_cast<double>(dim) + epsilon);
}
} // namespace

template <typename T>
void layerNorm(const T *x, const T *gamma, const T *beta, int64_t rows,
               int64_t dim, double epsilon, T *y) {
#pragma omp parallel for schedule(static) if (worthThreads(rows * dim))
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    T *yr = y + r * dim;
    double mean, rstd;
    rowStatsImpl(xr, dim, epsilon, mean, rstd);
    for (int64_t c = 0; c < dim; ++c)
      yr[c] = static_cast<T>((static_cast<double>(xr[c]) - mean) * rstd) *
                  gamma[c] +
              beta[c];
  }
}

template <typename T>
void layerNormGrad(const T *x, const T *gamma, const T *dy, int64_t rows,
                   int64_t dim, double epsilon, T *dx, T *dgamma, T *dbeta) {
  std::vector<double> stats(2 * rows);
  // With x̂ = (x − mean)·rstd and g = dy ⊙ gamma:
  //   dx = rstd · (g − mean(g) − x̂ · mean(g ⊙ x̂)).
#pragma omp parallel for schedule(static) if (worthThreads(rows * dim))
  for (int64_t r = 0; r < rows; ++r) {
    const T *xr = x + r * dim;
    const T *dyr = dy + r * dim;
    double mean, rstd;
    rowStatsImpl(xr, dim, epsilon, mean, rstd);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
    double sumG = 0, sumGX = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const double g = static_cast<double>(dyr[c]) * gamma[c];
      sumG += g;
      sumGX += g * (static_cast<double>(xr[c]) - mean) * rstd;
    }
    const double meanG = sumG / dim, meanGX = sumGX / dim;
    T *dxr = dx + r * dim;
    for (int64_t c = 0; c < dim; ++c) {
      const double g = static_cast<double>(dyr[c]) * gamma[c];
      const double xhat = (static_cast<double>(xr[c]) - mean) * rstd;
      dxr[c] = static_cast<T>(rstd * (g - meanG - xhat * meanGX));
    }
  }
  // Parameter gradients: threads split blocks of columns and each sums its
  // rows in order (no racing reduction); blocks keep the reads row-major.
  constexpr int64_t kBlock = 64;
  const int64_t numBlocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (worthThreads(rows * dim))
  for (int64_t blk = 0; blk < numBlocks; ++blk) {
    const int64_t c0 = blk * kBlock, width = std::min(kBlock, dim - c0);
    double sg[kBlock] = {}, sb[kBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T *xr = x + r * dim + c0;
      const T *dyr = dy + r * dim + c0;
      const double mean = stats[2 * r], rstd = stats[2 * r + 1];
      for (int64_t c = 0; c < width; ++c) {
        const double d = static_cast<double>(dyr[c]);
        sg[c] += d * (static_cast<double>(xr[c]) - mean) * rstd;
        sb[c] += d;
      }
    }
    for (int64_t c = 0; c < width; ++c) {
      dgamma[c0 + c] = static_cast<T>(sg[c]);
      dbeta[c0 + c] = static_cast<T>(sb[c]);
    }
  }
}

template <typename T> void softmax(const T *x, AxisSplit split, T *y) {
  const int64_t n = split.axisSize, inner = split.inner;
  if (n == 0)
    return; // an empty axis has no maximum to read
#pragma omp parallel for schedule(                                             \
    static) if (worthThreads(split.outer * inner * n))
  for (int64_t line = 0; line < split.outer * inner; ++line) {
    const int64_t base = (line / inner) * n * inner + line % inner;
    T maxv = x[base];
    for (int64_t i = 1; i < n; ++i)
      maxv = std::max(maxv, x[base + i * inner]);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T e = std::exp(x[base + i * inner] - maxv);
      y[base + i * inner] = e;
      sum += e;
    }
    const T inv = static_cast<T>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i)
      y[base + i * inner] *= inv;
  }
}

template <typename T>
void softmaxGrad(const T *y, const T *dy, AxisSplit split, T *dx) {
  const int64_t n = split.axisSize, inner = split.inner;
#pragma omp parallel for schedule(                                             \
    static) if (worthThreads(split.outer * inner * n))
  for (int64_t line = 0; line < split.outer * inner; ++line) {
    const int64_t base = (line / inner) * n * inner + line % inner;
    double dot = 0;
    for (int64_t i = 0; i < n; ++i)
      dot += static_cast<double>(y[base + i * inner]) * dy[base + i * inner];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t at = base + i * inner;
      dx[at] = static_cast<T>(y[at] * (dy[at] - dot));
    }
  }
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template void layerNorm<T>(const T *, const T *, const T *, int64_t,         \
                             int64_t, double, T *);                            \
  template void layerNormGrad<T>(const T *, const T *, const T *, int64_t,     \
                                 int64_t, double, T *, T *, T *);              \
  template void softmax<T>(const T *, AxisSplit, T *);                         \
  template void softmaxGrad<T>(const T *, const T *, AxisSplit, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
