//===- MoeGateTest.cpp - moe.gate and moe.aux_loss kernels ----------------===//
#include "test/unit/cpu/MoeTestUtil.h"

using namespace flexmoe;
using namespace flexmoe::cpu;
using namespace flexmoe::test;

namespace {

struct GateOut {
  std::vector<double> probs;
  std::vector<int32_t> ids;
  std::vector<double> weights;
  std::vector<int32_t> counts;
};

GateOut runGate(const std::vector<double> &x, const std::vector<double> &w,
                int64_t T, int64_t D, int64_t E, int64_t K) {
  GateOut o{std::vector<double>(T * E), std::vector<int32_t>(T * K),
            std::vector<double>(T * K), std::vector<int32_t>(E)};
  Status s = moeGate<double>(x.data(), w.data(), T, D, E, K, o.probs.data(),
                             o.ids.data(), o.weights.data(), o.counts.data());
  EXPECT_TRUE(s.isOk()) << (s.isOk() ? "" : s.message());
  return o;
}

class MoeGateForward : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeGateForward, MatchesNaiveReferenceInFloat) {
  const int64_t T = 37, D = 16, E = 8, K = GetParam();
  std::vector<float> x = randomVectorAs<float>(T * D, 11);
  std::vector<float> w = randomVectorAs<float>(D * E, 12);
  std::vector<float> probs(T * E), weights(T * K);
  std::vector<int32_t> ids(T * K), counts(E);
  ASSERT_MOE_OK(moeGate<float>(x.data(), w.data(), T, D, E, K, probs.data(),
                               ids.data(), weights.data(), counts.data()));
  RefGate ref = refGate(x, w, T, D, E, K);
  // With float probabilities a near-tie could legitimately flip; these seeds
  // keep every selection clear of that.
  ASSERT_GT(ref.minMargin, 1e-4);
  for (int64_t i = 0; i < T * E; ++i)
    EXPECT_NEAR(probs[i], ref.probs[i], 1e-6) << "probs[" << i << "]";
  std::vector<int32_t> refCounts(E, 0);
  for (int64_t i = 0; i < T * K; ++i) {
    EXPECT_EQ(ids[i], ref.ids[i]) << "expert_ids[" << i << "]";
    EXPECT_NEAR(weights[i], ref.weights[i], 1e-6) << "weights[" << i << "]";
    ++refCounts[ref.ids[i]];
  }
  EXPECT_EQ(counts, refCounts);
  for (int64_t t = 0; t < T; ++t) {
    double s = 0;
    for (int64_t j = 0; j < K; ++j)
      s += weights[t * K + j];
    if (K > 1)
      EXPECT_NEAR(s, 1.0, 1e-6) << "token " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(MoeTopK, MoeGateForward,
                         ::testing::Values(1, 2, 3, 8));

TEST(MoeGate, TopOneKeepsTheRawProbability) {
  // k = 1 is not renormalised (Switch routing): the weight is p itself.
  const int64_t T = 5, D = 3, E = 4;
  std::vector<double> x = randomVector(T * D, 3), w = randomVector(D * E, 4);
  GateOut o = runGate(x, w, T, D, E, 1);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_DOUBLE_EQ(o.weights[t], o.probs[t * E + o.ids[t]]);
    EXPECT_LT(o.weights[t], 1.0);
  }
}

TEST(MoeGate, TiesGoToTheLowerExpertId) {
  // gate_weight with equal columns 1 and 3 (and 0 and 2): equal logits.
  const int64_t T = 2, D = 2, E = 4, K = 3;
  std::vector<double> x = {1.0, 0.5, -0.25, 2.0};
  std::vector<double> w = {0.1, 0.7, 0.1, 0.7, //
                           0.2, 0.3, 0.2, 0.3};
  GateOut o = runGate(x, w, T, D, E, K);
  // Token 0: logits (0.2, 0.85, 0.2, 0.85) → 1, 3, then 0 before 2.
  EXPECT_EQ(o.ids[0], 1);
  EXPECT_EQ(o.ids[1], 3);
  EXPECT_EQ(o.ids[2], 0);
  // Token 1: logits (0.375, 0.425, ...) → 1, 3, 0.
  EXPECT_EQ(o.ids[3], 1);
  EXPECT_EQ(o.ids[4], 3);
  EXPECT_EQ(o.ids[5], 0);
}

TEST(MoeGate, HugeLogitsStayFinite) {
  // Softmax subtracts the row maximum: logits of ±1e4 must not overflow.
  const int64_t T = 3, D = 2, E = 5, K = 2;
  std::vector<double> x = randomVector(T * D, 5);
  std::vector<double> w = randomVector(D * E, 6, -1e4, 1e4);
  GateOut o = runGate(x, w, T, D, E, K);
  for (int64_t t = 0; t < T; ++t) {
    double s = 0;
    for (int64_t e = 0; e < E; ++e) {
      ASSERT_TRUE(std::isfinite(o.probs[t * E + e]));
      s += o.probs[t * E + e];
    }
    EXPECT_NEAR(s, 1.0, 1e-12);
  }
  for (double c : o.weights)
    EXPECT_TRUE(std::isfinite(c));
}

TEST(MoeGate, NaNInputsStillYieldValidExpertIds) {
  // A diverged model must not make the top-k read out of range: the ids
  // stay in [0, E) and distinct, so the NaN surfaces in the loss, not as a
  // crash.
  const int64_t T = 2, D = 2, E = 4, K = 2;
  std::vector<double> x = {std::nan(""), 1.0, 0.5, -0.5};
  std::vector<double> w = randomVector(D * E, 8);
  GateOut o = runGate(x, w, T, D, E, K);
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_NE(o.ids[t * K], o.ids[t * K + 1]);
    for (int64_t j = 0; j < K; ++j) {
      EXPECT_GE(o.ids[t * K + j], 0);
      EXPECT_LT(o.ids[t * K + j], E);
    }
  }
}

