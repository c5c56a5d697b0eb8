//===- MoeKernels.h - CPU kernels of the moe ops -----------------*- C++
//-*-===//
//
// Forward and backward of moe.gate, moe.aux_loss, moe.dispatch, moe.experts
// and moe.combine on the CPU, with exactly the semantics of docs/IR.md ("The
// moe dialect"). Every kernel is a template instantiated for float (training)
// and double (gradient checks) over contiguous row-major buffers that the
// caller allocates with the sizes given in each comment; ids, positions and
// counts are int32_t, sizes int64_t.
//
// Every kernel validates its shape arguments and every index it reads from
// its inputs (expert ids, positions, counts) before touching memory, and
// reports a violation as a Status naming the op, the token/choice/group and
// the bound ("moe.combine: position 40 of token 3, choice 1 is outside
// [-1, 32)"). The executor adds the layer name with Status::withContext. All
// checks run before the first write: on error, no output has been touched.
//
// Results are bit-identical for any OpenMP thread count: threads only split
// independent rows, and every reduction runs in a fixed order.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOEKERNELS_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOEKERNELS_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <span>
#include <string_view>

namespace flexmoe::cpu {

/// The `activation` attribute of moe.experts / moe.experts_grad.
enum class MoeActivation {
  Gelu, ///< tanh approximation, as nn.gelu's default
  Relu,
};

/// Parses "gelu" or "relu".
StatusOr<MoeActivation> parseMoeActivation(std::string_view name);

//===----------------------------------------------------------------------===//
// moe.gate / moe.gate_grad
//===----------------------------------------------------------------------===//

/// moe.gate: probs = softmax(x·gateWeight) per token; expertIds[t] are the
/// topK experts of token t by descending probability (ties to the lower id),
/// combineWeights[t] their probabilities, renormalised to sum to one when
/// topK > 1.
///   x: [T,D], gateWeight: [D,E] → probs: [T,E], expertIds: [T,topK],
///   combineWeights: [T,topK], counts: [E] or null (copies per expert, the
///   dropless moe.dispatch counts, as a by-product).
/// logitBias (E values, finite, or empty) is added to the logits before the
/// softmax: probs are then the biased model's, which moe.gate_grad needs.
/// Requires 1 ≤ topK ≤ E.
template <typename T>
Status moeGate(const T *x, const T *gateWeight, int64_t numTokens,
               int64_t modelDim, int64_t numExperts, int64_t topK, T *probs,
               int32_t *expertIds, T *combineWeights, int32_t *counts,
               std::span<const float> logitBias = {});

/// moe.gate_grad: back-propagates dCombineWeights (through the
/// renormalisation onto the selected probabilities; the selection itself is
/// piecewise constant) and dProbs, then the softmax and the GEMM.
///   x: [T,D], gateWeight: [D,E], probs: [T,E] (moe.gate's),
///   expertIds: [T,topK], dCombineWeights: [T,topK], dProbs: [T,E]
///   → dx: [T,D], dGateWeight: [D,E].
/// Allocates a [T,E] scratch buffer for the logits' gradient.
template <typename T>
Status moeGateGrad(const T *x, const T *gateWeight, const T *probs,
                   const int32_t *expertIds, const T *dCombineWeights,
                   const T *dProbs, int64_t numTokens, int64_t modelDim,
                   int64_t numExperts, int64_t topK, T *dx, T *dGateWeight);

//===----------------------------------------------------------------------===//
// moe.aux_loss / moe.aux_loss_grad
//===----------------------------------------------------------------------===//

/// moe.aux_loss = coef · E · Σ_e f_e · P_e, f_e = (number of (t, j) with
/// expertIds[t][j] = e) / (T·topK), P_e = mean over t of probs[t][e].
///   probs: [T,E], expertIds: [T,topK] → *loss (a scalar). Sums run in double.
template <typename T>
Status moeAuxLoss(const T *probs, const int32_t *expertIds, int64_t numTokens,
                  int64_t numExperts, int64_t topK, double coef, T *loss);

/// moe.aux_loss_grad: dProbs[t][e] = dLoss · coef · E · f_e / T (f is not
/// differentiated). probs is not read (its gradient does not depend on it)
/// but is kept for symmetry with the op.
///   probs: [T,E], expertIds: [T,topK] → dProbs: [T,E].
template <typename T>
Status moeAuxLossGrad(const T *probs, const int32_t *expertIds, T dLoss,
                      int64_t numTokens, int64_t numExperts, int64_t topK,
                      double coef, T *dProbs);

//===----------------------------------------------------------------------===//
// moe.dispatch / moe.dispatch_grad
//===----------------------------------------------------------------------===//

/// The number of rows of moe.dispatch's `routed`: T·topK when capacity = 0
/// (dropless), E·capacity otherwise.
int64_t moeDispatchRows(int64_t numTokens, int64_t numExperts, int64_t topK,
                        int64_t capacity);

/// moe.dispatch: copies token rows grouped by expert in ascending expert id,
/// stable in token order (then choice order).
///   Dropless (capacity = 0): routed: [T·topK, D] packed, expert e's rows
///   start at counts[0] + … + counts[e−1].
///   With capacity C > 0: routed: [E·C, D], expert e owns rows
///   [e·C, (e+1)·C); copies past C are dropped (position −1); unused rows are
///   zero; counts[e] is the number of rows kept (≤ C).
///   x: [T,D], expertIds: [T,topK] → routed, positions: [T,topK] (row of each
///   copy, −1 if dropped), counts: [E]; *numDropped (if not null) = the
///   number of dropped copies.
template <typename T>
Status moeDispatch(const T *x, const int32_t *expertIds, int64_t numTokens,
                   int64_t modelDim, int64_t numExperts, int64_t topK,
                   int64_t capacity, T *routed, int32_t *positions,
                   int32_t *counts, int64_t *numDropped);

/// moe.dispatch_grad: dx[t] = Σ_j dRouted[positions[t][j]] over the copies
/// that were kept (dropped copies contribute nothing).
///   dRouted: [N,D], positions: [T,topK] in [−1, N) → dx: [T,D].
template <typename T>
Status moeDispatchGrad(const T *dRouted, const int32_t *positions,
                       int64_t numRows, int64_t numTokens, int64_t modelDim,
                       int64_t topK, T *dx);

//===----------------------------------------------------------------------===//
// moe.experts / moe.experts_grad
//===----------------------------------------------------------------------===//

/// moe.experts: for each group g, out = act(x·w1[g] + b1[g])·w2[g] + b2[g] on
/// the group's rows: packed by counts when capacity = 0 (group g starts at
/// counts[0] + … + counts[g−1]), at g·capacity otherwise. Every other row of
/// out is zero.
///   routed: [N,D], counts: [G], w1: [G,D,H], b1: [G,H], w2: [G,H,D],
///   b2: [G,D] → out: [N,D].
/// N is an upper bound (moe.all_to_all's output is the dropless bound):
/// packed, Σ counts ≤ N; with capacity, counts[g] ≤ capacity and
/// G·capacity ≤ N. Allocates a [Σ counts, H] scratch buffer. GEMMs run per
/// group through gemm<T>: large groups one after another (OpenBLAS threads
/// each, bias and activation OpenMP-parallel over rows), many small groups
/// (< 128 rows on average) OpenMP-parallel across groups.
template <typename T>
Status moeExperts(const T *routed, const int32_t *counts, const T *w1,
                  const T *b1, const T *w2, const T *b2, int64_t numRows,
                  int64_t modelDim, int64_t hiddenDim, int64_t numGroups,
                  int64_t capacity, MoeActivation activation, T *out);

/// moe.experts_grad: recomputes each group's hidden activations, then
/// back-propagates dy. Rows of dRouted outside every group are zero; a group
/// with no rows gets zero weight gradients.
///   routed, counts, w1, b1, w2, b2 as moe.experts, dy: [N,D]
///   → dRouted: [N,D], dw1: [G,D,H], db1: [G,H], dw2: [G,H,D], db2: [G,D].
/// Allocates two [Σ counts, H] scratch buffers.
template <typename T>
Status moeExpertsGrad(const T *routed, const int32_t *counts, const T *w1,
                      const T *b1, const T *w2, const T *b2, const T *dy,
                      int64_t numRows, int64_t modelDim, int64_t hiddenDim,
                      int64_t numGroups, int64_t capacity,
                      MoeActivation activation, T *dRouted, T *dw1, T *db1,
                      T *dw2, T *db2);

//===----------------------------------------------------------------------===//
// moe.combine / moe.combine_grad
//===----------------------------------------------------------------------===//

/// moe.combine: y[t] = Σ_j combineWeights[t][j] · expertOut[positions[t][j]]
/// over kept copies (position −1 contributes zero).
///   expertOut: [N,D], positions: [T,topK] in [−1, N),
///   combineWeights: [T,topK] → y: [T,D].
template <typename T>
Status moeCombine(const T *expertOut, const int32_t *positions,
                  const T *combineWeights, int64_t numRows, int64_t numTokens,
                  int64_t modelDim, int64_t topK, T *y);

/// moe.combine_grad: dExpertOut[positions[t][j]] = combineWeights[t][j]·dy[t]
/// (rows no copy reads are zero); dCombineWeights[t][j] =
/// dy[t]·expertOut[positions[t][j]], zero for dropped copies.
/// Kept positions must be distinct (as moe.dispatch makes them).
///   expertOut: [N,D], positions, combineWeights: [T,topK], dy: [T,D]
///   → dExpertOut: [N,D], dCombineWeights: [T,topK].
/// Allocates an [N] scratch buffer to check that positions are distinct.
template <typename T>
Status moeCombineGrad(const T *expertOut, const int32_t *positions,
                      const T *combineWeights, const T *dy, int64_t numRows,
                      int64_t numTokens, int64_t modelDim, int64_t topK,
                      T *dExpertOut, T *dCombineWeights);

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_MOEKERNELS_H
