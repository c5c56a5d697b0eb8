//===- DenseKernels.h - CPU kernels of the nn dialect's ops -----*- C++ -*-===//
//
// Forward and backward CPU kernels for the dense (`nn`) ops of docs/IR.md.
// One function per op (the executor maps an instruction onto one call):
//
//  - buffers are contiguous, row-major, caller-allocated; T is float
//    (training) or double (gradient checks); ids and labels are int32_t;
//  - sizes are int64_t; a shape is a std::span<const int64_t> of dimensions;
//  - ops whose inputs can be invalid at run time (ids, labels, axes, rates)
//    return a Status; they write nothing when they fail;
//  - results are bitwise identical whatever the OpenMP thread count: every
//    parallel loop owns disjoint outputs and reductions run in a fixed order.
//
// Outputs must not alias inputs unless a function says so.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSEKERNELS_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSEKERNELS_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace flexmoe::cpu {

using Shape = std::span<const int64_t>;

/// Product of the dimensions (1 for a scalar).
int64_t numElements(Shape shape);

//===----------------------------------------------------------------------===//
// Shapes: axes, broadcasting
//===----------------------------------------------------------------------===//

/// A tensor viewed as [outer, axisSize, inner] around one axis.
struct AxisSplit {
  int64_t outer = 1, axisSize = 1, inner = 1;
};

/// Splits `shape` around `axis` (negative counts from the end); an error
/// names the axis and the rank when it is out of range.
StatusOr<AxisSplit> splitAtAxis(Shape shape, int64_t axis);

/// The numpy broadcast of two shapes, or an error naming both shapes.
StatusOr<std::vector<int64_t>> broadcastShapes(Shape lhs, Shape rhs);

//===----------------------------------------------------------------------===//
// nn.embedding, nn.embedding_grad
//===----------------------------------------------------------------------===//

/// out[i, :] = table[ids[i], :] for i < numIds; table is [vocab, dim].
/// An id outside [0, vocab) is an error naming it and its position.
template <typename T>
Status embedding(const int32_t *ids, int64_t numIds, const T *table,
                 int64_t vocab, int64_t dim, T *out);

/// dtable = Σ_i onehot(ids[i]) ⊗ dy[i, :]; dtable [vocab, dim] is
/// overwritten (rows no id names are zero). Ids are checked as above.
template <typename T>
Status embeddingGrad(const int32_t *ids, int64_t numIds, const T *dy,
                     int64_t vocab, int64_t dim, T *dtable);

//===----------------------------------------------------------------------===//
// nn.linear, nn.linear_grad, nn.matmul
//===----------------------------------------------------------------------===//

/// y[M,N] = x[M,K] · w[K,N] (+ bias[N] when bias is non-null); M is the
/// product of x's leading dimensions.
template <typename T>
void linear(const T *x, const T *w, const T *bias, int64_t m, int64_t k,
            int64_t n, T *y);

/// dx[M,K] = dy · wᵀ and dw[K,N] = xᵀ · dy (either output may be null).
/// The bias gradient is reduceSum of dy over its leading dimensions.
template <typename T>
void linearGrad(const T *x, const T *w, const T *dy, int64_t m, int64_t k,
                int64_t n, T *dx, T *dw);

/// out[b] = op(lhs[b]) · op(rhs[b or 0]) for b < batch, where op transposes
/// the last two dims when its flag is set. lhs[b] is [M,K] ([K,M] when
/// transposed), rhs [K,N] ([N,K] when transposed), out [M,N]. With
/// rhsBatched false one 2-D rhs is broadcast over the batch.
/// Gradients are matmuls again: dlhs = dy · rhsᵀ, drhs = lhsᵀ · dy (summed
/// over the batch, via reduceSum, when rhs was broadcast).
template <typename T>
void matmul(const T *lhs, const T *rhs, int64_t batch, int64_t m, int64_t k,
            int64_t n, bool transposeLhs, bool transposeRhs, bool rhsBatched,
            T *out);

//===----------------------------------------------------------------------===//
// nn.layer_norm, nn.layer_norm_grad
//===----------------------------------------------------------------------===//

