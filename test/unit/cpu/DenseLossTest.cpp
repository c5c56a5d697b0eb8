//===- DenseLossTest.cpp - cross_entropy, AdamW and gradient clipping -----===//

#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "test/unit/cpu/GradCheck.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace flexmoe::cpu;
using flexmoe::test::checkGradient;
using flexmoe::test::randomVector;
using flexmoe::test::randomVectorAs;

namespace {

constexpr double kGradTol = 1e-6;

//===----------------------------------------------------------------------===//
// cross_entropy
//===----------------------------------------------------------------------===//

double referenceCrossEntropy(const std::vector<float> &logits,
                             const std::vector<int32_t> &labels, int64_t V,
                             int64_t ignore) {
  double total = 0;
  int count = 0;
  for (size_t r = 0; r < labels.size(); ++r) {
    if (labels[r] == ignore)
      continue;
    double sum = 0;
    for (int64_t c = 0; c < V; ++c)
      sum += std::exp(double(logits[r * V + c]));
    total += std::log(sum) - logits[r * V + labels[r]];
    ++count;
  }
  return total / count;
}

TEST(DenseCrossEntropy, ForwardMatchesReferenceAndIgnoresLabels) {
  const int64_t V = 11;
  std::vector<int32_t> labels = {3, -100, 0, 10, 7, -100, 3};
  std::vector<float> logits =
      randomVectorAs<float>(labels.size() * V, 1, -4, 4);
  float loss = -1;
  ASSERT_TRUE(crossEntropy(logits.data(), labels.data(), labels.size(), V, -100,
                           &loss));
  EXPECT_NEAR(loss, referenceCrossEntropy(logits, labels, V, -100), 1e-5);
  // Ignored rows do not count: changing their logits changes nothing.
  for (int64_t c = 0; c < V; ++c)
    logits[1 * V + c] = 1000.f * (c + 1);
  float again = -1;
  ASSERT_TRUE(crossEntropy(logits.data(), labels.data(), labels.size(), V, -100,
                           &again));
  EXPECT_EQ(loss, again);
  // A custom ignore_index inside the vocabulary (padding id 3).
  std::vector<int32_t> kept = {0, 10, 7};
  std::vector<float> keptLogits;
  for (int r : {2, 3, 4})
    keptLogits.insert(keptLogits.end(), logits.begin() + r * V,
                      logits.begin() + (r + 1) * V);
  // -100 is a bad label once it is not the ignore_index.
  EXPECT_FALSE(
      crossEntropy(logits.data(), labels.data(), labels.size(), V, 3, &loss));
  labels = {3, 3, 0, 10, 7, 3, 3};
  ASSERT_TRUE(
      crossEntropy(logits.data(), labels.data(), labels.size(), V, 3, &loss));
  EXPECT_NEAR(loss, referenceCrossEntropy(keptLogits, kept, V, 3), 1e-5);
}

TEST(DenseCrossEntropy, LargeLogitsStayFinite) {
  std::vector<float> logits = {1000.f, -1000.f, 999.f};
  std::vector<int32_t> labels = {2};
  float loss;
  ASSERT_TRUE(crossEntropy(logits.data(), labels.data(), 1, 3, -100, &loss));
  EXPECT_NEAR(loss, std::log(1 + std::exp(1.0)), 1e-5);
}

TEST(DenseCrossEntropy, AllIgnoredGivesZeroLossAndGradient) {
  std::vector<double> logits = randomVector(8, 2);
  std::vector<int32_t> labels = {-100, -100};
  double loss = 5, dl[8];
  ASSERT_TRUE(crossEntropy(logits.data(), labels.data(), 2, 4, -100, &loss));
  EXPECT_EQ(loss, 0.0);
  ASSERT_TRUE(
      crossEntropyGrad(logits.data(), labels.data(), 2, 4, -100, 1.0, dl));
  for (double g : dl)
    EXPECT_EQ(g, 0.0);
}

TEST(DenseCrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t V = 6;
  std::vector<int32_t> labels = {5, -100, 0, 2, 2};
  const int64_t rows = labels.size();
  std::vector<double> logits = randomVector(rows * V, 3, -2, 2);
  const double dloss = 1.7;
  auto loss = [&](const std::vector<double> &x) {
    double l;
    EXPECT_TRUE(crossEntropy(x.data(), labels.data(), rows, V, -100, &l));
    return dloss * l;
  };
  std::vector<double> dlogits(rows * V, 9.0);
  ASSERT_TRUE(crossEntropyGrad(logits.data(), labels.data(), rows, V, -100,
                               dloss, dlogits.data()));
  EXPECT_LT(checkGradient(loss, logits, dlogits).maxRelativeError, kGradTol);
  for (int64_t c = 0; c < V; ++c)
    EXPECT_EQ(dlogits[1 * V + c], 0.0); // the ignored row
}

TEST(DenseCrossEntropy, BadLabelsAreErrorsNamingThem) {
  std::vector<float> logits(12), dl(12, 4.f);
  for (int32_t bad : {4, -1, -99}) {
    std::vector<int32_t> labels = {0, bad, 1};
    float loss = 4.f;
    flexmoe::Status st =
        crossEntropy(logits.data(), labels.data(), 3, 4, -100, &loss);
    ASSERT_FALSE(st);
    EXPECT_NE(
        st.message().find("label " + std::to_string(bad) + " at position 1"),
        std::string::npos)
        << st.message();
    EXPECT_EQ(loss, 4.f);
    ASSERT_FALSE(crossEntropyGrad(logits.data(), labels.data(), 3, 4, -100, 1.f,
                                  dl.data()));
    for (float g : dl)
      EXPECT_EQ(g, 4.f);
  }
}

//===----------------------------------------------------------------------===//
// AdamW
//===----------------------------------------------------------------------===//

TEST(DenseAdamW, FirstStepByHand) {
  // lr 0.1, wd 0.01: p = 1·(1 − 0.001) = 0.999; m = 0.05; v = 0.00025;
  // m̂ = 0.5, v̂ = 0.25, update = 0.1 · 0.5 / (0.5 + 1e-8) ≈ 0.1 → ≈ 0.899
  // (0.899000002: ε shows at 1e-9).
  AdamWConfig c{0.1, 0.9, 0.999, 1e-8, 0.01};
  double p = 1.0, g = 0.5, m = 0, v = 0;
  ASSERT_TRUE(adamw(&p, &g, &m, &v, 1, c, 1, &p, &m, &v)); // in place
  EXPECT_NEAR(p, 0.999 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-12);
  EXPECT_NEAR(p, 0.899, 1e-8);
  EXPECT_NEAR(m, 0.05, 1e-15);
  EXPECT_NEAR(v, 0.00025, 1e-15);
}

TEST(DenseAdamW, LaterStepWithStateByHand) {
  // step 2, lr 0.01, β = (0.9, 0.99), wd 0.1, p = 2, g = −1, m = 0.1,
  // v = 0.01: p ← 1.998; m = −0.01; v = 0.0199; bc1 = 0.19, bc2 = 0.0199;
  // denom = √0.0199/√0.0199 + ε = 1 + 1e-8;
  // p ← 1.998 + (0.01/0.19)·0.01/(1 + 1e-8).
  AdamWConfig c{0.01, 0.9, 0.99, 1e-8, 0.1};
  float p = 2, g = -1, m = 0.1f, v = 0.01f, np, nm, nv;
  ASSERT_TRUE(adamw(&p, &g, &m, &v, 1, c, 2, &np, &nm, &nv));
  EXPECT_NEAR(np, 1.998 + (0.01 / 0.19) * 0.01 / (1 + 1e-8), 1e-6);
  EXPECT_NEAR(nm, -0.01, 1e-7);
  EXPECT_NEAR(nv, 0.0199, 1e-7);
  EXPECT_EQ(p, 2.f); // inputs untouched when outputs are separate
}

TEST(DenseAdamW, ManyStepsMatchTorchReference) {
  // The torch loop, written as torch writes it (addcdiv with −step_size).
  const int64_t n = 37;
  AdamWConfig c{3e-3, 0.85, 0.995, 1e-6, 0.05};
  std::vector<float> p = randomVectorAs<float>(n, 4), m(n, 0.f), v(n, 0.f);
  std::vector<double> rp(p.begin(), p.end()), rm(n, 0), rv(n, 0);
  for (int64_t step = 1; step <= 5; ++step) {
    std::vector<float> g = randomVectorAs<float>(n, 100 + step);
    ASSERT_TRUE(adamw(p.data(), g.data(), m.data(), v.data(), n, c, step,
                      p.data(), m.data(), v.data()));
    for (int64_t i = 0; i < n; ++i) {
      rp[i] *= 1 - c.lr * c.weightDecay;
      rm[i] = rm[i] * c.beta1 + g[i] * (1 - c.beta1);
      rv[i] = rv[i] * c.beta2 + g[i] * double(g[i]) * (1 - c.beta2);
      const double bc1 = 1 - std::pow(c.beta1, step);
      const double bc2 = 1 - std::pow(c.beta2, step);
      const double denom = std::sqrt(rv[i]) / std::sqrt(bc2) + c.epsilon;
      rp[i] += -(c.lr / bc1) * rm[i] / denom;
    }
  }
  EXPECT_LT(flexmoe::test::maxRelativeDifference(p, rp), 1e-6);
  EXPECT_LT(flexmoe::test::maxRelativeDifference(m, rm), 1e-6);
  EXPECT_LT(flexmoe::test::maxRelativeDifference(v, rv), 1e-6);
}

TEST(DenseAdamW, BadStepAndBetasAreErrors) {
  float p = 1, g = 1, m = 0, v = 0;
  flexmoe::Status st = adamw(&p, &g, &m, &v, 1, AdamWConfig{}, 0, &p, &m, &v);
  ASSERT_FALSE(st);
  EXPECT_NE(st.message().find("step 0"), std::string::npos);
  AdamWConfig c;
  c.beta2 = 1.0;
  EXPECT_FALSE(adamw(&p, &g, &m, &v, 1, c, 1, &p, &m, &v));
  EXPECT_EQ(p, 1.f);
}

//===----------------------------------------------------------------------===//
// global-norm clipping
//===----------------------------------------------------------------------===//

TEST(DenseClip, NormAndScalingMatchTorch) {
  // Sizes around the summation block (4096) and an empty buffer.
  std::vector<std::vector<float>> grads = {randomVectorAs<float>(5000, 5),
                                           randomVectorAs<float>(3, 6),
                                           {},
                                           randomVectorAs<float>(4096, 7)};
  double ref = 0;
  for (auto &g : grads)
    for (float x : g)
      ref += double(x) * x;
  ref = std::sqrt(ref);
  std::vector<GradBuffer<float>> bufs;
  for (auto &g : grads)
    bufs.push_back({g.data(), static_cast<int64_t>(g.size())});
  const auto original = grads;
  EXPECT_NEAR(globalNorm<float>(bufs), ref, 1e-9 * ref);
  // Above the threshold: nothing changes.
  EXPECT_NEAR(clipByGlobalNorm<float>(bufs, ref * 2), ref, 1e-9 * ref);
  EXPECT_EQ(grads, original);
  // Below: every buffer scales by max_norm / (total + 1e-6).
  const double maxNorm = 1.5;
  EXPECT_NEAR(clipByGlobalNorm<float>(bufs, maxNorm), ref, 1e-9 * ref);
  const float coef = static_cast<float>(maxNorm / (ref + 1e-6));
  for (size_t b = 0; b < grads.size(); ++b)
    for (size_t i = 0; i < grads[b].size(); ++i)
      ASSERT_EQ(grads[b][i], coef * original[b][i]);
  EXPECT_NEAR(globalNorm<float>(bufs), maxNorm, 1e-5);
}

} // namespace
