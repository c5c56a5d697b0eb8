//===- DenseAttention.cu - multi-head attention, forward and backward -----===//
//
// A first, simple version (not flash-style): one block per (batch, head,
// query row) holds that row's scores in shared memory; the backward pass
// writes dq from the query rows and dk, dv from the key rows, each output
// row summed by one block in a fixed order (deterministic, no atomics).
// Visibility (causal, window) is the CPU's visibleKeys (DenseAttention.cpp).
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cuda/kernels/DenseCommon.cuh"

#include <cmath>

namespace flexmoe::cuda {

namespace {

struct AttentionShape {
  int64_t batch, seq, dim, heads, headDim;
  bool causal;
  int64_t window;
  double scale;
};

__device__ inline bool visible(int64_t i, int64_t j, const AttentionShape &a) {
  int64_t lo = 0, hi = a.seq - 1;
  if (a.causal)
    hi = i;
  if (a.window > 0) {
    lo = max(int64_t{0}, i - a.window + 1);
    if (!a.causal)
      hi = min(a.seq - 1, i + a.window - 1);
  }
  return j >= lo && j <= hi;
}

/// Offset of row `row` of head (b, h) in a [B, S, D] tensor.
__device__ inline int64_t rowOffset(int64_t task, int64_t row,
                                    const AttentionShape &a) {
  const int64_t b = task / a.heads, h = task % a.heads;
  return b * a.seq * a.dim + row * a.dim + h * a.headDim;
}

__device__ inline float dot(const float *x, const float *y, int64_t n) {
  float sum = 0;
  for (int64_t d = 0; d < n; ++d)
    sum += x[d] * y[d];
  return sum;
}

/// p[j] = softmax_j(scale · q_i·k_j) over the visible keys (0 elsewhere);
/// returns the row's log-sum-exp of the scaled scores.
__device__ float rowProbabilities(const float *q, const float *k, int64_t task,
                                  int64_t i, const AttentionShape &a,
                                  float *p) {
  const float *qi = q + rowOffset(task, i, a);
  float maxv = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.seq; j += blockDim.x) {
    const float s = visible(i, j, a)
                        ? static_cast<float>(a.scale) *
                              dot(qi, k + rowOffset(task, j, a), a.headDim)
                        : -INFINITY;
    p[j] = s;
    maxv = fmaxf(maxv, s);
  }
  maxv = blockMax(maxv);
  double sum = 0;
  for (int64_t j = threadIdx.x; j < a.seq; j += blockDim.x) {
    const float e = visible(i, j, a) ? expf(p[j] - maxv) : 0.0f;
    p[j] = e;
    sum += e;
  }
  sum = blockSum(sum);
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t j = threadIdx.x; j < a.seq; j += blockDim.x)
    p[j] *= inv;
  __syncthreads();
  return maxv + static_cast<float>(log(sum));
}

__global__ void attentionForwardKernel(const float *q, const float *k,
                                       const float *v, AttentionShape a,
                                       float *out) {
  extern __shared__ float p[];
  const int64_t rows = a.batch * a.heads * a.seq;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t task = r / a.seq, i = r % a.seq;
    rowProbabilities(q, k, task, i, a, p);
    float *oi = out + rowOffset(task, i, a);
    for (int64_t d = threadIdx.x; d < a.headDim; d += blockDim.x) {
      float acc = 0;
      for (int64_t j = 0; j < a.seq; ++j)
        if (p[j] != 0.0f)
          acc += p[j] * v[rowOffset(task, j, a) + d];
      oi[d] = acc;
    }
    __syncthreads();
  }
}

/// Query rows: dq_i = Σ_j ds_ij k_j with ds_ij = p_ij (dp_ij − Σ p·dp) ·
/// scale; keeps each row's log-sum-exp and Σ p·dp for the key pass.
__global__ void attentionGradQueryKernel(const float *q, const float *k,
                                         const float *v, const float *dy,
                                         AttentionShape a, float *dq,
                                         float *lse, float *rowDot) {
  extern __shared__ float shared[];
  float *p = shared, *ds = shared + a.seq;
  const int64_t rows = a.batch * a.heads * a.seq;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t task = r / a.seq, i = r % a.seq;
    const float rowLse = rowProbabilities(q, k, task, i, a, p);
    const float *dyi = dy + rowOffset(task, i, a);
    double partial = 0;
    for (int64_t j = threadIdx.x; j < a.seq; j += blockDim.x) {
      const float dp =
          p[j] != 0.0f ? dot(dyi, v + rowOffset(task, j, a), a.headDim) : 0.0f;
      ds[j] = dp;
      partial += static_cast<double>(p[j]) * dp;
    }
    const double total = blockSum(partial);
    for (int64_t j = threadIdx.x; j < a.seq; j += blockDim.x)
      ds[j] = static_cast<float>(p[j] * (ds[j] - total) * a.scale);
    __syncthreads();
    float *dqi = dq + rowOffset(task, i, a);
    for (int64_t d = threadIdx.x; d < a.headDim; d += blockDim.x) {
      float acc = 0;
      for (int64_t j = 0; j < a.seq; ++j)
        if (ds[j] != 0.0f)
          acc += ds[j] * k[rowOffset(task, j, a) + d];
      dqi[d] = acc;
    }
    if (threadIdx.x == 0) {
      lse[r] = rowLse;
      rowDot[r] = static_cast<float>(total);
    }
    __syncthreads();
  }
}