/// Checks moe.gate_grad against central differences of
/// L = Σ combine·wc + Σ probs·wp, with respect to x and gate_weight.
void checkGateGradient(int64_t T, int64_t D, int64_t E, int64_t K,
                       uint64_t seed) {
  std::vector<double> x = randomVector(T * D, seed);
  // A wider gate spreads the logits so that the top-k has clear margins.
  std::vector<double> w = randomVector(D * E, seed + 1, -2.0, 2.0);
  std::vector<double> wc = randomVector(T * K, seed + 2);
  std::vector<double> wp = randomVector(T * E, seed + 3);
  GateOut base = runGate(x, w, T, D, E, K);
  RefGate ref = refGate(x, w, T, D, E, K);
  ASSERT_EQ(base.ids, ref.ids);
  if (K < E)
    ASSERT_GT(ref.minMargin, 1e-3) << "inputs too close to a top-k switch";

  bool selectionChanged = false;
  auto loss = [&](const std::vector<double> &xs,
                  const std::vector<double> &ws) {
    GateOut o = runGate(xs, ws, T, D, E, K);
    if (o.ids != base.ids)
      selectionChanged = true;
    return dot(o.weights, wc) + dot(o.probs, wp);
  };

  std::vector<double> dx(T * D), dw(D * E);
  ASSERT_MOE_OK(moeGateGrad<double>(x.data(), w.data(), base.probs.data(),
                                    base.ids.data(), wc.data(), wp.data(), T, D,
                                    E, K, dx.data(), dw.data()));
  GradCheckResult rx = checkGradient(
      [&](const std::vector<double> &xs) { return loss(xs, w); }, x, dx);
  EXPECT_LT(rx.maxRelativeError, 1e-7)
      << "dx[" << rx.worstIndex << "]: analytic " << rx.analytic << ", numeric "
      << rx.numeric;
  GradCheckResult rw = checkGradient(
      [&](const std::vector<double> &ws) { return loss(x, ws); }, w, dw);
  EXPECT_LT(rw.maxRelativeError, 1e-7)
      << "d_gate_weight[" << rw.worstIndex << "]: analytic " << rw.analytic
      << ", numeric " << rw.numeric;
  EXPECT_FALSE(selectionChanged) << "a perturbation changed the top-k";
}

TEST(MoeGateGrad, TopOneMatchesFiniteDifferences) {
  checkGateGradient(6, 5, 4, 1, 100);
}
TEST(MoeGateGrad, TopTwoMatchesFiniteDifferences) {
  checkGateGradient(7, 4, 6, 2, 200);
}
TEST(MoeGateGrad, TopThreeMatchesFiniteDifferences) {
  checkGateGradient(5, 3, 5, 3, 300);
}
TEST(MoeGateGrad, AllExpertsMatchesFiniteDifferences) {
  // k = E: the renormalised weights are the probabilities themselves.
  checkGateGradient(4, 3, 3, 3, 400);
}

