//===- MoeDispatchTest.cpp - moe.dispatch and moe.combine kernels ---------===//
#include "test/unit/cpu/MoeTestUtil.h"

using namespace flexmoe;
using namespace flexmoe::cpu;
using namespace flexmoe::test;

namespace {

/// x[t] = (10t, 10t + 1): each routed row names its token.
std::vector<float> labelledTokens(int64_t T) {
  std::vector<float> x(T * 2);
  for (int64_t t = 0; t < T; ++t) {
    x[2 * t] = 10.0f * t;
    x[2 * t + 1] = 10.0f * t + 1;
  }
  return x;
}

/// Random ids in [0, E) (repeats within a token allowed: the kernels must
/// not assume distinct choices).
std::vector<int32_t> randomIds(int64_t n, int64_t E, uint64_t seed) {
  std::vector<double> u = randomVector(n, seed, 0.0, 1.0);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i)
    ids[i] = static_cast<int32_t>(u[i] * E) % E;
  return ids;
}

TEST(MoeDispatch, DroplessGroupsByExpertStableInTokenOrder) {
  // T = 4, k = 2, E = 3.
  const std::vector<int32_t> ids = {2, 0,  //
                                    0, 1,  //
                                    2, 1,  //
                                    0, 2}; //
  std::vector<float> x = labelledTokens(4);
  EXPECT_EQ(moeDispatchRows(4, 3, 2, 0), 8);
  std::vector<float> routed(8 * 2, -7.0f);
  std::vector<int32_t> positions(8), counts(3);
  int64_t dropped = -1;
  ASSERT_MOE_OK(moeDispatch<float>(x.data(), ids.data(), 4, 2, 3, 2, 0,
                                   routed.data(), positions.data(),
                                   counts.data(), &dropped));
  // Expert 0: tokens 0, 1, 3 (rows 0-2); expert 1: tokens 1, 2 (rows 3-4);
  // expert 2: tokens 0, 2, 3 (rows 5-7).
  EXPECT_EQ(counts, (std::vector<int32_t>{3, 2, 3}));
  EXPECT_EQ(positions, (std::vector<int32_t>{5, 0, 1, 3, 6, 4, 2, 7}));
  EXPECT_EQ(dropped, 0);
  const std::vector<int> tokenOfRow = {0, 1, 3, 1, 2, 0, 2, 3};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(routed[2 * r], 10.0f * tokenOfRow[r]) << "row " << r;
    EXPECT_EQ(routed[2 * r + 1], 10.0f * tokenOfRow[r] + 1) << "row " << r;
  }
}

TEST(MoeDispatch, CapacityDropsLateCopiesAndZeroesPadding) {
  // T = 5, k = 2, E = 3, C = 2: expert 0 is wanted by tokens 0, 1, 2, 4
  // (2 and 4 are dropped), expert 1 by token 2 only (one padding row),
  // expert 2 by tokens 0, 1, 3 (twice), 4 (3 and 4 are dropped).
  const std::vector<int32_t> ids = {0, 2,  //
                                    2, 0,  //
                                    0, 1,  //
                                    2, 2,  //
                                    2, 0}; //
  std::vector<float> x = labelledTokens(5);
  const int64_t N = moeDispatchRows(5, 3, 2, 2);
  ASSERT_EQ(N, 6);
  std::vector<float> routed(N * 2, -7.0f);
  std::vector<int32_t> positions(10), counts(3);
  int64_t dropped = -1;
  ASSERT_MOE_OK(moeDispatch<float>(x.data(), ids.data(), 5, 2, 3, 2, 2,
                                   routed.data(), positions.data(),
                                   counts.data(), &dropped));
  // Expert 0 rows 0-1: tokens 0, 1; expert 1 rows 2-3: token 2, padding;
  // expert 2 rows 4-5: tokens 0, 1 (token 3's two copies and 4's dropped).
  EXPECT_EQ(counts, (std::vector<int32_t>{2, 1, 2}));
  EXPECT_EQ(positions,
            (std::vector<int32_t>{0, 4, 5, 1, -1, 2, -1, -1, -1, -1}));
  EXPECT_EQ(dropped, 5);
  const std::vector<float> expected = {0, 1, 10, 11, 20, 21,
                                       0, 0, 0,  1,  10, 11};
  EXPECT_EQ(routed, expected);
}

