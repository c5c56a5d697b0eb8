//===- DenseRows.cu - layer norm, softmax and cross entropy ---------------===//
//
// One block per row (or per softmax line); sums in double as the CPU does.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

namespace flexmoe::cuda {

namespace {

unsigned blocksFor(int64_t rows) {
  return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, 65535 * 16));
}

__device__ void rowStats(const float *x, int64_t dim, double epsilon,
                         double &mean, double &rstd) {
  double sum = 0;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
    sum += static_cast<double>(x[c]);
  mean = blockSum(sum) / static_cast<double>(dim);
  double sq = 0;
  for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
    const double d = static_cast<double>(x[c]) - mean;
    sq += d * d;
  }
  rstd = 1.0 / sqrt(blockSum(sq) / static_cast<double>(dim) + epsilon);
}

__global__ void layerNormKernelImpl(const float *x, const float *gamma,
                                    const float *beta, int64_t rows,
                                    int64_t dim, double epsilon, float *y) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * dim;
    float *yr = y + r * dim;
    double mean, rstd;
    rowStats(xr, dim, epsilon, mean, rstd);
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
      yr[c] = static_cast<float>((static_cast<double>(xr[c]) - mean) * rstd) *
                  gamma[c] +
              beta[c];
  }
}

__global__ void layerNormGradRowsKernel(const float *x, const float *gamma,
                                        const float *dy, int64_t rows,
                                        int64_t dim, double epsilon, float *dx,
                                        double *stats) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * dim;
    const float *dyr = dy + r * dim;
    double mean, rstd;
    rowStats(xr, dim, epsilon, mean, rstd);
    if (threadIdx.x == 0) {
      stats[2 * r] = mean;
      stats[2 * r + 1] = rstd;
    }
    double sumG = 0, sumGX = 0;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      const double g = static_cast<double>(dyr[c]) * gamma[c];
      sumG += g;
      sumGX += g * (static_cast<double>(xr[c]) - mean) * rstd;
    }
    const double meanG = blockSum(sumG) / dim;
    const double meanGX = blockSum(sumGX) / dim;
    float *dxr = dx + r * dim;
    if (dx)
      for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
        const double g = static_cast<double>(dyr[c]) * gamma[c];
        const double xhat = (static_cast<double>(xr[c]) - mean) * rstd;
        dxr[c] = static_cast<float>(rstd * (g - meanG - xhat * meanGX));
      }
  }
}

/// One thread per column, rows in order: deterministic.
__global__ void layerNormGradColumnsKernel(const float *x, const float *dy,
                                           const double *stats, int64_t rows,
                                           int64_t dim, float *dgamma,
                                           float *dbeta) {
  FLEXMOE_GRID_STRIDE(c, dim) {
    double sg = 0, sb = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double d = static_cast<double>(dy[r * dim + c]);
      sg += d * (static_cast<double>(x[r * dim + c]) - stats[2 * r]) *
            stats[2 * r + 1];
      sb += d;
    }
    if (dgamma)
      dgamma[c] = static_cast<float>(sg);
    if (dbeta)
      dbeta[c] = static_cast<float>(sb);
  }
}

__global__ void softmaxKernelImpl(const float *x, int64_t outer, int64_t n,
                                  int64_t inner, float *y) {
  for (int64_t line = blockIdx.x; line < outer * inner; line += gridDim.x) {
    const int64_t base = (line / inner) * n * inner + line % inner;
    float maxv = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      maxv = fmaxf(maxv, x[base + i * inner]);
    maxv = blockMax(maxv);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float e = expf(x[base + i * inner] - maxv);
      y[base + i * inner] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / blockSum(sum));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      y[base + i * inner] *= inv;
  }
}

__global__ void softmaxGradKernelImpl(const float *y, const float *dy,
                                      int64_t outer, int64_t n, int64_t inner,
                                      float *dx) {
  for (int64_t line = blockIdx.x; line < outer * inner; line += gridDim.x) {
    const int64_t base = (line / inner) * n * inner + line % inner;
    double dot = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      dot += static_cast<double>(y[base + i * inner]) * dy[base + i * inner];
    dot = blockSum(dot);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const int64_t at = base + i * inner;
      dx[at] = static_cast<float>(y[at] * (dy[at] - dot));
    }
  }
}

__device__ bool countsAsLabel(int32_t label, int64_t vocab,
                              int64_t ignoreIndex) {
  return label != ignoreIndex && label >= 0 && label < vocab;
}

/// Per row: max + log-sum-exp − logit of the label (0 for ignored rows).
__global__ void crossEntropyRowsKernel(const float *logits,
                                       const int32_t *labels, int64_t rows,
                                       int64_t vocab, int64_t ignoreIndex,
                                       double *rowLoss, double *rowLse) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *x = logits + r * vocab;
    float maxf = -INFINITY;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x)
      maxf = fmaxf(maxf, x[c]);
    const double maxv = blockMax(maxf);
    double sum = 0;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x)
      sum += exp(static_cast<double>(x[c]) - maxv);
    const double lse = maxv + log(blockSum(sum));
    if (threadIdx.x == 0) {
      const int32_t label = labels[r];
      rowLoss[r] = countsAsLabel(label, vocab, ignoreIndex)
                       ? lse - static_cast<double>(x[label])
                       : 0.0;
      if (rowLse)
        rowLse[r] = lse;
    }
  }
}

