//===- DenseKernels.h - CUDA kernels of the dense ops -----------*- C++ -*-===//
//
// Host-side entry points that enqueue the dense kernels on a stream. Shapes
// and attributes are validated by DenseLaunch.cpp before these run; every
// function only enqueues work (no host synchronisation) and returns the
// launch error, if any. Semantics are the CPU kernels' (docs/IR.md).
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSEKERNELS_H
#define FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSEKERNELS_H

#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/support/HostDevice.h"

#include <cstdint>

namespace flexmoe::cuda {

/// A strided view of up to kMaxRank dimensions, passed to kernels by value.
constexpr int kMaxRank = 8;
struct Dims {
  int rank = 0;
  int64_t size[kMaxRank] = {};
  int64_t stride[kMaxRank] = {};
};

// Element-wise (DenseElementwise.cu).
Status fillKernel(float *out, int64_t n, float value, cudaStream_t stream);
Status scaleKernel(const float *x, int64_t n, float factor, float *y,
                   cudaStream_t stream);
/// out[i] = lhs[i · lhsStrides] op rhs[i · rhsStrides] over `outDims`
/// (sizes only; strides 0 where an operand broadcasts).
Status binaryKernel(bool multiply, const float *lhs, Dims lhsDims,
                    const float *rhs, Dims rhsDims, Dims outDims, float *out,
                    cudaStream_t stream);
Status geluKernel(const float *x, int64_t n, bool tanhApproximation, float *y,
                  cudaStream_t stream);
Status geluGradKernel(const float *x, const float *dy, int64_t n,
                      bool tanhApproximation, float *dx, cudaStream_t stream);
Status dropoutKernel(const float *x, int64_t n, double rate, uint64_t seed,
                     uint64_t step, float *y, cudaStream_t stream);
Status adamwKernel(const float *param, const float *grad, const float *m,
                   const float *v, int64_t n, double stepSize, double decay,
                   double beta1, double beta2, double epsilon, double bc2Sqrt,
                   double gradScale, float *newParam, float *newM, float *newV,
                   cudaStream_t stream);

// Layout (DenseLayout.cu). `gather` gives, for each output dimension, its
// size and the stride of the input element it reads.
template <typename T>
Status gatherKernel(const T *x, Dims gather, T *out, cudaStream_t stream);
/// out[o] over the kept dims of `kept` (their input strides), summing over
/// `reduced` (sizes and input strides), in double.
Status reduceSumKernel(const float *x, Dims kept, Dims reduced, float *out,
                       cudaStream_t stream);
/// shift[d] already normalised into [0, size[d]).
template <typename T>
Status rollKernel(const T *x, Dims shape, Dims shift, T *out,
                  cudaStream_t stream);
/// Ids outside [0, vocab) read zeros (the CPU kernel rejects them; a device
/// kernel cannot report without a host round trip).
Status embeddingKernel(const int32_t *ids, int64_t numIds, const float *table,
                       int64_t vocab, int64_t dim, float *out,
                       cudaStream_t stream);
/// Deterministic: each table row is summed by one owner in id order (the
/// CPU kernel's order, bit for bit); otherwise float atomics.
Status embeddingGradKernel(const int32_t *ids, int64_t numIds, const float *dy,
                           int64_t vocab, int64_t dim, float *dtable,
                           LaunchContext &context);

// Rows (DenseRows.cu): layer norm, softmax, cross entropy.
Status layerNormKernel(const float *x, const float *gamma, const float *beta,
                       int64_t rows, int64_t dim, double epsilon, float *y,
                       cudaStream_t stream);
Status layerNormGradKernel(const float *x, const float *gamma, const float *dy,
                           int64_t rows, int64_t dim, double epsilon, float *dx,
                           float *dgamma, float *dbeta, LaunchContext &context);
Status softmaxKernel(const float *x, int64_t outer, int64_t axis, int64_t inner,
                     float *y, cudaStream_t stream);
Status softmaxGradKernel(const float *y, const float *dy, int64_t outer,
                         int64_t axis, int64_t inner, float *dx,
                         cudaStream_t stream);
/// Labels outside [0, vocab) other than ignoreIndex count as ignored.
Status crossEntropyKernel(const float *logits, const int32_t *labels,
                          int64_t rows, int64_t vocab, int64_t ignoreIndex,
                          float *loss, LaunchContext &context);
/// dloss is a device scalar.
Status crossEntropyGradKernel(const float *logits, const int32_t *labels,
                              int64_t rows, int64_t vocab, int64_t ignoreIndex,
                              const float *dloss, float *dlogits,
                              LaunchContext &context);

// Attention (DenseAttention.cu, docs/cuda-attention.md): q, k, v, out of
// [batch, seq, dim], heads split along dim; scale 1/sqrt(dim / numHeads);
// the CPU's causal and window visibility. Flash-style: query and key tiles
// through shared memory with an online softmax, no [S, S] matrix anywhere
// and no limit on the sequence length; fp32 SIMT math at either precision.
struct AttentionConfig {
  int64_t batch = 1, seq = 1, dim = 1;
  int64_t numHeads = 1;
  bool causal = false;
  int64_t window = 0;
};

/// An inclusive range of positions.
struct AttentionRange {
  int64_t lo, hi;
};

/// The keys query i (< seq) sees, as the CPU's visibleKeys: with window
/// w > 0, 0 <= i-j < w (causal) or |i-j| < w. lo and hi never decrease
/// with i, and the range always holds i.
FLEXMOE_HOST_DEVICE inline AttentionRange
attentionKeysSeenBy(int64_t query, const AttentionConfig &c) {
  int64_t lo = 0, hi = c.seq - 1;
  if (c.causal)
    hi = query;
  if (c.window > 0) {
    lo = query - c.window + 1 > 0 ? query - c.window + 1 : 0;
    if (!c.causal)
      hi = c.window - 1 < c.seq - 1 - query ? query + c.window - 1 : c.seq - 1;
  }
  return {lo, hi};
}

/// The queries that see key j (< seq): the inverse of attentionKeysSeenBy,
/// what the dk/dv kernel walks. Also never decreasing, also holds j.
FLEXMOE_HOST_DEVICE inline AttentionRange
attentionQueriesSeeing(int64_t key, const AttentionConfig &c) {
  int64_t lo = c.causal ? key : 0, hi = c.seq - 1;
  if (c.window > 0) {
    if (!c.causal)
      lo = key - c.window + 1 > 0 ? key - c.window + 1 : 0;
    // Written so that a huge window cannot overflow.
    hi = c.window - 1 < c.seq - 1 - key ? key + c.window - 1 : c.seq - 1;
  }
  return {lo, hi};
}

/// A block owns kAttentionOwnRows rows (queries in the forward and dq
/// kernels, keys in the dk/dv kernel) and streams the other side through
/// shared memory kAttentionStreamRows rows at a time; the kernels' thread
/// layouts assume exactly these values and kAttentionThreads threads.
constexpr int kAttentionOwnRows = 64, kAttentionStreamRows = 32;
constexpr int kAttentionThreads = 256;

/// Floats of shared memory per block for a head tile of `t` columns (rows
/// padded to t + 1 floats against bank conflicts); the kernels carve their
/// buffers in this order.
constexpr int64_t attentionForwardSharedFloats(int64_t t) {
  // q [own], k, v [stream], probabilities [own][stream], row rescale
  return (kAttentionOwnRows + 2 * kAttentionStreamRows) * (t + 1) +
         kAttentionOwnRows * (kAttentionStreamRows + 1) + kAttentionOwnRows;
}
constexpr int64_t attentionGradQuerySharedFloats(int64_t t) {
  // q, dy [own], k, v [stream], ds [own][stream], lse and row dot [own]
  return (2 * kAttentionOwnRows + 2 * kAttentionStreamRows) * (t + 1) +
         kAttentionOwnRows * (kAttentionStreamRows + 1) + 2 * kAttentionOwnRows;
}
constexpr int64_t attentionGradKeySharedFloats(int64_t t) {
  // k, v [own], q, dy [stream], p and ds [own][stream], lse and row dot
  // [stream]
  return (2 * kAttentionOwnRows + 2 * kAttentionStreamRows) * (t + 1) +
         2 * kAttentionOwnRows * (kAttentionStreamRows + 1) +
         2 * kAttentionStreamRows;
}

/// How the kernels cut one call (host-side, no CUDA calls; tested on the
/// CPU). Head dims up to 32 and 64 get their own head tile; larger ones use
/// 128-column tiles, and past 128 the output columns are split into
/// `columnChunks` blocks along grid y (each recomputes the scores over the
/// whole head dim; the row statistics come from the chunks in a fixed
/// order).
struct AttentionPlan {
  int64_t headDim = 0;
  int headTile = 0;
  int64_t columnChunks = 0;
  int64_t tasks = 0;    // batch x heads
  int64_t ownTiles = 0; // ceil(seq / kAttentionOwnRows)
  float scale = 1;
  size_t forwardSharedBytes = 0, gradQuerySharedBytes = 0,
         gradKeySharedBytes = 0;
  /// The backward's scratch: the log-sum-exp of every (task, query) row,
  /// then columnChunks partial sums of dy . out per row.
  size_t gradScratchBytes = 0;
  /// Nothing to compute (a size is zero).
  bool empty() const { return tasks == 0 || ownTiles == 0 || headDim == 0; }
};
/// Checks the sizes (as the CPU's verifyAttentionConfig) and the grid
/// limits, and cuts the call.
StatusOr<AttentionPlan> planAttention(const AttentionConfig &config);

Status attentionKernel(const float *q, const float *k, const float *v,
                       const AttentionConfig &config, float *out,
                       cudaStream_t stream);
/// Deterministic (no atomics): a statistics pass writes each row's
/// log-sum-exp and dy . out to scratch, then dq is summed by query tiles and
/// dk, dv by key tiles, each recomputing the probabilities.
Status attentionGradKernel(const float *q, const float *k, const float *v,
                           const float *dy, const AttentionConfig &config,
                           float *dq, float *dk, float *dv,
                           LaunchContext &context);

// GEMMs through cuBLASLt (runtime/backends/cuda/DenseGemm.cpp), row-major like
// the CPU's gemm: out[b] = op(a[b]) · op(b[b]) (+ bias per column), fp32
// throughout.
struct GemmShape {
  bool transA = false, transB = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t strideA = 0, strideB = 0, strideC = 0;
};
Status gemm(const GemmShape &shape, const float *a, const float *b,
            const float *bias, float *c, LaunchContext &context);

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_KERNELS_DENSEKERNELS_H