TEST(MoeDispatch, NullDroppedCounterIsAllowed) {
  const std::vector<int32_t> ids = {1, 1};
  std::vector<double> x = {1, 2}, routed(2);
  std::vector<int32_t> positions(2), counts(2);
  ASSERT_MOE_OK(moeDispatch<double>(x.data(), ids.data(), 2, 1, 2, 1, 1,
                                    routed.data(), positions.data(),
                                    counts.data(), nullptr));
  EXPECT_EQ(positions, (std::vector<int32_t>{1, -1}));
  EXPECT_EQ(routed, (std::vector<double>{0, 1}));
}

TEST(MoeDispatch, RandomRoutingKeepsEveryInvariant) {
  // Many random routings and capacities: every kept copy lands in its
  // expert's range, in token order, at a distinct row holding its token;
  // each expert keeps its first min(demand, C) copies and drops the rest.
  const int64_t D = 2, K = 3;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const int64_t T = 1 + seed % 17, E = 1 + seed % 5;
    const int64_t C = seed % 3 == 0 ? 0 : 1 + seed % 4;
    const int64_t N = moeDispatchRows(T, E, K, C);
    std::vector<float> x = labelledTokens(T);
    std::vector<int32_t> ids = randomIds(T * K, E, 1000 + seed);
    std::vector<float> routed(N * D, -7.0f);
    std::vector<int32_t> positions(T * K), counts(E);
    int64_t dropped = -1;
    ASSERT_MOE_OK(moeDispatch<float>(x.data(), ids.data(), T, D, E, K, C,
                                     routed.data(), positions.data(),
                                     counts.data(), &dropped));
    std::vector<int64_t> demand(E, 0), start(E, 0), last(E, -1);
    for (int32_t e : ids)
      ++demand[e];
    int64_t expectedDropped = 0;
    for (int64_t e = 0, packed = 0; e < E; ++e) {
      const int64_t kept = C == 0 ? demand[e] : std::min(demand[e], C);
      EXPECT_EQ(counts[e], kept) << "seed " << seed << ", expert " << e;
      expectedDropped += demand[e] - kept;
      start[e] = C == 0 ? packed : e * C;
      packed += demand[e];
    }
    EXPECT_EQ(dropped, expectedDropped) << "seed " << seed;
    std::vector<char> used(N, 0);
    std::vector<int64_t> seen(E, 0);
    for (int64_t i = 0; i < T * K; ++i) {
      const int32_t e = ids[i], p = positions[i];
      const bool shouldKeep = C == 0 || seen[e] < C;
      ++seen[e];
      ASSERT_EQ(p >= 0, shouldKeep) << "seed " << seed << ", copy " << i;
      if (p < 0)
        continue;
      EXPECT_GE(p, start[e]);
      EXPECT_LT(p, start[e] + counts[e]);
      EXPECT_GT(p, last[e]) << "not in token order, seed " << seed;
      last[e] = p;
      EXPECT_FALSE(used[p]) << "row " << p << " used twice";
      used[p] = 1;
      EXPECT_EQ(routed[p * D], x[(i / K) * D]);
      EXPECT_EQ(routed[p * D + 1], x[(i / K) * D + 1]);
    }
    for (int64_t r = 0; r < N; ++r)
      if (!used[r])
        EXPECT_EQ(routed[r * D], 0.0f) << "padding row " << r;
  }
}

class MoeDispatchGrad : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeDispatchGrad, MatchesFiniteDifferences) {
  const int64_t T = 9, D = 3, E = 4, K = 2, C = GetParam();
  const int64_t N = moeDispatchRows(T, E, K, C);
  std::vector<double> x = randomVector(T * D, 21);
  std::vector<int32_t> ids = randomIds(T * K, E, 22);
  std::vector<double> wr = randomVector(N * D, 23);
  std::vector<int32_t> positions(T * K), counts(E);
  int64_t dropped = 0;
  auto loss = [&](const std::vector<double> &xs) {
    std::vector<double> routed(N * D);
    EXPECT_TRUE(moeDispatch<double>(xs.data(), ids.data(), T, D, E, K, C,
                                    routed.data(), positions.data(),
                                    counts.data(), &dropped)
                    .isOk());
    return dot(routed, wr);
  };
  loss(x);
  if (C != 0)
    EXPECT_GT(dropped, 0) << "the capacity case should drop copies";
  std::vector<double> dx(T * D);
  ASSERT_MOE_OK(moeDispatchGrad<double>(wr.data(), positions.data(), N, T, D, K,
                                        dx.data()));
  GradCheckResult r = checkGradient(loss, x, dx);
  EXPECT_LT(r.maxRelativeError, 1e-8)
      << "dx[" << r.worstIndex << "]: analytic " << r.analytic << ", numeric "
      << r.numeric;
}