/// Key rows: dv_j = Σ_i p_ij dy_i and dk_j = Σ_i ds_ij q_i, from the query
/// pass's statistics.
__global__ void attentionGradKeyKernel(const float *q, const float *k,
                                       const float *v, const float *dy,
                                       AttentionShape a, const float *lse,
                                       const float *rowDot, float *dk,
                                       float *dv) {
  extern __shared__ float shared[];
  float *p = shared, *ds = shared + a.seq;
  const int64_t rows = a.batch * a.heads * a.seq;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t task = r / a.seq, j = r % a.seq;
    const float *kj = k + rowOffset(task, j, a);
    const float *vj = v + rowOffset(task, j, a);
    for (int64_t i = threadIdx.x; i < a.seq; i += blockDim.x) {
      if (!visible(i, j, a)) {
        p[i] = ds[i] = 0.0f;
        continue;
      }
      const int64_t row = task * a.seq + i;
      const float s = static_cast<float>(a.scale) *
                      dot(q + rowOffset(task, i, a), kj, a.headDim);
      const float pij = expf(s - lse[row]);
      const float dp = dot(dy + rowOffset(task, i, a), vj, a.headDim);
      p[i] = pij;
      ds[i] = static_cast<float>(pij * (dp - rowDot[row]) * a.scale);
    }
    __syncthreads();
    float *dkj = dk + rowOffset(task, j, a);
    float *dvj = dv + rowOffset(task, j, a);
    for (int64_t d = threadIdx.x; d < a.headDim; d += blockDim.x) {
      float accK = 0, accV = 0;
      for (int64_t i = 0; i < a.seq; ++i) {
        if (p[i] == 0.0f && ds[i] == 0.0f)
          continue;
        const int64_t at = rowOffset(task, i, a) + d;
        accV += p[i] * dy[at];
        accK += ds[i] * q[at];
      }
      dkj[d] = accK;
      dvj[d] = accV;
    }
    __syncthreads();
  }
}

Status checkConfig(const AttentionConfig &config, int64_t sharedRows,
                   AttentionShape &shape, size_t &sharedBytes) {
  if (config.batch < 0 || config.seq < 0 || config.dim < 0)
    return errorf("attention sizes [", config.batch, ",", config.seq, ",",
                  config.dim, "] must not be negative");
  if (config.numHeads <= 0 || config.dim % config.numHeads != 0)
    return errorf("attention num_heads ", config.numHeads,
                  " does not divide the model dimension ", config.dim);
  if (config.window < 0)
    return errorf("attention window ", config.window, " is negative");
  sharedBytes = static_cast<size_t>(sharedRows * config.seq) * sizeof(float);
  // The default 48 KiB of a block, less room for the reductions' own.
  constexpr size_t kSharedLimit = 47 * 1024;
  if (sharedBytes > kSharedLimit)
    return errorf("attention over ", config.seq,
                  " positions exceeds the CUDA kernel's shared memory (at "
                  "most ",
                  kSharedLimit / (sizeof(float) * sharedRows), ")");
  shape = {config.batch,
           config.seq,
           config.dim,
           config.numHeads,
           config.dim / config.numHeads,
           config.causal,
           config.window,
           config.dim == 0 ? 1.0
                           : 1.0 / std::sqrt(static_cast<double>(
                                       config.dim / config.numHeads))};
  return Status::ok();
}

unsigned rowBlocks(const AttentionShape &a) {
  return static_cast<unsigned>(
      std::clamp<int64_t>(a.batch * a.heads * a.seq, 1, 65535 * 16));
}

} // namespace

Status attentionKernel(const float *q, const float *k, const float *v,
                       const AttentionConfig &config, float *out,
                       cudaStream_t stream) {
  AttentionShape shape;
  size_t sharedBytes = 0;
  if (Status s = checkConfig(config, 1, shape, sharedBytes); !s.isOk())
    return s;
  if (shape.seq == 0 || shape.headDim == 0 || shape.batch == 0)
    return Status::ok();
  attentionForwardKernel<<<rowBlocks(shape), kThreads, sharedBytes, stream>>>(
      q, k, v, shape, out);
  return launched("attention kernel");
}

Status attentionGradKernel(const float *q, const float *k, const float *v,
                           const float *dy, const AttentionConfig &config,
                           float *dq, float *dk, float *dv,
                           LaunchContext &context) {
  AttentionShape shape;
  size_t sharedBytes = 0;
  if (Status s = checkConfig(config, 2, shape, sharedBytes); !s.isOk())
    return s;
  if (shape.seq == 0 || shape.headDim == 0 || shape.batch == 0)
    return Status::ok();
  const int64_t rows = shape.batch * shape.heads * shape.seq;
  StatusOr<void *> stats = context.scratch(2 * rows * sizeof(float));
  if (!stats)
    return stats.status();
  float *lse = static_cast<float *>(*stats), *rowDot = lse + rows;
  attentionGradQueryKernel<<<rowBlocks(shape), kThreads, sharedBytes,
                             context.stream>>>(q, k, v, dy, shape, dq, lse,
                                               rowDot);
  attentionGradKeyKernel<<<rowBlocks(shape), kThreads, sharedBytes,
                           context.stream>>>(q, k, v, dy, shape, lse, rowDot,
                                             dk, dv);
  return launched("attention grad kernel");
}

} // namespace flexmoe::cuda
