//===- MoeTestUtil.h - naive references for the moe kernel tests -*- C++
//-*-===//
//
// Straightforward loops, written from docs/IR.md independently of the
// kernels, that the Moe*Test.cpp files compare the kernels against.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_UNIT_CPU_MOETESTUTIL_H
#define FLEXMOE_TEST_UNIT_CPU_MOETESTUTIL_H

#include "runtime/backends/cpu/kernels/MoeKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace flexmoe::test {

/// Fails the test with the Status's message unless it is ok.
#define ASSERT_MOE_OK(expr)                                                    \
  do {                                                                         \
    ::flexmoe::Status moeStatus_ = (expr);                                     \
    ASSERT_TRUE(moeStatus_.isOk()) << moeStatus_.message();                    \
  } while (false)

/// Expects an error whose message contains `needle`.
#define EXPECT_MOE_ERROR(expr, needle)                                         \
  do {                                                                         \
    ::flexmoe::Status moeStatus_ = (expr);                                     \
    ASSERT_FALSE(moeStatus_.isOk())                                            \
        << "expected an error containing '" << (needle) << "'";                \
    EXPECT_NE(moeStatus_.message().find(needle), std::string::npos)            \
        << moeStatus_.message();                                               \
  } while (false)

inline double refGelu(double a) {
  return 0.5 * a *
         (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (a + 0.044715 * a * a * a)));
}

inline double refActivate(cpu::MoeActivation act, double a) {
  return act == cpu::MoeActivation::Relu ? std::max(a, 0.0) : refGelu(a);
}

/// A naive moe.gate: softmax, then k rounds of "largest remaining, lowest id
/// on ties", then renormalisation when k > 1.
struct RefGate {
  std::vector<double> probs;
  std::vector<int32_t> ids;
  std::vector<double> weights;
  /// Smallest gap, over tokens, between the k-th and (k+1)-th probability:
  /// how far the inputs are from changing the selection.
  double minMargin = 1e300;
};

template <typename T>
RefGate refGate(const std::vector<T> &x, const std::vector<T> &w, int64_t T_,
                int64_t D, int64_t E, int64_t K) {
  RefGate r;
  r.probs.assign(T_ * E, 0);
  r.ids.assign(T_ * K, -1);
  r.weights.assign(T_ * K, 0);
  for (int64_t t = 0; t < T_; ++t) {
    std::vector<double> logit(E, 0);
    for (int64_t e = 0; e < E; ++e)
      for (int64_t d = 0; d < D; ++d)
        logit[e] += double(x[t * D + d]) * double(w[d * E + e]);
    double mx = logit[0];
    for (double l : logit)
      mx = std::max(mx, l);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e)
      sum += std::exp(logit[e] - mx);
    for (int64_t e = 0; e < E; ++e)
      r.probs[t * E + e] = std::exp(logit[e] - mx) / sum;
    std::vector<bool> taken(E, false);
    double selected = 0;
    for (int64_t j = 0; j < K; ++j) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (!taken[e] &&
            (best < 0 || r.probs[t * E + e] > r.probs[t * E + best]))
          best = e;
      taken[best] = true;
      r.ids[t * K + j] = static_cast<int32_t>(best);
      r.weights[t * K + j] = r.probs[t * E + best];
      selected += r.probs[t * E + best];
    }
    if (K > 1)
      for (int64_t j = 0; j < K; ++j)
        r.weights[t * K + j] /= selected;
    if (K < E) {
      double kth = r.probs[t * E + r.ids[t * K + K - 1]], next = -1;
      for (int64_t e = 0; e < E; ++e)
        if (!taken[e])
          next = std::max(next, r.probs[t * E + e]);
      r.minMargin = std::min(r.minMargin, kth - next);
    }
  }
  return r;
}

/// A naive FFN on one row: act(x·w1 + b1)·w2 + b2 for expert/group g.
template <typename T>
std::vector<double>
refFfnRow(const T *x, const std::vector<T> &w1, const std::vector<T> &b1,
          const std::vector<T> &w2, const std::vector<T> &b2, int64_t g,
          int64_t D, int64_t H, cpu::MoeActivation act) {
  std::vector<double> h(H);
  for (int64_t j = 0; j < H; ++j) {
    double a = b1[g * H + j];
    for (int64_t d = 0; d < D; ++d)
      a += double(x[d]) * double(w1[(g * D + d) * H + j]);
    h[j] = refActivate(act, a);
  }
  std::vector<double> y(D);
  for (int64_t d = 0; d < D; ++d) {
    double s = b2[g * D + d];
    for (int64_t j = 0; j < H; ++j)
      s += h[j] * double(w2[(g * H + j) * D + d]);
    y[d] = s;
  }
  return y;
}

/// Smallest |pre-activation| over the given rows: how far relu inputs are
/// from its kink.
template <typename T>
double minAbsPreactivation(const T *x, int64_t rows, const std::vector<T> &w1,
                           const std::vector<T> &b1, int64_t g, int64_t D,
                           int64_t H) {
  double m = 1e300;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < H; ++j) {
      double a = b1[g * H + j];
      for (int64_t d = 0; d < D; ++d)
        a += double(x[r * D + d]) * double(w1[(g * D + d) * H + j]);
      m = std::min(m, std::abs(a));
    }
  return m;
}

} // namespace flexmoe::test

#endif // FLEXMOE_TEST_UNIT_CPU_MOETESTUTIL_H