INSTANTIATE_TEST_SUITE_P(MoeCapacity, MoeDispatchGrad, ::testing::Values(0, 3));

TEST(MoeCombine, WeightsKeptCopiesAndSkipsDropped) {
  // N = 3 rows of D = 2, T = 2 tokens, k = 2.
  std::vector<float> out = {1, 2, 3, 4, 5, 6};
  std::vector<int32_t> positions = {2, 0, -1, 1};
  std::vector<float> weights = {0.25f, 0.75f, 0.5f, 0.5f};
  std::vector<float> y(4, -7.0f);
  ASSERT_MOE_OK(moeCombine<float>(out.data(), positions.data(), weights.data(),
                                  3, 2, 2, 2, y.data()));
  EXPECT_EQ(y, (std::vector<float>{0.25f * 5 + 0.75f * 1, 0.25f * 6 + 0.75f * 2,
                                   0.5f * 3, 0.5f * 4}));
}

TEST(MoeCombine, MatchesNaiveReferenceInFloat) {
  const int64_t T = 23, D = 7, E = 5, K = 3, C = 8;
  const int64_t N = moeDispatchRows(T, E, K, C);
  std::vector<float> x = randomVectorAs<float>(T * D, 31);
  std::vector<int32_t> ids = randomIds(T * K, E, 32);
  std::vector<float> routed(N * D), weights = randomVectorAs<float>(T * K, 33);
  std::vector<int32_t> positions(T * K), counts(E);
  ASSERT_MOE_OK(moeDispatch<float>(x.data(), ids.data(), T, D, E, K, C,
                                   routed.data(), positions.data(),
                                   counts.data(), nullptr));
  std::vector<float> y(T * D);
  ASSERT_MOE_OK(moeCombine<float>(routed.data(), positions.data(),
                                  weights.data(), N, T, D, K, y.data()));
  // Dispatch then combine reads each token's own row back: y = Σ kept w · x.
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      double expected = 0;
      for (int64_t j = 0; j < K; ++j)
        if (positions[t * K + j] >= 0)
          expected += double(weights[t * K + j]) * double(x[t * D + d]);
      EXPECT_NEAR(y[t * D + d], expected, 1e-5)
          << "y[" << t << "][" << d << "]";
    }
}

TEST(MoeCombineGrad, MatchesFiniteDifferences) {
  const int64_t T = 8, D = 3, E = 3, K = 2, C = 4;
  const int64_t N = moeDispatchRows(T, E, K, C);
  std::vector<double> x = randomVector(T * D, 41);
  std::vector<int32_t> ids = randomIds(T * K, E, 42);
  std::vector<double> routed(N * D);
  std::vector<int32_t> positions(T * K), counts(E);
  int64_t dropped = 0;
  ASSERT_MOE_OK(moeDispatch<double>(x.data(), ids.data(), T, D, E, K, C,
                                    routed.data(), positions.data(),
                                    counts.data(), &dropped));
  ASSERT_GT(dropped, 0);
  // Expert rows are arbitrary here (padding rows too), so that unread rows
  // would show a wrong non-zero gradient.
  std::vector<double> out = randomVector(N * D, 43);
  std::vector<double> weights = randomVector(T * K, 44);
  std::vector<double> wy = randomVector(T * D, 45);
  auto loss = [&](const std::vector<double> &o, const std::vector<double> &w) {
    std::vector<double> y(T * D);
    EXPECT_TRUE(moeCombine<double>(o.data(), positions.data(), w.data(), N, T,
                                   D, K, y.data())
                    .isOk());
    return dot(y, wy);
  };
  std::vector<double> dOut(N * D, -7.0), dW(T * K, -7.0);
  ASSERT_MOE_OK(moeCombineGrad<double>(out.data(), positions.data(),
                                       weights.data(), wy.data(), N, T, D, K,
                                       dOut.data(), dW.data()));
  GradCheckResult ro = checkGradient(
      [&](const std::vector<double> &o) { return loss(o, weights); }, out,
      dOut);
  EXPECT_LT(ro.maxRelativeError, 1e-8)
      << "d_expert_out[" << ro.worstIndex << "]: analytic " << ro.analytic
      << ", numeric " << ro.numeric;
  GradCheckResult rw = checkGradient(
      [&](const std::vector<double> &w) { return loss(out, w); }, weights, dW);
  EXPECT_LT(rw.maxRelativeError, 1e-8)
      << "d_combine_weights[" << rw.worstIndex << "]: analytic " << rw.analytic
      << ", numeric " << rw.numeric;
  for (int64_t i = 0; i < T * K; ++i)
    if (positions[i] < 0)
      EXPECT_EQ(dW[i], 0.0) << "dropped copy " << i;
}

