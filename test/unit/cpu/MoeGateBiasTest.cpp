//===- MoeGateBiasTest.cpp - moe.gate's logit bias (routing skew) ---------===//
//
// A logit bias b is the gate with one more input feature, constant 1, whose
// weights are b: the biased gate on x must equal the plain gate on [x, 1]
// with [W; b], forward and backward (moe.gate_grad works from the saved,
// biased probabilities, so its gradients are the biased model's).
//
//===----------------------------------------------------------------------===//
#include "test/unit/cpu/MoeTestUtil.h"

#include <cmath>
#include <limits>

using namespace flexmoe;
using namespace flexmoe::cpu;
using namespace flexmoe::test;

namespace {

constexpr int64_t T = 13, D = 6, E = 5, K = 2;

struct Gate {
  std::vector<double> probs, weights;
  std::vector<int32_t> ids, counts;
  std::vector<double> dx, dw;
};

Gate run(const std::vector<double> &x, const std::vector<double> &w,
         int64_t dim, std::span<const float> bias,
         const std::vector<double> &dWeights,
         const std::vector<double> &dProbs) {
  Gate g{std::vector<double>(T * E),   std::vector<double>(T * K),
         std::vector<int32_t>(T * K),  std::vector<int32_t>(E),
         std::vector<double>(T * dim), std::vector<double>(dim * E)};
  Status s =
      moeGate<double>(x.data(), w.data(), T, dim, E, K, g.probs.data(),
                      g.ids.data(), g.weights.data(), g.counts.data(), bias);
  EXPECT_TRUE(s.isOk()) << (s.isOk() ? "" : s.message());
  s = moeGateGrad<double>(x.data(), w.data(), g.probs.data(), g.ids.data(),
                          dWeights.data(), dProbs.data(), T, dim, E, K,
                          g.dx.data(), g.dw.data());
  EXPECT_TRUE(s.isOk()) << (s.isOk() ? "" : s.message());
  return g;
}

TEST(MoeGateBias, IsAConstantInputFeature) {
  std::vector<double> x = randomVector(T * D, 31);
  std::vector<double> w = randomVector(D * E, 32);
  std::vector<double> dWeights = randomVector(T * K, 33);
  std::vector<double> dProbs = randomVector(T * E, 34);
  const std::vector<float> bias = {1.5f, -0.75f, 0.f, 2.f, -3.f};

  // [x, 1] and [W; b].
  std::vector<double> xOne, wBias = w;
  for (int64_t t = 0; t < T; ++t) {
    xOne.insert(xOne.end(), x.begin() + t * D, x.begin() + (t + 1) * D);
    xOne.push_back(1.0);
  }
  wBias.insert(wBias.end(), bias.begin(), bias.end());

  Gate biased = run(x, w, D, bias, dWeights, dProbs);
  Gate folded = run(xOne, wBias, D + 1, {}, dWeights, dProbs);
  Gate plain = run(x, w, D, {}, dWeights, dProbs);

  EXPECT_EQ(biased.ids, folded.ids);
  EXPECT_EQ(biased.counts, folded.counts);
  EXPECT_NE(biased.ids, plain.ids); // the bias changes the routing
  for (int64_t i = 0; i < T * E; ++i)
    EXPECT_NEAR(biased.probs[i], folded.probs[i], 1e-12) << i;
  for (int64_t i = 0; i < T * K; ++i)
    EXPECT_NEAR(biased.weights[i], folded.weights[i], 1e-12) << i;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d)
      EXPECT_NEAR(biased.dx[t * D + d], folded.dx[t * (D + 1) + d], 1e-12);
  for (int64_t i = 0; i < D * E; ++i)
    EXPECT_NEAR(biased.dw[i], folded.dw[i], 1e-12) << i;
}

TEST(MoeGateBias, ChecksItsSizeAndValues) {
  std::vector<double> x = randomVector(T * D, 41);
  std::vector<double> w = randomVector(D * E, 42);
  std::vector<double> probs(T * E), weights(T * K);
  std::vector<int32_t> ids(T * K);
  const std::vector<float> short_ = {1, 2, 3};
  EXPECT_MOE_ERROR(moeGate<double>(x.data(), w.data(), T, D, E, K, probs.data(),
                                   ids.data(), weights.data(), nullptr, short_),
                   "moe.gate: the logit bias has 3 values for 5 experts");
  const std::vector<float> infinite = {
      0, 0, std::numeric_limits<float>::infinity(), 0, 0};
  EXPECT_MOE_ERROR(moeGate<double>(x.data(), w.data(), T, D, E, K, probs.data(),
                                   ids.data(), weights.data(), nullptr,
                                   infinite),
                   "moe.gate: the logit bias of expert 2 is not finite");
}

} // namespace
