//===- MoeDispatch.cpp - moe.dispatch, moe.combine and their gradients ----===//
#include "runtime/backends/cpu/kernels/MoeCommon.h"
#include "runtime/backends/cpu/kernels/MoeKernels.h"
#include "runtime/backends/cpu/kernels/Parallel.h"

#include <algorithm>
#include <vector>

namespace flexmoe::cpu {

using namespace detail;

int64_t moeDispatchRows(int64_t numTokens, int64_t numExperts, int64_t topK,
                        int64_t capacity) {
  return capacity == 0 ? numTokens * topK : numExperts * capacity;
}

template <typename T>
Status moeDispatch(const T *x, const int32_t *expertIds, int64_t numTokens,
                   int64_t modelDim, int64_t numExperts, int64_t topK,
                   int64_t capacity, T *routed, int32_t *positions,
                   int32_t *counts, int64_t *numDropped) {
  const char *op = "moe.dispatch";
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "capacity", capacity));
  if (numExperts < 1)
    return errorf(op, ": expert count is ", numExperts, ", expected ≥ 1");
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  // Positions are int32: every row index must fit.
  FLEXMOE_RETURN_IF_ERROR(
      checkProduct(op, "token copies", numTokens, topK, kMaxRows));
  FLEXMOE_RETURN_IF_ERROR(
      checkProduct(op, "routed rows", numExperts, capacity, kMaxRows));
  FLEXMOE_RETURN_IF_ERROR(
      checkExpertIds(op, expertIds, numTokens, topK, numExperts));
  const int64_t E = numExperts, K = topK, D = modelDim;

  // Positions come from one pass in (token, choice) order, which is what
  // makes each expert's group stable in token order.
  std::vector<int64_t> demand(E, 0);
  for (int64_t i = 0; i < numTokens * K; ++i)
    ++demand[expertIds[i]];
  std::vector<int64_t> next(E);
  for (int64_t e = 0, start = 0; e < E; ++e) {
    next[e] = capacity == 0 ? start : e * capacity;
    start += demand[e];
  }
  std::vector<int64_t> kept(E, 0);
  int64_t dropped = 0;
  for (int64_t i = 0; i < numTokens * K; ++i) {
    const int32_t e = expertIds[i];
    if (capacity != 0 && kept[e] == capacity) {
      positions[i] = -1;
      ++dropped;
      continue;
    }
    positions[i] = static_cast<int32_t>(next[e] + kept[e]);
    ++kept[e];
  }
  for (int64_t e = 0; e < E; ++e)
    counts[e] = static_cast<int32_t>(kept[e]);
  if (numDropped)
    *numDropped = dropped;

  // Capacity padding is zero so that moe.experts reads defined values.
  if (capacity != 0) {
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < E; ++e)
      std::fill(routed + (e * capacity + kept[e]) * D,
                routed + (e + 1) * capacity * D, T(0));
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < numTokens * K; ++i) {
    if (positions[i] < 0)
      continue;
    const T *src = x + (i / K) * D;
    std::copy(src, src + D, routed + static_cast<int64_t>(positions[i]) * D);
  }
  return Status::ok();
}

template <typename T>
Status moeDispatchGrad(const T *dRouted, const int32_t *positions,
                       int64_t numRows, int64_t numTokens, int64_t modelDim,
                       int64_t topK, T *dx) {
  const char *op = "moe.dispatch_grad";
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "routed row count", numRows));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  FLEXMOE_RETURN_IF_ERROR(
      checkPositions(op, positions, numTokens, topK, numRows));
  const int64_t K = topK, D = modelDim;
  // Each token sums its own copies in choice order: no shared writes.
#pragma omp parallel for schedule(static) if (worthThreads(numTokens * D))
  for (int64_t t = 0; t < numTokens; ++t) {
    T *out = dx + t * D;
    std::fill(out, out + D, T(0));
    for (int64_t j = 0; j < K; ++j) {
      const int32_t p = positions[t * K + j];
      if (p < 0)
        continue;
      const T *src = dRouted + static_cast<int64_t>(p) * D;
      for (int64_t d = 0; d < D; ++d)
        out[d] += src[d];
    }
  }
  return Status::ok();
}

static Status checkCombineShape(const char *op, int64_t numRows,
                                int64_t numTokens, int64_t modelDim,
                                int64_t topK) {
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "expert row count", numRows));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "token count", numTokens));
  FLEXMOE_RETURN_IF_ERROR(checkNonNegative(op, "model dim", modelDim));
  if (topK < 1)
    return errorf(op, ": top_k is ", topK, ", expected ≥ 1");
  return Status::ok();
}