/// y = (x − mean) · rstd · gamma + beta per row of `dim` elements, with
/// rstd = 1/sqrt(var + epsilon) and the biased variance. Nothing is saved:
/// layerNormGrad recomputes mean and rstd.
template <typename T>
void layerNorm(const T *x, const T *gamma, const T *beta, int64_t rows,
               int64_t dim, double epsilon, T *y);

/// dx, dgamma [dim], dbeta [dim] (dgamma and dbeta overwritten). Allocates
/// one std::vector of 2·rows doubles for the row statistics.
template <typename T>
void layerNormGrad(const T *x, const T *gamma, const T *dy, int64_t rows,
                   int64_t dim, double epsilon, T *dx, T *dgamma, T *dbeta);

//===----------------------------------------------------------------------===//
// nn.gelu, nn.gelu_grad, nn.softmax, nn.softmax_grad
//===----------------------------------------------------------------------===//

enum class GeluApproximation { Tanh, None };

/// "tanh" → Tanh, "none" → None, otherwise an error.
StatusOr<GeluApproximation> parseGeluApproximation(std::string_view name);

/// Tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))); None: x·Φ(x) (erf).
template <typename T>
void gelu(const T *x, int64_t n, GeluApproximation approximate, T *y);

template <typename T>
void geluGrad(const T *x, const T *dy, int64_t n, GeluApproximation approximate,
              T *dx);

/// Numerically stable softmax along the middle axis of [outer, axis, inner]
/// (see splitAtAxis). A line whose inputs are all −∞ gives NaN, as in torch.
template <typename T> void softmax(const T *x, AxisSplit split, T *y);

/// dx = y ⊙ (dy − Σ_axis y ⊙ dy), from the forward's output y.
template <typename T>
void softmaxGrad(const T *y, const T *dy, AxisSplit split, T *dx);

//===----------------------------------------------------------------------===//
// nn.attention, nn.attention_grad
//===----------------------------------------------------------------------===//

/// Multi-head attention attributes; `window` as in docs/IR.md: with w > 0
/// query i sees key j iff 0 ≤ i−j < w (causal) or |i−j| < w.
struct AttentionConfig {
  int64_t batch = 1, seq = 1, dim = 1;
  int64_t numHeads = 1;
  bool causal = false;
  int64_t window = 0;
};

/// Checks numHeads divides dim, window ≥ 0 and sizes ≥ 0 (empty is a no-op).
Status verifyAttentionConfig(const AttentionConfig &config);

/// q, k, v, out: [B,S,D]; head h uses columns [h·d, (h+1)·d), d = D/heads.
/// out_i = Σ_j softmax_j(q_i·k_j / √d over the visible j) · v_j.
template <typename T>
Status attention(const T *q, const T *k, const T *v,
                 const AttentionConfig &config, T *out);

/// dq, dk, dv [B,S,D] (overwritten); recomputes the probabilities.
template <typename T>
Status attentionGrad(const T *q, const T *k, const T *v, const T *dy,
                     const AttentionConfig &config, T *dq, T *dk, T *dv);

//===----------------------------------------------------------------------===//
// nn.add, nn.mul, nn.scale, nn.fill, nn.reduce_sum
//===----------------------------------------------------------------------===//

/// out = lhs + rhs with numpy broadcasting; out has broadcastShapes' shape.
template <typename T>
Status add(const T *lhs, Shape lhsShape, const T *rhs, Shape rhsShape, T *out);

/// out = lhs ⊙ rhs with numpy broadcasting.
template <typename T>
Status mul(const T *lhs, Shape lhsShape, const T *rhs, Shape rhsShape, T *out);

/// Sums `grad` (of the broadcast shape `gradShape`) down to `targetShape`,
/// the shape of one broadcast operand: the backward of add (and of mul after
/// multiplying by the other operand, see mul's tests).
template <typename T>
Status reduceToShape(const T *grad, Shape gradShape, Shape targetShape, T *out);

/// y = factor · x; y may alias x.
template <typename T> void scale(const T *x, int64_t n, double factor, T *y);

