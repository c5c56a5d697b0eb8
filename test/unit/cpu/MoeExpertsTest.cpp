//===- MoeExpertsTest.cpp - moe.experts kernels (grouped FFN) -------------===//
#include "test/unit/cpu/MoeTestUtil.h"

using namespace flexmoe;
using namespace flexmoe::cpu;
using namespace flexmoe::test;

namespace {

struct ExpertsCase {
  const char *name;
  MoeActivation activation;
  int64_t capacity;
};

// Readable parameters in gtest's output.
void PrintTo(const ExpertsCase &c, std::ostream *os) { *os << c.name; }

std::string caseName(const ::testing::TestParamInfo<ExpertsCase> &info) {
  return info.param.name;
}

/// Group g's first row: packed by counts, or at g·capacity.
std::vector<int64_t> groupStarts(const std::vector<int32_t> &counts,
                                 int64_t capacity) {
  std::vector<int64_t> starts(counts.size());
  int64_t packed = 0;
  for (size_t g = 0; g < counts.size(); ++g) {
    starts[g] = capacity == 0 ? packed : int64_t(g) * capacity;
    packed += counts[g];
  }
  return starts;
}

class MoeExpertsForward : public ::testing::TestWithParam<ExpertsCase> {};

TEST_P(MoeExpertsForward, MatchesNaiveReferenceInFloat) {
  const ExpertsCase c = GetParam();
  const int64_t D = 12, H = 20, G = 4;
  // Group 2 is empty; with capacity 9 the groups leave padding rows, and the
  // packed case leaves 5 trailing rows (the all-to-all bound).
  const std::vector<int32_t> counts = {7, 9, 0, 3};
  const int64_t N = c.capacity == 0 ? 19 + 5 : G * c.capacity;
  std::vector<float> routed = randomVectorAs<float>(N * D, 51);
  std::vector<float> w1 = randomVectorAs<float>(G * D * H, 52);
  std::vector<float> b1 = randomVectorAs<float>(G * H, 53);
  std::vector<float> w2 = randomVectorAs<float>(G * H * D, 54);
  std::vector<float> b2 = randomVectorAs<float>(G * D, 55);
  std::vector<float> out(N * D, -7.0f);
  ASSERT_MOE_OK(moeExperts<float>(routed.data(), counts.data(), w1.data(),
                                  b1.data(), w2.data(), b2.data(), N, D, H, G,
                                  c.capacity, c.activation, out.data()));
  std::vector<char> covered(N, 0);
  const std::vector<int64_t> starts = groupStarts(counts, c.capacity);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = starts[g]; r < starts[g] + counts[g]; ++r) {
      covered[r] = 1;
      std::vector<double> y = refFfnRow(routed.data() + r * D, w1, b1, w2, b2,
                                        g, D, H, c.activation);
      for (int64_t d = 0; d < D; ++d)
        EXPECT_NEAR(out[r * D + d], y[d], 2e-5 * (1 + std::abs(y[d])))
            << "group " << g << ", row " << r << ", column " << d;
    }
  for (int64_t r = 0; r < N; ++r)
    if (!covered[r])
      for (int64_t d = 0; d < D; ++d)
        EXPECT_EQ(out[r * D + d], 0.0f) << "row " << r << " outside groups";
}

INSTANTIATE_TEST_SUITE_P(
    MoeExperts, MoeExpertsForward,
    ::testing::Values(ExpertsCase{"GeluPacked", MoeActivation::Gelu, 0},
                      ExpertsCase{"ReluPacked", MoeActivation::Relu, 0},
                      ExpertsCase{"GeluCapacity", MoeActivation::Gelu, 9},
                      ExpertsCase{"ReluCapacity", MoeActivation::Relu, 9}),
    caseName);

class MoeExpertsGrad : public ::testing::TestWithParam<ExpertsCase> {};

