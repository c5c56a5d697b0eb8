//===- MoeKernelsTest.cu - the CUDA moe kernels against the CPU ones ------===//
//
// Every CUDA moe kernel runs on seeded random inputs and is compared with
// the CPU template of runtime/backends/cpu/kernels/MoeKernels.h for float:
// integer outputs (ids, positions, counts) exactly, float outputs within a
// tolerance that covers fp32 reordering. Shapes include uneven counts,
// empty experts, several 64-row tiles per group, and capacity on and off.
// Skipped without a GPU.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/kernels/MoeKernels.h"
#include "test/gpu/MoeTestUtil.h"

#include <numeric>

using namespace flexmoe;
using namespace flexmoe::cuda::test;
namespace gpu = flexmoe::cuda;

namespace {

constexpr double kRtol = 1e-4, kAtol = 1e-5;

struct GateShape {
  int64_t T, D, E, K;
};

// Readable, stable test names (ctest lists the parameter).
void PrintTo(const GateShape &s, std::ostream *os) {
  *os << "T" << s.T << "_D" << s.D << "_E" << s.E << "_K" << s.K;
}

class MoeGateTest : public ::testing::TestWithParam<GateShape> {};

TEST_P(MoeGateTest, ForwardAndBackwardMatchCpu) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  const auto [T, D, E, K] = GetParam();
  const std::vector<float> x = randomValues(T * D, 1);
  const std::vector<float> w = randomValues(D * E, 2, 0.5f);
  const std::vector<float> bias = randomValues(E, 3, 0.3f);
  for (bool withBias : {false, true})
    for (bool deterministic : {false, true}) {
      SCOPED_TRACE(testing::Message() << "bias " << withBias
                                      << ", deterministic " << deterministic);
      std::span<const float> logitBias;
      if (withBias)
        logitBias = bias;
      std::vector<float> probs(T * E), combine(T * K);
      std::vector<int32_t> ids(T * K), counts(E);
      FLEXMOE_STATUS_OK(cpu::moeGate<float>(
          x.data(), w.data(), T, D, E, K, probs.data(), ids.data(),
          combine.data(), counts.data(), logitBias));
      TestScratch scratch;
      DeviceBuffer<float> dx(x), dw(w), dProbs(T * E), dCombine(T * K);
      DeviceBuffer<int32_t> dIds(T * K), dCounts(E);
      FLEXMOE_STATUS_OK(gpu::moeGate(dx.get(), dw.get(), T, D, E, K,
                                     dProbs.get(), dIds.get(), dCombine.get(),
                                     dCounts.get(), logitBias, deterministic,
                                     nullptr, scratch.fn()));
      expectNear(dProbs.download(), probs, kRtol, 1e-6, "probs");
      expectEqual(dIds.download(), ids, "expert ids");
      expectNear(dCombine.download(), combine, kRtol, 1e-6, "combine weights");
      expectEqual(dCounts.download(), counts, "counts");

      // Backward from the CPU's forward results.
      const std::vector<float> gradCombine = randomValues(T * K, 4);
      const std::vector<float> gradProbs = randomValues(T * E, 5, 0.1f);
      std::vector<float> gx(T * D), gw(D * E);
      FLEXMOE_STATUS_OK(cpu::moeGateGrad<float>(
          x.data(), w.data(), probs.data(), ids.data(), gradCombine.data(),
          gradProbs.data(), T, D, E, K, gx.data(), gw.data()));
      DeviceBuffer<float> dProbsIn(probs), dGradCombine(gradCombine),
          dGradProbs(gradProbs), dGx(T * D), dGw(D * E);
      DeviceBuffer<int32_t> dIdsIn(ids);
      FLEXMOE_STATUS_OK(
          gpu::moeGateGrad(dx.get(), dw.get(), dProbsIn.get(), dIdsIn.get(),
                           dGradCombine.get(), dGradProbs.get(), T, D, E, K,
                           dGx.get(), dGw.get(), nullptr, scratch.fn()));
      expectNear(dGx.download(), gx, 1e-3, 1e-5, "dx");
      expectNear(dGw.download(), gw, 1e-3, 1e-5, "dGateWeight");
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeGateTest,
                         ::testing::Values(GateShape{37, 16, 8, 2},
                                           GateShape{130, 33, 5, 1},
                                           GateShape{65, 70, 64, 4},
                                           GateShape{0, 8, 4, 2},
                                           // A bias too big for a kernel
                                           // parameter goes through scratch.
                                           GateShape{5, 4, 1100, 2}));

TEST(MoeGateErrors, ShapeAndBiasErrorsNameTheOp) {
  // Host-side checks: no device needed, nothing is enqueued.
  TestScratch scratch;
  Status topK =
      gpu::moeGate(nullptr, nullptr, 4, 4, 3, 4, nullptr, nullptr, nullptr,
                   nullptr, {}, false, nullptr, scratch.fn());
  ASSERT_FALSE(topK.isOk());
  EXPECT_NE(topK.message().find("moe.gate: top_k is 4"), std::string::npos)
      << topK.message();
  const std::vector<float> bias = {0.0f, NAN, 1.0f};
  Status nan =
      gpu::moeGate(nullptr, nullptr, 4, 4, 3, 1, nullptr, nullptr, nullptr,
                   nullptr, bias, false, nullptr, scratch.fn());
  ASSERT_FALSE(nan.isOk());
  EXPECT_NE(nan.message().find("logit bias of expert 1"), std::string::npos)
      << nan.message();
}

TEST(MoeAuxLossTest, ForwardAndBackwardMatchCpu) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  for (GateShape s : {GateShape{37, 0, 8, 2}, GateShape{1000, 0, 16, 1},
                      GateShape{3, 0, 64, 4}}) {
    SCOPED_TRACE(testing::Message() << "T " << s.T << ", E " << s.E);
    std::vector<float> probs = randomValues(s.T * s.E, 7);
    for (float &p : probs)
      p = std::fabs(p);
    const std::vector<int32_t> ids =
        randomExpertIds(s.T, s.K, {0, 2, 3, 5, 6, 7}, 8);
    const double coef = 0.01;
    float loss = 0;
    FLEXMOE_STATUS_OK(cpu::moeAuxLoss<float>(probs.data(), ids.data(), s.T, s.E,
                                             s.K, coef, &loss));
    TestScratch scratch;
    DeviceBuffer<float> dProbs(probs), dLoss(1);
    DeviceBuffer<int32_t> dIds(ids);
    FLEXMOE_STATUS_OK(gpu::moeAuxLoss(dProbs.get(), dIds.get(), s.T, s.E, s.K,
                                      coef, dLoss.get(), nullptr,
                                      scratch.fn()));
    expectNear(dLoss.download(), {loss}, 1e-6, 0, "loss");

    const float seed = 1.7f;
    std::vector<float> grad(s.T * s.E);
    FLEXMOE_STATUS_OK(cpu::moeAuxLossGrad<float>(
        probs.data(), ids.data(), seed, s.T, s.E, s.K, coef, grad.data()));
    DeviceBuffer<float> dSeed(std::vector<float>{seed}), dGrad(s.T * s.E);
    FLEXMOE_STATUS_OK(gpu::moeAuxLossGrad(dProbs.get(), dIds.get(), dSeed.get(),
                                          s.T, s.E, s.K, coef, dGrad.get(),
                                          nullptr, scratch.fn()));
    expectNear(dGrad.download(), grad, 1e-6, 0, "dProbs");
  }
}