template <typename T> void fill(T *out, int64_t n, double value);

/// Sums x over `dims` (negative counts from the end; duplicates are an
/// error). keep_dims changes only the result's shape, not its layout.
template <typename T>
Status reduceSum(const T *x, Shape shape, std::span<const int64_t> dims,
                 T *out);

//===----------------------------------------------------------------------===//
// nn.transpose, nn.roll (also for int32_t), nn.dropout
//===----------------------------------------------------------------------===//

/// out = x permuted: out.shape[i] = shape[permutation[i]]. The gradient is
/// the transpose by inversePermutation.
template <typename T>
Status transpose(const T *x, Shape shape, std::span<const int64_t> permutation,
                 T *out);

std::vector<int64_t> inversePermutation(std::span<const int64_t> permutation);

/// torch.roll: out[(i + shift) mod n] = x[i] along each dim of `dims`
/// (shifts may be negative or exceed n). The gradient rolls by −shifts.
template <typename T>
Status roll(const T *x, Shape shape, std::span<const int64_t> shifts,
            std::span<const int64_t> dims, T *out);

/// y = x · keep / (1 − rate) with keep = (u ≥ rate), u uniform in [0, 1)
/// from (seed, step, element index) alone (DenseRandom.h): the same call on
/// dy is the gradient. rate = 0 copies; rate outside [0, 1) is an error.
/// y may alias x.
template <typename T>
Status dropout(const T *x, int64_t n, double rate, int64_t seed, int64_t step,
               T *y);

//===----------------------------------------------------------------------===//
// nn.cross_entropy, nn.cross_entropy_grad
//===----------------------------------------------------------------------===//

/// loss = mean over rows with labels[r] ≠ ignoreIndex of
/// logsumexp(logits[r]) − logits[r, labels[r]]; logits [rows, vocab].
/// 0 when every label is ignored. A label outside [0, vocab) other than
/// ignoreIndex is an error naming it and its row.
template <typename T>
Status crossEntropy(const T *logits, const int32_t *labels, int64_t rows,
                    int64_t vocab, int64_t ignoreIndex, T *loss);

/// dlogits[r] = dloss / count · (softmax(logits[r]) − onehot(labels[r])),
/// zero for ignored rows.
template <typename T>
Status crossEntropyGrad(const T *logits, const int32_t *labels, int64_t rows,
                        int64_t vocab, int64_t ignoreIndex, T dloss,
                        T *dlogits);

//===----------------------------------------------------------------------===//
// nn.adamw and gradient clipping
//===----------------------------------------------------------------------===//

struct AdamWConfig {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8,
         weightDecay = 1e-2;
  /// The gradient is g·gradScale (clipping and loss-scale removal folded
  /// into the update instead of a pass over the gradients).
  double gradScale = 1.0;
};

/// One torch.optim.AdamW step (step ≥ 1 counts steps, this one included):
///   param ← param − lr·weight_decay·param
///   m ← β1·m + (1−β1)·g;     v ← β2·v + (1−β2)·g²
///   param ← param − (lr / (1−β1^step)) · m / (√v / √(1−β2^step) + ε)
/// Works in place (newParam/newM/newV may alias param/m/v). The state has
/// the parameters' type: fp32 in training.
template <typename T>
Status adamw(const T *param, const T *grad, const T *m, const T *v, int64_t n,
             const AdamWConfig &config, int64_t step, T *newParam, T *newM,
             T *newV);

/// One gradient buffer of a global-norm clip.
template <typename T> struct GradBuffer {
  T *data;
  int64_t size;
};

/// √(Σ over buffers of Σ g²), accumulated in double in a fixed order.
template <typename T> double globalNorm(std::span<const GradBuffer<T>> buffers);

/// torch.nn.utils.clip_grad_norm_: with total = globalNorm, scales every
/// buffer by maxNorm / (total + 1e-6) when that is below 1. Returns total.
template <typename T>
double clipByGlobalNorm(std::span<const GradBuffer<T>> buffers, double maxNorm);

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_DENSEKERNELS_H