TEST_P(MoeExpertsGrad, MatchesFiniteDifferences) {
  const ExpertsCase c = GetParam();
  const int64_t D = 4, H = 5, G = 3;
  const std::vector<int32_t> counts = {3, 0, 2};
  const int64_t N = c.capacity == 0 ? 5 + 2 : G * c.capacity;
  std::vector<double> routed = randomVector(N * D, 61);
  std::vector<double> w1 = randomVector(G * D * H, 62);
  std::vector<double> b1 = randomVector(G * H, 63);
  std::vector<double> w2 = randomVector(G * H * D, 64);
  std::vector<double> b2 = randomVector(G * D, 65);
  std::vector<double> wy = randomVector(N * D, 66);
  if (c.activation == MoeActivation::Relu) {
    // A perturbation of 1e-5 moves a pre-activation by at most ~1e-5·D:
    // keep every one well clear of relu's kink.
    const std::vector<int64_t> starts = groupStarts(counts, c.capacity);
    for (int64_t g = 0; g < G; ++g)
      ASSERT_GT(minAbsPreactivation(routed.data() + starts[g] * D, counts[g],
                                    w1, b1, g, D, H),
                1e-3)
          << "group " << g;
  }
  auto loss = [&](const std::vector<double> &x, const std::vector<double> &a,
                  const std::vector<double> &ba, const std::vector<double> &b,
                  const std::vector<double> &bb) {
    std::vector<double> out(N * D);
    EXPECT_TRUE(moeExperts<double>(x.data(), counts.data(), a.data(), ba.data(),
                                   b.data(), bb.data(), N, D, H, G, c.capacity,
                                   c.activation, out.data())
                    .isOk());
    return dot(out, wy);
  };
  std::vector<double> dRouted(N * D, -7), dw1(G * D * H, -7), db1(G * H, -7),
      dw2(G * H * D, -7), db2(G * D, -7);
  ASSERT_MOE_OK(moeExpertsGrad<double>(
      routed.data(), counts.data(), w1.data(), b1.data(), w2.data(), b2.data(),
      wy.data(), N, D, H, G, c.capacity, c.activation, dRouted.data(),
      dw1.data(), db1.data(), dw2.data(), db2.data()));

  auto report = [](const char *what, const GradCheckResult &r) {
    EXPECT_LT(r.maxRelativeError, 1e-7)
        << what << "[" << r.worstIndex << "]: analytic " << r.analytic
        << ", numeric " << r.numeric;
  };
  report("d_routed", checkGradient(
                         [&](const std::vector<double> &v) {
                           return loss(v, w1, b1, w2, b2);
                         },
                         routed, dRouted));
  report("dw1", checkGradient(
                    [&](const std::vector<double> &v) {
                      return loss(routed, v, b1, w2, b2);
                    },
                    w1, dw1));
  report("db1", checkGradient(
                    [&](const std::vector<double> &v) {
                      return loss(routed, w1, v, w2, b2);
                    },
                    b1, db1));
  report("dw2", checkGradient(
                    [&](const std::vector<double> &v) {
                      return loss(routed, w1, b1, v, b2);
                    },
                    w2, dw2));
  report("db2", checkGradient(
                    [&](const std::vector<double> &v) {
                      return loss(routed, w1, b1, w2, v);
                    },
                    b2, db2));
  // The empty group's parameters get exact zeros, not leftovers.
  for (int64_t i = 0; i < H; ++i)
    EXPECT_EQ(db1[1 * H + i], 0.0);
}

INSTANTIATE_TEST_SUITE_P(
    MoeExperts, MoeExpertsGrad,
    ::testing::Values(ExpertsCase{"GeluPacked", MoeActivation::Gelu, 0},
                      ExpertsCase{"ReluPacked", MoeActivation::Relu, 0},
                      ExpertsCase{"GeluCapacity", MoeActivation::Gelu, 4},
                      ExpertsCase{"ReluCapacity", MoeActivation::Relu, 4}),
    caseName);

