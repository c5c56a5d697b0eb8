//===- GradCheck.h - finite-difference gradient checks ----------*- C++ -*-===//
//
// Shared by the dense (Dense*Test.cpp) and MoE (Moe*Test.cpp) kernel tests.
// A kernel's backward is checked in double precision against central
// differences of a scalar loss. The usual pattern: run the forward, take
// loss = Σ y·w with fixed random weights w, so the upstream gradient dy is
// exactly w; the backward's results are then the analytic gradients.
//
//   std::vector<double> x = randomVector(n, 1);
//   std::vector<double> w = randomVector(m, 2);
//   auto loss = [&](const std::vector<double> &xs) {
//     std::vector<double> y(m); forward(xs, y); return dot(y, w); };
//   std::vector<double> dx(n); backward(x, w, dx);
//   EXPECT_LT(maxRelativeGradError(loss, x, dx), 1e-6);
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_UNIT_CPU_GRADCHECK_H
#define FLEXMOE_TEST_UNIT_CPU_GRADCHECK_H

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace flexmoe::test {

/// Uniform values in [lo, hi) from a fixed seed, with |value| ≥ minMagnitude
/// so that no input sits exactly at zero (or at a kink of relu-like ops).
inline std::vector<double> randomVector(size_t n, uint64_t seed,
                                        double lo = -1.0, double hi = 1.0,
                                        double minMagnitude = 1e-3) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> out(n);
  for (double &v : out) {
    do
      v = dist(gen);
    while (std::abs(v) < minMagnitude);
  }
  return out;
}

/// The same values as randomVector, converted to T (float for forward tests).
template <typename T>
std::vector<T> randomVectorAs(size_t n, uint64_t seed, double lo = -1.0,
                              double hi = 1.0) {
  std::vector<double> d = randomVector(n, seed, lo, hi);
  return std::vector<T>(d.begin(), d.end());
}

inline double dot(const std::vector<double> &a, const std::vector<double> &b) {
  assert(a.size() == b.size() && "dot of vectors of different sizes");
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

/// max_i |a[i] − b[i]| / max(|b[i]|, 1): compares a float kernel's result
/// (a) with a double reference (b).
template <typename A, typename B>
double maxRelativeDifference(const std::vector<A> &a, const std::vector<B> &b) {
  assert(a.size() == b.size() && "compared vectors of different sizes");
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    worst = std::max(worst, std::abs(x - y) / std::max(std::abs(y), 1.0));
  }
  return worst;
}

/// The worst element of a gradient check, for a readable failure message.
struct GradCheckResult {
  double maxRelativeError = 0; ///< max over i of |a−n| / max(|a|, |n|, 1)
  size_t worstIndex = 0;
  double analytic = 0;
  double numeric = 0;
};

/// Compares `analytic` (dL/dx at `x`) with central differences of `loss`
/// with step `h`. `loss` takes a const std::vector<double>& of x's size and
/// returns double; x is restored before return. The error is relative with a
/// floor of 1 in the denominator, so tiny gradients are compared absolutely.
template <class Loss>
GradCheckResult checkGradient(Loss &&loss, std::vector<double> &x,
                              const std::vector<double> &analytic,
                              double h = 1e-5) {
  assert(x.size() == analytic.size() && "gradient of the wrong size");
  GradCheckResult result;
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double plus = loss(static_cast<const std::vector<double> &>(x));
    x[i] = saved - h;
    const double minus = loss(static_cast<const std::vector<double> &>(x));
    x[i] = saved;
    const double numeric = (plus - minus) / (2 * h);
    const double denom =
        std::max({std::abs(analytic[i]), std::abs(numeric), 1.0});
    const double err = std::abs(analytic[i] - numeric) / denom;
    if (i == 0 || err > result.maxRelativeError) {
      result.maxRelativeError = err;
      result.worstIndex = i;
      result.analytic = analytic[i];
      result.numeric = numeric;
    }
  }
  return result;
}

/// checkGradient's maximum relative error alone.
template <class Loss>
double maxRelativeGradError(Loss &&loss, std::vector<double> &x,
                            const std::vector<double> &analytic,
                            double h = 1e-5) {
  return checkGradient(std::forward<Loss>(loss), x, analytic, h)
      .maxRelativeError;
}

} // namespace flexmoe::test

#endif // FLEXMOE_TEST_UNIT_CPU_GRADCHECK_H