struct RouteShape {
  int64_t T, D, E, K, capacity;
};

void PrintTo(const RouteShape &s, std::ostream *os) {
  *os << "T" << s.T << "_D" << s.D << "_E" << s.E << "_K" << s.K << "_C"
      << s.capacity;
}

class MoeRouteTest : public ::testing::TestWithParam<RouteShape> {};

// Dispatch, then combine, then both gradients, each against the CPU.
TEST_P(MoeRouteTest, DispatchAndCombineMatchCpu) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  const auto [T, D, E, K, C] = GetParam();
  // Experts 1 and E-1 (when E > 2) get no copies.
  std::vector<int32_t> used;
  for (int32_t e = 0; e < E; ++e)
    if (E <= 2 || (e != 1 && e != E - 1))
      used.push_back(e);
  const std::vector<int32_t> ids = randomExpertIds(T, K, used, 11);
  const std::vector<float> x = randomValues(T * D, 12);
  const int64_t N = cpu::moeDispatchRows(T, E, K, C);

  std::vector<float> routed(N * D);
  std::vector<int32_t> positions(T * K), counts(E);
  int64_t dropped = 0;
  FLEXMOE_STATUS_OK(cpu::moeDispatch<float>(x.data(), ids.data(), T, D, E, K, C,
                                            routed.data(), positions.data(),
                                            counts.data(), &dropped));
  TestScratch scratch;
  DeviceBuffer<float> dx(x), dRouted(N * D);
  DeviceBuffer<int32_t> dIds(ids), dPositions(T * K), dCounts(E);
  DeviceBuffer<int64_t> dDropped(1);
  FLEXMOE_STATUS_OK(gpu::moeDispatch(
      dx.get(), dIds.get(), T, D, E, K, C, dRouted.get(), dPositions.get(),
      dCounts.get(), dDropped.get(), nullptr, scratch.fn()));
  expectEqual(dPositions.download(), positions, "positions");
  expectEqual(dCounts.download(), counts, "counts");
  expectEqual(dDropped.download(), {dropped}, "dropped copies");
  expectEqual(dRouted.download(), routed, "routed"); // copies: exact

  const std::vector<float> expertOut = randomValues(N * D, 13);
  const std::vector<float> weights = randomValues(T * K, 14);
  std::vector<float> y(T * D);
  FLEXMOE_STATUS_OK(cpu::moeCombine<float>(expertOut.data(), positions.data(),
                                           weights.data(), N, T, D, K,
                                           y.data()));
  DeviceBuffer<float> dOut(expertOut), dWeights(weights), dY(T * D);
  FLEXMOE_STATUS_OK(gpu::moeCombine(dOut.get(), dPositions.get(),
                                    dWeights.get(), N, T, D, K, dY.get(),
                                    nullptr));
  expectNear(dY.download(), y, kRtol, kAtol, "combine y");

  const std::vector<float> gy = randomValues(T * D, 15);
  std::vector<float> gOut(N * D), gWeights(T * K);
  FLEXMOE_STATUS_OK(cpu::moeCombineGrad<float>(
      expertOut.data(), positions.data(), weights.data(), gy.data(), N, T, D, K,
      gOut.data(), gWeights.data()));
  DeviceBuffer<float> dGy(gy), dGOut(N * D), dGWeights(T * K);
  FLEXMOE_STATUS_OK(gpu::moeCombineGrad(dOut.get(), dPositions.get(),
                                        dWeights.get(), dGy.get(), N, T, D, K,
                                        dGOut.get(), dGWeights.get(), nullptr));
  expectNear(dGOut.download(), gOut, kRtol, kAtol, "dExpertOut");
  expectNear(dGWeights.download(), gWeights, 1e-4, 1e-5, "dCombineWeights");

  std::vector<float> gx(T * D);
  FLEXMOE_STATUS_OK(cpu::moeDispatchGrad<float>(gOut.data(), positions.data(),
                                                N, T, D, K, gx.data()));
  DeviceBuffer<float> dGx(T * D);
  FLEXMOE_STATUS_OK(gpu::moeDispatchGrad(dGOut.get(), dPositions.get(), N, T, D,
                                         K, dGx.get(), nullptr));
  expectNear(dGx.download(), gx, kRtol, kAtol, "dispatch dx");
}