TEST(MoeAuxLoss, MatchesTheFormulaOnAHandWrittenCase) {
  // T = 2, E = 3, k = 2: expert 0 gets 2 copies, 1 gets 1, 2 gets 1.
  std::vector<double> probs = {0.5, 0.3, 0.2, //
                               0.1, 0.6, 0.3};
  std::vector<int32_t> ids = {0, 1, 2, 0};
  double loss = 0;
  ASSERT_MOE_OK(
      moeAuxLoss<double>(probs.data(), ids.data(), 2, 3, 2, 0.01, &loss));
  // f = (2/4, 1/4, 1/4), P = (0.3, 0.45, 0.25).
  const double expected = 0.01 * 3 * (0.5 * 0.3 + 0.25 * 0.45 + 0.25 * 0.25);
  EXPECT_NEAR(loss, expected, 1e-15);
  float lossF = 0;
  std::vector<float> probsF(probs.begin(), probs.end());
  ASSERT_MOE_OK(
      moeAuxLoss<float>(probsF.data(), ids.data(), 2, 3, 2, 0.01, &lossF));
  EXPECT_NEAR(lossF, expected, 1e-8);
}

TEST(MoeAuxLossGrad, MatchesFiniteDifferencesWithFixedRouting) {
  const int64_t T = 9, E = 5, K = 2;
  std::vector<double> probs = randomVector(T * E, 7, 0.0, 1.0);
  std::vector<int32_t> ids(T * K);
  for (int64_t i = 0; i < T * K; ++i)
    ids[i] = static_cast<int32_t>((i * 7 + i / 3) % E);
  const double coef = 0.37, dLoss = 1.7;
  std::vector<double> dProbs(T * E);
  ASSERT_MOE_OK(moeAuxLossGrad<double>(probs.data(), ids.data(), dLoss, T, E, K,
                                       coef, dProbs.data()));
  auto loss = [&](const std::vector<double> &p) {
    double l = 0;
    EXPECT_TRUE(
        moeAuxLoss<double>(p.data(), ids.data(), T, E, K, coef, &l).isOk());
    return dLoss * l;
  };
  GradCheckResult r = checkGradient(loss, probs, dProbs);
  EXPECT_LT(r.maxRelativeError, 1e-8)
      << "d_probs[" << r.worstIndex << "]: analytic " << r.analytic
      << ", numeric " << r.numeric;
}

TEST(MoeGateErrors, RejectsBadShapesAndIds) {
  std::vector<double> x(6, 0.5), w(6, 0.25), probs(6), weights(6), dx(6), dw(6);
  std::vector<int32_t> ids(6), counts(3);
  EXPECT_MOE_ERROR(moeGate<double>(x.data(), w.data(), 2, 2, 3, 4, probs.data(),
                                   ids.data(), weights.data(), counts.data()),
                   "top_k is 4, expected in [1, 3]");
  EXPECT_MOE_ERROR(moeGate<double>(x.data(), w.data(), 2, 2, 0, 1, probs.data(),
                                   ids.data(), weights.data(), counts.data()),
                   "expert count is 0");
  EXPECT_MOE_ERROR(moeGate<double>(x.data(), w.data(), -1, 2, 3, 1,
                                   probs.data(), ids.data(), weights.data(),
                                   counts.data()),
                   "token count is -1");
  std::vector<int32_t> badIds = {0, 1, 2, 3};
  EXPECT_MOE_ERROR(moeGateGrad<double>(x.data(), w.data(), probs.data(),
                                       badIds.data(), weights.data(),
                                       probs.data(), 2, 2, 3, 2, dx.data(),
                                       dw.data()),
                   "expert id 3 of token 1, choice 1 is outside [0, 3)");
  double loss = 0;
  EXPECT_MOE_ERROR(
      moeAuxLoss<double>(probs.data(), badIds.data(), 2, 3, 2, 0.01, &loss),
      "expert id 3 of token 1, choice 1");
  badIds[0] = -1;
  EXPECT_MOE_ERROR(moeAuxLossGrad<double>(probs.data(), badIds.data(), 1.0, 2,
                                          3, 2, 0.01, dx.data()),
                   "expert id -1 of token 0, choice 0");
  EXPECT_MOE_ERROR(
      moeAuxLoss<double>(probs.data(), ids.data(), 0, 3, 2, 0.01, &loss),
      "token count is 0");
  StatusOr<MoeActivation> act = parseMoeActivation("swish");
  ASSERT_FALSE(act.isOk());
  EXPECT_NE(act.status().message().find("'swish'"), std::string::npos);
  EXPECT_EQ(*parseMoeActivation("relu"), MoeActivation::Relu);
  EXPECT_EQ(*parseMoeActivation("gelu"), MoeActivation::Gelu);
}

} // namespace