TEST(MoeDispatchErrors, RejectsBadIdsPositionsAndShapes) {
  std::vector<double> x(8, 1.0), routed(16, -7.0), dx(8, -7.0);
  std::vector<int32_t> ids = {0, 1, 4, 2}, positions(4, -7), counts(4, -7);
  EXPECT_MOE_ERROR(moeDispatch<double>(x.data(), ids.data(), 2, 4, 4, 2, 0,
                                       routed.data(), positions.data(),
                                       counts.data(), nullptr),
                   "moe.dispatch: expert id 4 of token 1, choice 0 is outside "
                   "[0, 4)");
  // Checked before the first write: nothing was touched.
  EXPECT_EQ(routed, std::vector<double>(16, -7.0));
  EXPECT_EQ(positions, std::vector<int32_t>(4, -7));
  EXPECT_EQ(counts, std::vector<int32_t>(4, -7));
  ids[2] = 3;
  EXPECT_MOE_ERROR(moeDispatch<double>(x.data(), ids.data(), 2, 4, 4, 2, -2,
                                       routed.data(), positions.data(),
                                       counts.data(), nullptr),
                   "capacity is -2");
  EXPECT_MOE_ERROR(moeDispatch<double>(x.data(), ids.data(), 2, 4, 4, 0, 0,
                                       routed.data(), positions.data(),
                                       counts.data(), nullptr),
                   "top_k is 0");
  EXPECT_MOE_ERROR(moeDispatch<double>(x.data(), ids.data(), 2, 4, 1 << 20, 2,
                                       1 << 12, routed.data(), positions.data(),
                                       counts.data(), nullptr),
                   "routed rows");

  std::vector<int32_t> badPositions = {0, 3, -2, 1};
  EXPECT_MOE_ERROR(moeDispatchGrad<double>(routed.data(), badPositions.data(),
                                           4, 2, 4, 2, dx.data()),
                   "moe.dispatch_grad: position -2 of token 1, choice 0 is "
                   "outside [-1, 4)");
  EXPECT_EQ(dx, std::vector<double>(8, -7.0));
  badPositions = {0, 4, -1, 1};
  std::vector<double> w(4, 0.5), y(8), dOut(16), dW(4);
  EXPECT_MOE_ERROR(moeCombine<double>(routed.data(), badPositions.data(),
                                      w.data(), 4, 2, 4, 2, y.data()),
                   "moe.combine: position 4 of token 0, choice 1 is outside "
                   "[-1, 4)");
  EXPECT_MOE_ERROR(moeCombineGrad<double>(routed.data(), badPositions.data(),
                                          w.data(), y.data(), 4, 2, 4, 2,
                                          dOut.data(), dW.data()),
                   "position 4 of token 0, choice 1");
  std::vector<int32_t> shared = {0, 3, -1, 3};
  EXPECT_MOE_ERROR(moeCombineGrad<double>(routed.data(), shared.data(),
                                          w.data(), y.data(), 4, 2, 4, 2,
                                          dOut.data(), dW.data()),
                   "row 3 is read by token 0, choice 1 and by token 1, "
                   "choice 1");
}

} // namespace
