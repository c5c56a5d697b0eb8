//===- MoeLayerTest.cpp - the moe kernels chained into a whole layer ------===//
//
// gate → dispatch → experts → combine (plus aux_loss) against a dense
// reference that loops over tokens and their top-k experts, the chained
// backward against finite differences, and determinism across thread counts.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/Parallel.h"
#include "test/unit/cpu/MoeTestUtil.h"

#include <omp.h>

using namespace flexmoe;
using namespace flexmoe::cpu;
using namespace flexmoe::test;

namespace {

struct LayerShape {
  int64_t T, D, E, K, H, C;
  MoeActivation activation;
};

template <typename T> struct LayerParams {
  std::vector<T> x, gate, w1, b1, w2, b2;
};

template <typename T>
LayerParams<T> randomParams(const LayerShape &s, uint64_t seed) {
  return {randomVectorAs<T>(s.T * s.D, seed),
          randomVectorAs<T>(s.D * s.E, seed + 1, -2.0, 2.0),
          randomVectorAs<T>(s.E * s.D * s.H, seed + 2),
          randomVectorAs<T>(s.E * s.H, seed + 3),
          randomVectorAs<T>(s.E * s.H * s.D, seed + 4),
          randomVectorAs<T>(s.E * s.D, seed + 5)};
}

/// Every intermediate of the forward, for the backward to reuse.
template <typename T> struct LayerRun {
  std::vector<T> probs, weights, routed, expertOut, y;
  std::vector<int32_t> ids, gateCounts, positions, counts;
  T aux = 0;
  int64_t dropped = 0;
};

constexpr double kAuxCoef = 0.05;

template <typename T>
LayerRun<T> forward(const LayerShape &s, const LayerParams<T> &p) {
  const int64_t N = moeDispatchRows(s.T, s.E, s.K, s.C);
  LayerRun<T> r;
  r.probs.resize(s.T * s.E);
  r.weights.resize(s.T * s.K);
  r.ids.resize(s.T * s.K);
  r.gateCounts.resize(s.E);
  r.routed.resize(N * s.D);
  r.positions.resize(s.T * s.K);
  r.counts.resize(s.E);
  r.expertOut.resize(N * s.D);
  r.y.resize(s.T * s.D);
  auto ok = [](Status st) {
    EXPECT_TRUE(st.isOk()) << (st.isOk() ? "" : st.message());
  };
  ok(moeGate<T>(p.x.data(), p.gate.data(), s.T, s.D, s.E, s.K, r.probs.data(),
                r.ids.data(), r.weights.data(), r.gateCounts.data()));
  ok(moeAuxLoss<T>(r.probs.data(), r.ids.data(), s.T, s.E, s.K, kAuxCoef,
                   &r.aux));
  ok(moeDispatch<T>(p.x.data(), r.ids.data(), s.T, s.D, s.E, s.K, s.C,
                    r.routed.data(), r.positions.data(), r.counts.data(),
                    &r.dropped));
  ok(moeExperts<T>(r.routed.data(), r.counts.data(), p.w1.data(), p.b1.data(),
                   p.w2.data(), p.b2.data(), N, s.D, s.H, s.E, s.C,
                   s.activation, r.expertOut.data()));
  ok(moeCombine<T>(r.expertOut.data(), r.positions.data(), r.weights.data(), N,
                   s.T, s.D, s.K, r.y.data()));
  return r;
}

class MoeLayerForward : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeLayerForward, MatchesDenseReferenceInFloat) {
  const LayerShape s{29, 8, 6, 2, 16, GetParam(), MoeActivation::Gelu};
  LayerParams<float> p = randomParams<float>(s, 70);
  LayerRun<float> run = forward(s, p);
  RefGate gate = refGate(p.x, p.gate, s.T, s.D, s.E, s.K);
  ASSERT_GT(gate.minMargin, 1e-4);
  ASSERT_EQ(run.ids, gate.ids);
  if (s.C != 0)
    ASSERT_GT(run.dropped, 0) << "the capacity case should drop copies";
  // Dense reference: each token, each choice in order; with capacity an
  // expert keeps only its first C copies in (token, choice) order.
  std::vector<int64_t> taken(s.E, 0);
  int64_t refDropped = 0;
  for (int64_t t = 0; t < s.T; ++t) {
    std::vector<double> y(s.D, 0.0);
    for (int64_t j = 0; j < s.K; ++j) {
      const int32_t e = gate.ids[t * s.K + j];
      if (s.C != 0 && taken[e] == s.C) {
        ++refDropped;
        continue;
      }
      ++taken[e];
      std::vector<double> f = refFfnRow(p.x.data() + t * s.D, p.w1, p.b1, p.w2,
                                        p.b2, e, s.D, s.H, s.activation);
      for (int64_t d = 0; d < s.D; ++d)
        y[d] += gate.weights[t * s.K + j] * f[d];
    }
    for (int64_t d = 0; d < s.D; ++d)
      EXPECT_NEAR(run.y[t * s.D + d], y[d], 2e-5 * (1 + std::abs(y[d])))
          << "y[" << t << "][" << d << "]";
  }
  EXPECT_EQ(run.dropped, refDropped);
  // Dropless dispatch counts equal the gate's by-product counts.
  if (s.C == 0)
    EXPECT_EQ(run.counts, run.gateCounts);
}