template <typename T>
Status moeCombine(const T *expertOut, const int32_t *positions,
                  const T *combineWeights, int64_t numRows, int64_t numTokens,
                  int64_t modelDim, int64_t topK, T *y) {
  const char *op = "moe.combine";
  FLEXMOE_RETURN_IF_ERROR(
      checkCombineShape(op, numRows, numTokens, modelDim, topK));
  FLEXMOE_RETURN_IF_ERROR(
      checkPositions(op, positions, numTokens, topK, numRows));
  const int64_t K = topK, D = modelDim;
#pragma omp parallel for schedule(static) if (worthThreads(numTokens * D))
  for (int64_t t = 0; t < numTokens; ++t) {
    T *out = y + t * D;
    std::fill(out, out + D, T(0));
    for (int64_t j = 0; j < K; ++j) {
      const int32_t p = positions[t * K + j];
      if (p < 0)
        continue;
      const T w = combineWeights[t * K + j];
      const T *src = expertOut + static_cast<int64_t>(p) * D;
      for (int64_t d = 0; d < D; ++d)
        out[d] += w * src[d];
    }
  }
  return Status::ok();
}

template <typename T>
Status moeCombineGrad(const T *expertOut, const int32_t *positions,
                      const T *combineWeights, const T *dy, int64_t numRows,
                      int64_t numTokens, int64_t modelDim, int64_t topK,
                      T *dExpertOut, T *dCombineWeights) {
  const char *op = "moe.combine_grad";
  FLEXMOE_RETURN_IF_ERROR(
      checkCombineShape(op, numRows, numTokens, modelDim, topK));
  FLEXMOE_RETURN_IF_ERROR(
      checkPositions(op, positions, numTokens, topK, numRows));
  const int64_t K = topK, D = modelDim;
  // Distinct rows make the scatter below race-free without atomics.
  std::vector<int64_t> reader(numRows, -1);
  for (int64_t i = 0; i < numTokens * K; ++i) {
    const int32_t p = positions[i];
    if (p < 0)
      continue;
    if (reader[p] >= 0)
      return errorf(op, ": row ", p, " is read by token ", reader[p] / K,
                    ", choice ", reader[p] % K, " and by token ", i / K,
                    ", choice ", i % K, "; positions must be distinct");
    reader[p] = i;
  }
#pragma omp parallel for schedule(static) if (worthThreads(numRows * D))
  for (int64_t r = 0; r < numRows; ++r) {
    T *out = dExpertOut + r * D;
    const int64_t i = reader[r];
    if (i < 0) {
      std::fill(out, out + D, T(0));
      continue;
    }
    const T w = combineWeights[i];
    const T *g = dy + (i / K) * D;
    for (int64_t d = 0; d < D; ++d)
      out[d] = w * g[d];
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < numTokens * K; ++i) {
    const int32_t p = positions[i];
    if (p < 0) {
      dCombineWeights[i] = T(0);
      continue;
    }
    const T *g = dy + (i / K) * D;
    const T *src = expertOut + static_cast<int64_t>(p) * D;
    T sum = 0;
    for (int64_t d = 0; d < D; ++d)
      sum += g[d] * src[d];
    dCombineWeights[i] = sum;
  }
  return Status::ok();
}

#define FLEXMOE_INSTANTIATE(T)                                                 \
  template Status moeDispatch<T>(const T *, const int32_t *, int64_t, int64_t, \
                                 int64_t, int64_t, int64_t, T *, int32_t *,    \
                                 int32_t *, int64_t *);                        \
  template Status moeDispatchGrad<T>(const T *, const int32_t *, int64_t,      \
                                     int64_t, int64_t, int64_t, T *);          \
  template Status moeCombine<T>(const T *, const int32_t *, const T *,         \
                                int64_t, int64_t, int64_t, int64_t, T *);      \
  template Status moeCombineGrad<T>(const T *, const int32_t *, const T *,     \
                                    const T *, int64_t, int64_t, int64_t,      \
                                    int64_t, T *, T *);
FLEXMOE_INSTANTIATE(float)
FLEXMOE_INSTANTIATE(double)
#undef FLEXMOE_INSTANTIATE

} // namespace flexmoe::cpu