TEST(MoeExpertsSchedule, LargeGroupsMatchReferenceAndGradients) {
  // ≥ 128 rows per group on average: the groups run one after another with
  // OpenBLAS threads (the cases above take the across-groups schedule).
  const int64_t D = 2, H = 3, G = 2, N = 300;
  const std::vector<int32_t> counts = {150, 140};
  std::vector<double> routed = randomVector(N * D, 71);
  std::vector<double> w1 = randomVector(G * D * H, 72);
  std::vector<double> b1 = randomVector(G * H, 73);
  std::vector<double> w2 = randomVector(G * H * D, 74);
  std::vector<double> b2 = randomVector(G * D, 75);
  std::vector<double> wy = randomVector(N * D, 76);
  auto forward = [&](const std::vector<double> &a,
                     const std::vector<double> &b) {
    std::vector<double> out(N * D);
    EXPECT_TRUE(moeExperts<double>(routed.data(), counts.data(), a.data(),
                                   b1.data(), b.data(), b2.data(), N, D, H, G,
                                   0, MoeActivation::Gelu, out.data())
                    .isOk());
    return out;
  };
  std::vector<double> out = forward(w1, w2);
  const std::vector<int64_t> starts = groupStarts(counts, 0);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t r = starts[g]; r < starts[g] + counts[g]; ++r) {
      std::vector<double> y = refFfnRow(routed.data() + r * D, w1, b1, w2, b2,
                                        g, D, H, MoeActivation::Gelu);
      for (int64_t d = 0; d < D; ++d)
        ASSERT_NEAR(out[r * D + d], y[d], 1e-12) << "row " << r;
    }
  for (int64_t i = 290 * D; i < N * D; ++i)
    EXPECT_EQ(out[i], 0.0);
  std::vector<double> dRouted(N * D), dw1(G * D * H), db1(G * H),
      dw2(G * H * D), db2(G * D);
  ASSERT_MOE_OK(moeExpertsGrad<double>(
      routed.data(), counts.data(), w1.data(), b1.data(), w2.data(), b2.data(),
      wy.data(), N, D, H, G, 0, MoeActivation::Gelu, dRouted.data(), dw1.data(),
      db1.data(), dw2.data(), db2.data()));
  GradCheckResult r1 = checkGradient(
      [&](const std::vector<double> &v) { return dot(forward(v, w2), wy); }, w1,
      dw1);
  EXPECT_LT(r1.maxRelativeError, 1e-7) << "dw1[" << r1.worstIndex << "]";
  GradCheckResult r2 = checkGradient(
      [&](const std::vector<double> &v) { return dot(forward(w1, v), wy); }, w2,
      dw2);
  EXPECT_LT(r2.maxRelativeError, 1e-7) << "dw2[" << r2.worstIndex << "]";
}

TEST(MoeExpertsSchedule, BothSchedulesGiveIdenticalBits) {
  // The same 130-row group alone (G = 1: one after another) and beside an
  // empty group (G = 2, 65 rows on average: across groups).
  const int64_t D = 16, H = 24, N = 130;
  std::vector<float> routed = randomVectorAs<float>(N * D, 81);
  std::vector<float> w1 = randomVectorAs<float>(2 * D * H, 82);
  std::vector<float> b1 = randomVectorAs<float>(2 * H, 83);
  std::vector<float> w2 = randomVectorAs<float>(2 * H * D, 84);
  std::vector<float> b2 = randomVectorAs<float>(2 * D, 85);
  std::vector<float> dy = randomVectorAs<float>(N * D, 86);
  struct Result {
    std::vector<float> out, dRouted, dw1, db1, dw2, db2;
  };
  auto run = [&](const std::vector<int32_t> &counts) {
    const int64_t G = static_cast<int64_t>(counts.size());
    Result r{std::vector<float>(N * D),     std::vector<float>(N * D),
             std::vector<float>(G * D * H), std::vector<float>(G * H),
             std::vector<float>(G * H * D), std::vector<float>(G * D)};
    EXPECT_TRUE(moeExperts<float>(routed.data(), counts.data(), w1.data(),
                                  b1.data(), w2.data(), b2.data(), N, D, H, G,
                                  0, MoeActivation::Gelu, r.out.data())
                    .isOk());
    EXPECT_TRUE(moeExpertsGrad<float>(
                    routed.data(), counts.data(), w1.data(), b1.data(),
                    w2.data(), b2.data(), dy.data(), N, D, H, G, 0,
                    MoeActivation::Gelu, r.dRouted.data(), r.dw1.data(),
                    r.db1.data(), r.dw2.data(), r.db2.data())
                    .isOk());
    return r;
  };
  Result alone = run({130});
  Result beside = run({130, 0});
  EXPECT_EQ(alone.out, beside.out);
  EXPECT_EQ(alone.dRouted, beside.dRouted);
  EXPECT_TRUE(
      std::equal(alone.dw1.begin(), alone.dw1.end(), beside.dw1.begin()));
  EXPECT_TRUE(
      std::equal(alone.db1.begin(), alone.db1.end(), beside.db1.begin()));
  EXPECT_TRUE(
      std::equal(alone.dw2.begin(), alone.dw2.end(), beside.dw2.begin()));
  EXPECT_TRUE(
      std::equal(alone.db2.begin(), alone.db2.end(), beside.db2.begin()));
}

