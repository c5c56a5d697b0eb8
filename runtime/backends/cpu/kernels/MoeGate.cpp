//===- MoeGate.cpp - moe.gate, moe.aux_loss and their gradients -----------===//
#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cpu/kernels/MoeKernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace flexmoe::cpu {

using namespace detail;

StatusOr<MoeActivation> parseMoeActivation(std::string_view name) {
  if (name == "gelu")
    return MoeActivation::Gelu;
  if (name == "relu")
    return MoeActivation::Relu;
  return errorf("unknown moe activation '", name,
                "', expected \"gelu\" or \"relu\"");
}

static Status checkGateShape(const char *op, int64_t numTokens,
                             int64_t modelDim, int64_t numExperts,
                             int64_t topK) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  if (numExperts < 1 || numExperts > kMaxRows)
    return errorf(op, ": expert count is ", numExperts, ", expected in [1, ",
                  kMaxRows, "]");
  if (topK < 1 || topK > numExperts)
    return errorf(op, ": top_k is ", topK, ", expected in [1, ", numExperts,
                  "] (the expert count)");
  FLEXMOE_RETURN_IF_ERROR(checkProduct(op, "probs size", numTokens, numExperts,
                                       std::numeric_limits<int64_t>::max()));
  return checkProduct(op, "token copies", numTokens, topK, kMaxRows);
}

template <typename T>
Status moeGate(const T *x, const T *gateWeight, int64_t numTokens,
               int64_t modelDim, int64_t numExperts, int64_t topK, T *probs,
               int32_t *expertIds, T *combineWeights, int32_t *counts,
               std::span<const float> logitBias) {
  FLEXMOE_RETURN_IF_ERROR(
      checkGateShape("moe.gate", numTokens, modelDim, numExperts, topK));
  const int64_t E = numExperts, K = topK;
  if (!logitBias.empty()) {
    if (static_cast<int64_t>(logitBias.size()) != E)
      return errorf("moe.gate: the logit bias has ", logitBias.size(),
                    " values for ", E, " experts");
    for (size_t e = 0; e < logitBias.size(); ++e)
      if (!std::isfinite(logitBias[e]))
        return errorf("moe.gate: the logit bias of expert ", e,
                      " is not finite (", logitBias[e], ")");
  }
  // Logits go straight into probs; softmax and top-k then work in place.
  gemm<T>(false, false, numTokens, E, modelDim, T(1), x, modelDim, gateWeight,
          E, T(0), probs, E);
  // A bias shifts the logits by a constant of the step: the saved
  // probabilities are the biased model's, so moe.gate_grad (which works
  // from them) stays exact without knowing the bias.
  if (!logitBias.empty())
    for (int64_t t = 0; t < numTokens; ++t)
      for (int64_t e = 0; e < E; ++e)
        probs[t * E + e] += static_cast<T>(logitBias[e]);

#pragma omp parallel
  {
    std::vector<int32_t> order(E);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < numTokens; ++t) {
      T *p = probs + t * E;
      const T maxLogit = *std::max_element(p, p + E);
      T sum = 0;
      for (int64_t e = 0; e < E; ++e) {
        p[e] = std::exp(p[e] - maxLogit);
        sum += p[e];
      }
      for (int64_t e = 0; e < E; ++e)
        p[e] /= sum;

      // A strict total order (probability descending, then id ascending)
      // makes the selection deterministic; NaN ranks last so that a
      // diverged model cannot break the sort's ordering contract.
      auto rank = [p](int32_t e) {
        return std::isnan(p[e]) ? -std::numeric_limits<T>::infinity() : p[e];
      };
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + K, order.end(),
                        [&rank](int32_t a, int32_t b) {
                          const T ra = rank(a), rb = rank(b);
                          return ra > rb || (ra == rb && a < b);
                        });
      T selected = 0;
      for (int64_t j = 0; j < K; ++j) {
        expertIds[t * K + j] = order[j];
        combineWeights[t * K + j] = p[order[j]];
        selected += p[order[j]];
      }
      if (K > 1)
        for (int64_t j = 0; j < K; ++j)
          combineWeights[t * K + j] /= selected;
    }
  }

  if (counts) {
    std::fill(counts, counts + E, 0);
    for (int64_t i = 0; i < numTokens * K; ++i)
      ++counts[expertIds[i]];
  }
  return Status::ok();
}