INSTANTIATE_TEST_SUITE_P(Shapes, MoeRouteTest,
                         ::testing::Values(RouteShape{37, 16, 8, 2, 0},
                                           RouteShape{37, 16, 8, 2, 5},
                                           RouteShape{300, 9, 6, 1, 0},
                                           RouteShape{300, 9, 6, 1, 40},
                                           RouteShape{700, 130, 16, 4, 0},
                                           RouteShape{700, 130, 16, 4, 200},
                                           RouteShape{0, 8, 4, 2, 3}));

struct ExpertsShape {
  std::vector<int32_t> counts;
  int64_t N, D, H, capacity;
};

void PrintTo(const ExpertsShape &s, std::ostream *os) {
  *os << "G" << s.counts.size() << "_N" << s.N << "_D" << s.D << "_H" << s.H
      << "_C" << s.capacity;
}

class MoeExpertsTest : public ::testing::TestWithParam<ExpertsShape> {};

TEST_P(MoeExpertsTest, ForwardAndBackwardMatchCpu) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  const ExpertsShape &s = GetParam();
  const int64_t G = static_cast<int64_t>(s.counts.size());
  const int64_t N = s.N, D = s.D, H = s.H;
  const std::vector<float> routed = randomValues(N * D, 21);
  const std::vector<float> w1 = randomValues(G * D * H, 22, 0.3f);
  const std::vector<float> b1 = randomValues(G * H, 23, 0.3f);
  const std::vector<float> w2 = randomValues(G * H * D, 24, 0.3f);
  const std::vector<float> b2 = randomValues(G * D, 25, 0.3f);
  const std::vector<float> dy = randomValues(N * D, 26);
  for (auto [cpuAct, gpuAct] :
       {std::pair{cpu::MoeActivation::Gelu, gpu::MoeAct::Gelu},
        std::pair{cpu::MoeActivation::Relu, gpu::MoeAct::Relu}}) {
    SCOPED_TRACE(gpuAct == gpu::MoeAct::Gelu ? "gelu" : "relu");
    std::vector<float> out(N * D);
    FLEXMOE_STATUS_OK(cpu::moeExperts<float>(
        routed.data(), s.counts.data(), w1.data(), b1.data(), w2.data(),
        b2.data(), N, D, H, G, s.capacity, cpuAct, out.data()));
    TestScratch scratch;
    DeviceBuffer<float> dRouted(routed), dW1(w1), dB1(b1), dW2(w2), dB2(b2),
        dDy(dy), dOut(N * D);
    DeviceBuffer<int32_t> dCounts(s.counts);
    FLEXMOE_STATUS_OK(gpu::moeExperts(dRouted.get(), dCounts.get(), dW1.get(),
                                      dB1.get(), dW2.get(), dB2.get(), N, D, H,
                                      G, s.capacity, gpuAct, dOut.get(),
                                      nullptr, scratch.fn()));
    expectNear(dOut.download(), out, 1e-3, 1e-4, "experts out");

    std::vector<float> gx(N * D), gw1(G * D * H), gb1(G * H), gw2(G * H * D),
        gb2(G * D);
    FLEXMOE_STATUS_OK(cpu::moeExpertsGrad<float>(
        routed.data(), s.counts.data(), w1.data(), b1.data(), w2.data(),
        b2.data(), dy.data(), N, D, H, G, s.capacity, cpuAct, gx.data(),
        gw1.data(), gb1.data(), gw2.data(), gb2.data()));
    DeviceBuffer<float> dGx(N * D), dGw1(G * D * H), dGb1(G * H),
        dGw2(G * H * D), dGb2(G * D);
    FLEXMOE_STATUS_OK(gpu::moeExpertsGrad(
        dRouted.get(), dCounts.get(), dW1.get(), dB1.get(), dW2.get(),
        dB2.get(), dDy.get(), N, D, H, G, s.capacity, gpuAct, dGx.get(),
        dGw1.get(), dGb1.get(), dGw2.get(), dGb2.get(), nullptr, scratch.fn()));
    expectNear(dGx.download(), gx, 1e-3, 1e-4, "dRouted");
    expectNear(dGw1.download(), gw1, 1e-3, 1e-4, "dw1");
    expectNear(dGb1.download(), gb1, 1e-3, 1e-4, "db1");
    expectNear(dGw2.download(), gw2, 1e-3, 1e-4, "dw2");
    expectNear(dGb2.download(), gb2, 1e-3, 1e-4, "db2");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MoeExpertsTest,
    ::testing::Values(
        // Packed, uneven, empty groups, N above Σ counts, multi-tile groups.
        ExpertsShape{{3, 0, 130, 1, 0, 64}, 220, 24, 40, 0},
        ExpertsShape{{5, 7}, 12, 70, 33, 0},
        // Capacity layout, some groups full, some empty.
        ExpertsShape{{4, 0, 6, 2}, 24, 16, 20, 6},
        ExpertsShape{{70, 0, 65}, 3 * 80, 20, 66, 80},
        // No rows at all.
        ExpertsShape{{0, 0, 0}, 8, 8, 8, 0}));

TEST(MoeExpertsErrors, CapacityTooLargeForTheRows) {
  TestScratch scratch;
  Status status = gpu::moeExperts(nullptr, nullptr, nullptr, nullptr, nullptr,
                                  nullptr, 10, 4, 4, 3, 4, gpu::MoeAct::Gelu,
                                  nullptr, nullptr, scratch.fn());
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("moe.experts: 3 groups of capacity 4"),
            std::string::npos)
      << status.message();
}

} // namespace
