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

// Attention (DenseAttention.cu): q, k, v, out of [batch, seq, dim], heads
// split along dim; scale 1/sqrt(dim / numHeads); the CPU's causal and window
// visibility. Sequences are limited by the kernels' shared memory.
struct AttentionConfig {
  int64_t batch = 1, seq = 1, dim = 1;
  int64_t numHeads = 1;
  bool causal = false;
  int64_t window = 0;
};
Status attentionKernel(const float *q, const float *k, const float *v,
                       const AttentionConfig &config, float *out,
                       cudaStream_t stream);
/// Deterministic: every row of dq, dk and dv is summed by one block.
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