INSTANTIATE_TEST_SUITE_P(MoeCapacity, MoeLayerForward, ::testing::Values(0, 7));

/// The chained backward of the whole layer, as the executor will run it.
struct LayerGrads {
  std::vector<double> dx, dGate, dw1, db1, dw2, db2;
};

LayerGrads backward(const LayerShape &s, const LayerParams<double> &p,
                    const LayerRun<double> &r, const std::vector<double> &dy,
                    double dAux) {
  const int64_t N = moeDispatchRows(s.T, s.E, s.K, s.C);
  auto ok = [](Status st) {
    EXPECT_TRUE(st.isOk()) << (st.isOk() ? "" : st.message());
  };
  std::vector<double> dExpertOut(N * s.D), dWeights(s.T * s.K);
  ok(moeCombineGrad<double>(r.expertOut.data(), r.positions.data(),
                            r.weights.data(), dy.data(), N, s.T, s.D, s.K,
                            dExpertOut.data(), dWeights.data()));
  LayerGrads g{
      std::vector<double>(s.T * s.D),       std::vector<double>(s.D * s.E),
      std::vector<double>(s.E * s.D * s.H), std::vector<double>(s.E * s.H),
      std::vector<double>(s.E * s.H * s.D), std::vector<double>(s.E * s.D)};
  std::vector<double> dRouted(N * s.D);
  ok(moeExpertsGrad<double>(
      r.routed.data(), r.counts.data(), p.w1.data(), p.b1.data(), p.w2.data(),
      p.b2.data(), dExpertOut.data(), N, s.D, s.H, s.E, s.C, s.activation,
      dRouted.data(), g.dw1.data(), g.db1.data(), g.dw2.data(), g.db2.data()));
  std::vector<double> dxDispatch(s.T * s.D), dxGate(s.T * s.D),
      dProbs(s.T * s.E);
  ok(moeDispatchGrad<double>(dRouted.data(), r.positions.data(), N, s.T, s.D,
                             s.K, dxDispatch.data()));
  ok(moeAuxLossGrad<double>(r.probs.data(), r.ids.data(), dAux, s.T, s.E, s.K,
                            kAuxCoef, dProbs.data()));
  ok(moeGateGrad<double>(p.x.data(), p.gate.data(), r.probs.data(),
                         r.ids.data(), dWeights.data(), dProbs.data(), s.T, s.D,
                         s.E, s.K, dxGate.data(), g.dGate.data()));
  for (int64_t i = 0; i < s.T * s.D; ++i)
    g.dx[i] = dxDispatch[i] + dxGate[i];
  return g;
}

class MoeLayerGrad : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeLayerGrad, ChainedBackwardMatchesFiniteDifferences) {
  const LayerShape s{10, 4, 4, 2, 6, GetParam(), MoeActivation::Gelu};
  LayerParams<double> p = randomParams<double>(s, 80);
  const LayerRun<double> base = forward(s, p);
  RefGate gate = refGate(p.x, p.gate, s.T, s.D, s.E, s.K);
  ASSERT_GT(gate.minMargin, 1e-3) << "inputs too close to a top-k switch";
  if (s.C != 0)
    ASSERT_GT(base.dropped, 0);
  const std::vector<double> wy = randomVector(s.T * s.D, 90);
  const double dAux = 3.0; // large enough that the aux path matters
  LayerGrads g = backward(s, p, base, wy, dAux);