/// One block: the mean over counted rows, and the count.
__global__ void crossEntropyMeanKernel(const double *rowLoss,
                                       const int32_t *labels, int64_t rows,
                                       int64_t vocab, int64_t ignoreIndex,
                                       float *loss, double *count) {
  double total = 0, counted = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    total += rowLoss ? rowLoss[r] : 0.0;
    counted += countsAsLabel(labels[r], vocab, ignoreIndex) ? 1.0 : 0.0;
  }
  total = blockSum(total);
  counted = blockSum(counted);
  if (threadIdx.x == 0) {
    if (loss)
      *loss = counted > 0 ? static_cast<float>(total / counted) : 0.0f;
    if (count)
      *count = counted;
  }
}

__global__ void
crossEntropyGradKernelImpl(const float *logits, const int32_t *labels,
                           int64_t rows, int64_t vocab, int64_t ignoreIndex,
                           const float *dloss, const double *count,
                           const double *rowLse, float *dlogits) {
  const double factor = *count > 0 ? static_cast<double>(*dloss) / *count : 0.0;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float *g = dlogits + r * vocab;
    const int32_t label = labels[r];
    const bool counted = countsAsLabel(label, vocab, ignoreIndex);
    const float *x = logits + r * vocab;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
      float value =
          counted ? static_cast<float>(
                        factor * exp(static_cast<double>(x[c]) - rowLse[r]))
                  : 0.0f;
      if (counted && c == label)
        value -= static_cast<float>(factor);
      g[c] = value;
    }
  }
}

} // namespace

Status layerNormKernel(const float *x, const float *gamma, const float *beta,
                       int64_t rows, int64_t dim, double epsilon, float *y,
                       cudaStream_t stream) {
  if (rows * dim == 0)
    return Status::ok();
  layerNormKernelImpl<<<blocksFor(rows), kThreads, 0, stream>>>(
      x, gamma, beta, rows, dim, epsilon, y);
  return launched("layer_norm kernel");
}

Status layerNormGradKernel(const float *x, const float *gamma, const float *dy,
                           int64_t rows, int64_t dim, double epsilon, float *dx,
                           float *dgamma, float *dbeta,
                           LaunchContext &context) {
  if (dim == 0)
    return Status::ok();
  if (rows == 0) {
    if (Status s = fillKernel(dgamma, dim, 0.0f, context.stream); !s.isOk())
      return s;
    return fillKernel(dbeta, dim, 0.0f, context.stream);
  }
  StatusOr<void *> stats = context.scratch(2 * rows * sizeof(double));
  if (!stats)
    return stats.status();
  layerNormGradRowsKernel<<<blocksFor(rows), kThreads, 0, context.stream>>>(
      x, gamma, dy, rows, dim, epsilon, dx, static_cast<double *>(*stats));
  layerNormGradColumnsKernel<<<gridFor(dim), kThreads, 0, context.stream>>>(
      x, dy, static_cast<double *>(*stats), rows, dim, dgamma, dbeta);
  return launched("layer_norm grad kernel");
}

Status softmaxKernel(const float *x, int64_t outer, int64_t axis, int64_t inner,
                     float *y, cudaStream_t stream) {
  if (outer * axis * inner == 0)
    return Status::ok();
  softmaxKernelImpl<<<blocksFor(outer * inner), kThreads, 0, stream>>>(
      x, outer, axis, inner, y);
  return launched("softmax kernel");
}

Status softmaxGradKernel(const float *y, const float *dy, int64_t outer,
                         int64_t axis, int64_t inner, float *dx,
                         cudaStream_t stream) {
  if (outer * axis * inner == 0)
    return Status::ok();
  softmaxGradKernelImpl<<<blocksFor(outer * inner), kThreads, 0, stream>>>(
      y, dy, outer, axis, inner, dx);
  return launched("softmax grad kernel");
}

Status crossEntropyKernel(const float *logits, const int32_t *labels,
                          int64_t rows, int64_t vocab, int64_t ignoreIndex,
                          float *loss, LaunchContext &context) {
  double *rowLoss = nullptr;
  if (rows > 0 && vocab > 0) {
    StatusOr<void *> scratch = context.scratch(rows * sizeof(double));
    if (!scratch)
      return scratch.status();
    rowLoss = static_cast<double *>(*scratch);
    crossEntropyRowsKernel<<<blocksFor(rows), kThreads, 0, context.stream>>>(
        logits, labels, rows, vocab, ignoreIndex, rowLoss, nullptr);
  }
  crossEntropyMeanKernel<<<1, kThreads, 0, context.stream>>>(
      rowLoss, labels, rows, vocab, ignoreIndex, loss, nullptr);
  return launched("cross_entropy kernel");
}

Status crossEntropyGradKernel(const float *logits, const int32_t *labels,
                              int64_t rows, int64_t vocab, int64_t ignoreIndex,
                              const float *dloss, float *dlogits,
                              LaunchContext &context) {
  if (rows * vocab == 0)
    return Status::ok();
  StatusOr<void *> scratch = context.scratch((2 * rows + 1) * sizeof(double));
  if (!scratch)
    return scratch.status();
  double *rowLoss = static_cast<double *>(*scratch);
  double *rowLse = rowLoss + rows;
  double *count = rowLse + rows;
  crossEntropyRowsKernel<<<blocksFor(rows), kThreads, 0, context.stream>>>(
      logits, labels, rows, vocab, ignoreIndex, rowLoss, rowLse);
  crossEntropyMeanKernel<<<1, kThreads, 0, context.stream>>>(
      nullptr, labels, rows, vocab, ignoreIndex, nullptr, count);
  crossEntropyGradKernelImpl<<<blocksFor(rows), kThreads, 0, context.stream>>>(
      logits, labels, rows, vocab, ignoreIndex, dloss, count, rowLse, dlogits);
  return launched("cross_entropy grad kernel");
}

} // namespace flexmoe::cuda