TEST(MoeExpertsGelu, MatchesTheTanhApproximation) {
  // One group, D = H = 1, w1 = w2 = 1, zero biases: out = gelu_tanh(x).
  const std::vector<double> xs = {-3.0, -0.5, 0.25, 1.0, 2.5};
  const std::vector<int32_t> counts = {5};
  std::vector<double> one = {1.0}, zero = {0.0}, out(5);
  ASSERT_MOE_OK(moeExperts<double>(xs.data(), counts.data(), one.data(),
                                   zero.data(), one.data(), zero.data(), 5, 1,
                                   1, 1, 0, MoeActivation::Gelu, out.data()));
  // Values of 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
  const std::vector<double> expected = {-0.0036373920817729943,
                                        -0.15428599017485606, 0.149675350701685,
                                        0.8411919906082768, 2.484915733910001};
  for (size_t i = 0; i < xs.size(); ++i)
    EXPECT_NEAR(out[i], expected[i], 1e-12) << "gelu(" << xs[i] << ")";
}

TEST(MoeExpertsErrors, RejectsCountsThatDoNotFit) {
  const int64_t D = 2, H = 2, G = 2;
  std::vector<double> x(8 * D, 1.0), w1(G * D * H), b1(G * H), w2(G * H * D),
      b2(G * D), out(8 * D), dy(8 * D), d1(8 * D), d2(G * D * H), d3(G * H),
      d4(G * H * D), d5(G * D);
  auto forward = [&](const std::vector<int32_t> &counts, int64_t N,
                     int64_t capacity) {
    return moeExperts<double>(x.data(), counts.data(), w1.data(), b1.data(),
                              w2.data(), b2.data(), N, D, H, G, capacity,
                              MoeActivation::Gelu, out.data());
  };
  auto backward = [&](const std::vector<int32_t> &counts, int64_t N,
                      int64_t capacity) {
    return moeExpertsGrad<double>(x.data(), counts.data(), w1.data(), b1.data(),
                                  w2.data(), b2.data(), dy.data(), N, D, H, G,
                                  capacity, MoeActivation::Relu, d1.data(),
                                  d2.data(), d3.data(), d4.data(), d5.data());
  };
  EXPECT_MOE_ERROR(forward({5, 4}, 8, 0),
                   "moe.experts: counts sum to more than the 8 rows "
                   "(exceeded at group 1)");
  EXPECT_MOE_ERROR(backward({5, 4}, 8, 0),
                   "moe.experts_grad: counts sum to more than the 8 rows");
  EXPECT_MOE_ERROR(forward({-1, 4}, 8, 0), "count of group 0 is -1");
  EXPECT_MOE_ERROR(forward({2, 5}, 8, 4),
                   "count of group 1 is 5, more than the capacity 4");
  EXPECT_MOE_ERROR(forward({2, 2}, 7, 4),
                   "2 groups of capacity 4 need 2 × 4 rows, but there are 7");
  EXPECT_MOE_ERROR(backward({2, 2}, 8, -1), "capacity is -1");
  std::fill(out.begin(), out.end(), -7.0);
  EXPECT_MOE_ERROR(forward({2, 9}, 8, 0), "counts sum to more than the 8");
  EXPECT_EQ(out, std::vector<double>(8 * D, -7.0)) << "written on error";
  // Σ counts below N is the all-to-all bound, not an error.
  ASSERT_MOE_OK(forward({3, 2}, 8, 0));
}

} // namespace