  bool routingChanged = false;
  auto loss = [&](const LayerParams<double> &q) {
    LayerRun<double> r = forward(s, q);
    if (r.ids != base.ids || r.positions != base.positions)
      routingChanged = true;
    return dot(r.y, wy) + dAux * r.aux;
  };
  auto check = [&](const char *what,
                   std::vector<double> LayerParams<double>::*member,
                   const std::vector<double> &analytic) {
    LayerParams<double> q = p;
    GradCheckResult r = checkGradient(
        [&](const std::vector<double> &v) {
          LayerParams<double> qq = p;
          qq.*member = v;
          return loss(qq);
        },
        q.*member, analytic);
    EXPECT_LT(r.maxRelativeError, 1e-7)
        << what << "[" << r.worstIndex << "]: analytic " << r.analytic
        << ", numeric " << r.numeric;
  };
  check("dx", &LayerParams<double>::x, g.dx);
  check("d_gate_weight", &LayerParams<double>::gate, g.dGate);
  check("dw1", &LayerParams<double>::w1, g.dw1);
  check("db1", &LayerParams<double>::b1, g.db1);
  check("dw2", &LayerParams<double>::w2, g.dw2);
  check("db2", &LayerParams<double>::b2, g.db2);
  EXPECT_FALSE(routingChanged) << "a perturbation changed the routing";
}

INSTANTIATE_TEST_SUITE_P(MoeCapacity, MoeLayerGrad, ::testing::Values(0, 4));

TEST(MoeLayerEdgeCases, EmptyBatchIsLegal) {
  // A zero-sized batch is legal for every kernel but moe.aux_loss (a mean
  // over tokens, which rejects it).
  for (int64_t capacity : {0, 3}) {
    const LayerShape s{0, 4, 3, 2, 5, capacity, MoeActivation::Relu};
    LayerParams<double> p = randomParams<double>(s, 110);
    const int64_t N = moeDispatchRows(s.T, s.E, s.K, s.C);
    std::vector<double> probs, weights, routed(N * s.D, -7), out(N * s.D, -7),
        y;
    std::vector<int32_t> ids, positions, counts(s.E, -7);
    ASSERT_MOE_OK(moeGate<double>(p.x.data(), p.gate.data(), 0, s.D, s.E, s.K,
                                  probs.data(), ids.data(), weights.data(),
                                  counts.data()));
    EXPECT_EQ(counts, std::vector<int32_t>(s.E, 0));
    ASSERT_MOE_OK(moeDispatch<double>(p.x.data(), ids.data(), 0, s.D, s.E, s.K,
                                      s.C, routed.data(), positions.data(),
                                      counts.data(), nullptr));
    EXPECT_EQ(routed, std::vector<double>(N * s.D, 0.0));
    ASSERT_MOE_OK(moeExperts<double>(
        routed.data(), counts.data(), p.w1.data(), p.b1.data(), p.w2.data(),
        p.b2.data(), N, s.D, s.H, s.E, s.C, s.activation, out.data()));
    EXPECT_EQ(out, std::vector<double>(N * s.D, 0.0));
    ASSERT_MOE_OK(moeCombine<double>(out.data(), positions.data(),
                                     weights.data(), N, 0, s.D, s.K, y.data()));
    std::vector<double> dGate(s.D * s.E, -7), dx;
    ASSERT_MOE_OK(moeGateGrad<double>(
        p.x.data(), p.gate.data(), probs.data(), ids.data(), weights.data(),
        probs.data(), 0, s.D, s.E, s.K, dx.data(), dGate.data()));
    EXPECT_EQ(dGate, std::vector<double>(s.D * s.E, 0.0));
  }
}

/// Runs `body` with n OpenMP threads, every loop forking however small,
/// restoring the previous settings.
template <class F> auto withThreads(int n, F &&body) {
  const int saved = omp_get_max_threads();
  const int64_t savedWork = flexmoe::cpu::setMinParallelWork(0);
  omp_set_num_threads(n);
  auto result = body();
  omp_set_num_threads(saved);
  flexmoe::cpu::setMinParallelWork(savedWork);
  return result;
}

TEST(MoeLayerDeterminism, OneAndTwoThreadsGiveIdenticalBits) {
  for (int64_t capacity : {0, 40}) {
    const LayerShape s{257, 32, 8, 2, 48, capacity, MoeActivation::Gelu};
    LayerParams<float> pf = randomParams<float>(s, 100);
    LayerParams<double> pd = randomParams<double>(s, 100);
    const std::vector<double> dy = randomVector(s.T * s.D, 101);
    auto runAll = [&] {
      LayerRun<float> rf = forward(s, pf);
      LayerRun<double> rd = forward(s, pd);
      LayerGrads g = backward(s, pd, rd, dy, 1.0);
      return std::make_tuple(rf.y, rf.probs, rf.aux, rf.positions, rd.y, g.dx,
                             g.dGate, g.dw1, g.db1, g.dw2, g.db2);
    };
    auto one = withThreads(1, runAll);
    auto two = withThreads(2, runAll);
    // Exact equality: bitwise-identical results, not merely close ones.
    EXPECT_TRUE(one == two) << "capacity " << capacity;
  }
}

} // namespace