template <typename T>
Status moeGateGrad(const T *x, const T *gateWeight, const T *probs,
                   const int32_t *expertIds, const T *dCombineWeights,
                   const T *dProbs, int64_t numTokens, int64_t modelDim,
                   int64_t numExperts, int64_t topK, T *dx, T *dGateWeight) {
  const char *op = "moe.gate_grad";
  FLEXMOE_RETURN_IF_ERROR(
      checkGateShape(op, numTokens, modelDim, numExperts, topK));
  FLEXMOE_RETURN_IF_ERROR(
      checkExpertIds(op, expertIds, numTokens, topK, numExperts));
  const int64_t E = numExperts, K = topK;
  std::vector<T> dLogits(static_cast<size_t>(numTokens * E));

#pragma omp parallel
  {
    std::vector<T> dp(E);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < numTokens; ++t) {
      const T *p = probs + t * E;
      const int32_t *ids = expertIds + t * K;
      const T *dc = dCombineWeights + t * K;
      std::copy(dProbs + t * E, dProbs + (t + 1) * E, dp.begin());
      if (K == 1) {
        dp[ids[0]] += dc[0];
      } else {
        // c_j = p_{e_j} / S with S = Σ_i p_{e_i}:
        // ∂L/∂p_{e_i} += dc_i / S − Σ_j dc_j · p_{e_j} / S².
        T s = 0, weighted = 0;
        for (int64_t j = 0; j < K; ++j) {
          s += p[ids[j]];
          weighted += dc[j] * p[ids[j]];
        }
        const T shared = weighted / (s * s);
        for (int64_t j = 0; j < K; ++j)
          dp[ids[j]] += dc[j] / s - shared;
      }
      // Softmax: dlogit_e = p_e · (dp_e − Σ_i p_i dp_i).
      T inner = 0;
      for (int64_t e = 0; e < E; ++e)
        inner += p[e] * dp[e];
      T *dl = dLogits.data() + t * E;
      for (int64_t e = 0; e < E; ++e)
        dl[e] = p[e] * (dp[e] - inner);
    }
  }

  // dx = dLogits · gateWeightᵀ, dGateWeight = xᵀ · dLogits.
  gemm<T>(false, true, numTokens, modelDim, E, T(1), dLogits.data(), E,
          gateWeight, E, T(0), dx, modelDim);
  if (numTokens == 0)
    std::fill(dGateWeight, dGateWeight + modelDim * E, T(0));
  else
    gemm<T>(true, false, modelDim, E, numTokens, T(1), x, modelDim,
            dLogits.data(), E, T(0), dGateWeight, E);
  return Status::ok();
}

static Status checkAuxShape(const char *op, int64_t numTokens,
                            int64_t numExperts, int64_t topK) {
  if (numTokens < 1)
    return errorf(op, ": token count is ", numTokens,
                  ", expected ≥ 1 (the loss averages over tokens)");
  if (numExperts < 1)
    return errorf(op, ": expert count is ", numExperts, ", expected ≥ 1");
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  return checkProduct(op, "token copies", numTokens, topK, kMaxRows);
}

/// f_e · T·k: how many copies each expert received.
static std::vector<int64_t> copiesPerExpert(const int32_t *expertIds,
                                            int64_t numTokens,
                                            int64_t numExperts, int64_t topK) {
  std::vector<int64_t> copies(numExperts, 0);
  for (int64_t i = 0; i < numTokens * topK; ++i)
    ++copies[expertIds[i]];
  return copies;
}

template <typename T>
Status moeAuxLoss(const T *probs, const int32_t *expertIds, int64_t numTokens,
                  int64_t numExperts, int64_t topK, double coef, T *loss) {
  const char *op = "moe.aux_loss";
  FLEXMOE_RETURN_IF_ERROR(checkAuxShape(op, numTokens, numExperts, topK));
  FLEXMOE_RETURN_IF_ERROR(
      checkExpertIds(op, expertIds, numTokens, topK, numExperts));
  const int64_t E = numExperts;
  std::vector<int64_t> copies = copiesPerExpert(expertIds, numTokens, E, topK);
  // Σ_t probs[t][e] in token order for every e: deterministic.
  std::vector<double> probSum(E, 0.0);
  for (int64_t t = 0; t < numTokens; ++t)
    for (int64_t e = 0; e < E; ++e)
      probSum[e] += static_cast<double>(probs[t * E + e]);
  double total = 0;
  for (int64_t e = 0; e < E; ++e) {
    const double f =
        static_cast<double>(copies[e]) / static_cast<double>(numTokens * topK);
    total += f * (probSum[e] / static_cast<double>(numTokens));
  }
  *loss = static_cast<T>(coef * static_cast<double>(E) * total);
  return Status::ok();
}

template <typename T>
Status moeAuxLossGrad(const T * /*probs*/, const int32_t *expertIds, T dLoss,
                      int64_t numTokens, int64_t numExperts, int64_t topK,
                      double coef, T *dProbs) {
  const char *op = "moe.aux_loss_grad";
  FLEXMOE_RETURN_IF_ERROR(checkAuxShape(op, numTokens, numExperts, topK));
  FLEXMOE_RETURN_IF_ERROR(
      checkExpertIds(op, expertIds, numTokens, topK, numExperts));
  const int64_t E = numExperts;
  std::vector<int64_t> copies = copiesPerExpert(expertIds, numTokens, E, topK);
  std::vector<T> row(E);
  for (int64_t e = 0; e < E; ++e) {
    const double f =
        static_cast<double>(copies[e]) / static_cast<double>(numTokens * topK);
    row[e] = static_cast<T>(static_cast<double>(dLoss) * coef *
                            static_cast<double>(E) * f /
                            static_cast<double>(numTokens));
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < numTokens; ++t)
    std::copy(row.begin(), row.end(), dProbs + t * E);
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status moeGate<T>(const T *, const T *, int64_t, int64_t, int64_t,  \
                             int64_t, T *, int32_t *, T *, int32_t *,          \
                             std::span<const float>);                          \
  template Status moeGateGrad<T>(                                              \
      const T *, const T *, const T *, const int32_t *, const T *, const T *,  \
      int64_t, int64_t, int64_t, int64_t, T *, T *);                           \
  template Status moeAuxLoss<T>(const T *, const int32_t *, int64_t, int64_t,  \
                                int64_t, double, T *);                         \
  template Status moeAuxLossGrad<T>(const T *, const int32_t *, T, int64_t,    \
                                    int64_t, int64_t, double, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
