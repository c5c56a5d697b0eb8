//===- GroupedGemmTest.cpp - the moe grouped GEMM, both precisions --------===//
//
// detail::launchGroupedGemm directly, against a host reference in double
// that follows GroupedGemm's definition (group strides, row starts,
// transposes, varying M or K, bias and the three epilogues). BF16 is
// compared with the reference on bf16-rounded operands (tight: only the
// fp32 summation differs) and must differ from the reference on the fp32
// operands (proof that the kernel rounds); F32 must match the fp32-operand
// reference tightly. Outputs start as a marker that elements outside every
// group must keep. The grid helper is tested without a GPU.
//
//===----------------------------------------------------------------------===//

#include "Bf16TestUtil.h"
#include "MoeTestUtil.h"
#include "runtime/backends/cpu/kernels/FastMath.h"

namespace {

using flexmoe::device::MathPrecision;
using flexmoe::gpu_testing::roundedToBf16;
using namespace flexmoe::cuda;
using namespace flexmoe::cuda::test;
using detail::GroupedGemm;
using detail::GroupedGemmGrid;
using detail::groupedGemmGrid;
using detail::kBf16TileN;
using detail::kF32TileN;
using detail::kTileM;

constexpr float kMarker = 12345.0f;

double activate(MoeAct act, double a) {
  if (act == MoeAct::Relu)
    return a > 0 ? a : 0;
  if (act == MoeAct::Gelu) {
    const float af = static_cast<float>(a);
    const float inner = 0.7978845608028654f * (af + 0.044715f * af * af * af);
    return 0.5f * af * (1.0f + flexmoe::cpu::tanhApproxFloat(inner));
  }
  return a;
}

double activateDerivative(MoeAct act, double a) {
  if (act == MoeAct::Relu)
    return a > 0 ? 1 : 0;
  if (act == MoeAct::Gelu) {
    const float af = static_cast<float>(a);
    const float inner = 0.7978845608028654f * (af + 0.044715f * af * af * af);
    const float th = flexmoe::cpu::tanhApproxFloat(inner);
    const float dInner =
        0.7978845608028654f * (1.0f + 3.0f * 0.044715f * af * af);
    return 0.5f * (1.0f + th) + 0.5f * af * (1.0f - th * th) * dInner;
  }
  return 1;
}

/// Host copies of a GroupedGemm's arrays; the pointers in `gemm` are set to
/// device copies by run().
struct HostGemm {
  GroupedGemm gemm;
  std::vector<int32_t> counts, tileStart, aRowStart, bRowStart, cRowStart;
  std::vector<float> A, B, bias, derivOf;
  size_t cSize = 0;
  bool withC2 = false;
  int64_t maxTiles = 0;
};

/// The reference: C (and C2) from the marker, every group's elements
/// written as GroupedGemm defines them.
void reference(const HostGemm &h, const std::vector<float> &A,
               const std::vector<float> &B, std::vector<float> &C,
               std::vector<float> &C2) {
  const GroupedGemm &p = h.gemm;
  C.assign(h.cSize, kMarker);
  C2.assign(h.withC2 ? h.cSize : 0, kMarker);
  for (int64_t g = 0; g < p.numGroups; ++g) {
    int64_t M = p.M, K = p.K;
    if (p.var == GroupedGemm::Var::M)
      M = std::clamp<int64_t>(h.counts[g], 0, p.M);
    if (p.var == GroupedGemm::Var::K)
      K = std::clamp<int64_t>(h.counts[g], 0, p.K);
    const int64_t a0 = g * p.aGroupStride +
                       (h.aRowStart.empty() ? 0 : h.aRowStart[g] * p.aRowScale);
    const int64_t b0 = g * p.bGroupStride +
                       (h.bRowStart.empty() ? 0 : h.bRowStart[g] * p.bRowScale);
    const int64_t c0 = g * p.cGroupStride +
                       (h.cRowStart.empty() ? 0 : h.cRowStart[g] * p.cRowScale);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < p.N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double a =
              p.transA ? A[a0 + k * p.lda + m] : A[a0 + m * p.lda + k];
          const double b =
              p.transB ? B[b0 + n * p.ldb + k] : B[b0 + k * p.ldb + n];
          acc += a * b;
        }
        double v = p.alpha * acc;
        if (!h.bias.empty())
          v += h.bias[g * p.biasGroupStride + n];
        const int64_t at = c0 + m * p.ldc + n;
        if (!h.derivOf.empty()) {
          C[at] =
              static_cast<float>(v * activateDerivative(p.act, h.derivOf[at]));
        } else if (h.withC2) {
          C[at] = static_cast<float>(v);
          C2[at] = static_cast<float>(activate(p.act, v));
        } else {
          C[at] = static_cast<float>(activate(p.act, v));
        }
      }
  }
}

/// Runs the GEMM on the GPU in `precision`; returns C and C2.
void run(const HostGemm &h, MathPrecision precision, std::vector<float> &C,
         std::vector<float> &C2) {
  GroupedGemm p = h.gemm;
  p.precision = precision;
  DeviceBuffer<int32_t> counts(h.counts), tileStart(h.tileStart),
      aRowStart(h.aRowStart), bRowStart(h.bRowStart), cRowStart(h.cRowStart);
  DeviceBuffer<float> A(h.A), B(h.B), bias(h.bias), derivOf(h.derivOf);
  DeviceBuffer<float> dC(std::vector<float>(h.cSize, kMarker));
  DeviceBuffer<float> dC2(std::vector<float>(h.withC2 ? h.cSize : 0, kMarker));
  p.counts = h.counts.empty() ? nullptr : counts.get();
  p.tileStart = h.tileStart.empty() ? nullptr : tileStart.get();
  p.aRowStart = h.aRowStart.empty() ? nullptr : aRowStart.get();
  p.bRowStart = h.bRowStart.empty() ? nullptr : bRowStart.get();
  p.cRowStart = h.cRowStart.empty() ? nullptr : cRowStart.get();
  p.A = A.get();
  p.B = B.get();
  p.bias = h.bias.empty() ? nullptr : bias.get();
  p.derivOf = h.derivOf.empty() ? nullptr : derivOf.get();
  p.C = dC.get();
  p.C2 = h.withC2 ? dC2.get() : nullptr;
  ASSERT_EQ(detail::launchGroupedGemm(p, h.maxTiles, nullptr), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  C = dC.download();
  C2 = dC2.download();
}

/// Largest |a − b| over elements both hold (for the "it rounds" check).
double maxDifference(const std::vector<float> &a, const std::vector<float> &b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

/// BF16 against the rounded-operand reference, and differing from the fp32
/// one; F32 against the fp32 reference.
void checkBothPrecisions(const HostGemm &h) {
  std::vector<float> exactC, exactC2, roundedC, roundedC2;
  reference(h, h.A, h.B, exactC, exactC2);
  reference(h, roundedToBf16(h.A), roundedToBf16(h.B), roundedC, roundedC2);
  std::vector<float> C, C2;
  {
    SCOPED_TRACE("F32");
    run(h, MathPrecision::F32, C, C2);
    expectNear(C, exactC, 1e-4, 1e-4, "C");
    expectNear(C2, exactC2, 1e-4, 1e-4, "C2");
  }
  {
    SCOPED_TRACE("BF16");
    run(h, MathPrecision::BF16, C, C2);
    // fp32 sums of exact products of |values| ≤ 1; the tensor cores may
    // truncate inside an MMA, so the absolute allowance grows with K.
    const double atol = 1e-4 * std::max(1.0, h.gemm.K / 64.0);
    expectNear(C, roundedC, 1e-4, atol, "C");
    expectNear(C2, roundedC2, 1e-4, atol, "C2");
    // Rounding each operand moves it by up to 2^-9 relative: over K ≥ 30
    // random terms some output moves by far more than 1e-4.
    EXPECT_GT(maxDifference(C, exactC), 1e-3)
        << "the BF16 kernel does not seem to round its operands";
  }
}

/// Prefix sums of ⌈count / kTileM⌉ (the layout kernel's tileStart).
std::vector<int32_t> tileStarts(const std::vector<int32_t> &counts) {
  std::vector<int32_t> starts{0};
  for (int32_t c : counts)
    starts.push_back(starts.back() + (std::max(c, 0) + kTileM - 1) / kTileM);
  return starts;
}

/// A packed VarM GEMM like the experts' first layer: C_g = A_g·op(B_g) +
/// bias_g over counts[g] rows, A and C packed by rows, B one matrix per
/// group.
HostGemm varM(const std::vector<int32_t> &counts, int64_t rows, int64_t N,
              int64_t K, bool transB, uint32_t seed) {
  HostGemm h;
  GroupedGemm &p = h.gemm;
  const int64_t G = static_cast<int64_t>(counts.size());
  p.var = GroupedGemm::Var::M;
  p.numGroups = G;
  p.M = rows;
  p.N = N;
  p.K = K;
  h.counts = counts;
  h.tileStart = tileStarts(counts);
  h.maxTiles = (rows + kTileM - 1) / kTileM + G;
  int32_t start = 0;
  for (int32_t c : counts) {
    h.aRowStart.push_back(start);
    start += std::max(c, 0);
  }
  h.cRowStart = h.aRowStart;
  h.A = randomValues(rows * K, seed);
  p.lda = K;
  p.aRowScale = K;
  h.B = randomValues(G * K * N, seed + 1, 0.5f);
  p.transB = transB;
  p.ldb = transB ? K : N;
  p.bGroupStride = K * N;
  h.cSize = rows * N;
  p.ldc = N;
  p.cRowScale = N;
  return h;
}

} // namespace

TEST(GroupedGemmGrid, TilesOfBothKernels) {
  // Host-side: no GPU needed.
  GroupedGemm gemm;
  gemm.M = 130;
  gemm.N = 200;
  gemm.numGroups = 3;
  GroupedGemmGrid grid = groupedGemmGrid(gemm, 0);
  EXPECT_EQ(grid.x, 3); // ⌈130 / 64⌉
  EXPECT_EQ(grid.y, 4); // ⌈200 / 64⌉
  EXPECT_EQ(grid.z, 3);
  EXPECT_TRUE(grid.fits);
  gemm.precision = MathPrecision::BF16;
  grid = groupedGemmGrid(gemm, 0);
  EXPECT_EQ(grid.x, 3);
  EXPECT_EQ(grid.y, 2); // ⌈200 / 128⌉
  EXPECT_EQ(kF32TileN, 64);
  EXPECT_EQ(kBf16TileN, 128);

  // VarM: x is the flat tile bound, one z-slice.
  gemm.var = GroupedGemm::Var::M;
  grid = groupedGemmGrid(gemm, 17);
  EXPECT_EQ(grid.x, 17);
  EXPECT_EQ(grid.z, 1);
  EXPECT_FALSE(grid.empty());
  EXPECT_TRUE(groupedGemmGrid(gemm, 0).empty());

  // Nothing to compute: no launch.
  gemm.var = GroupedGemm::Var::None;
  gemm.M = 0;
  EXPECT_TRUE(groupedGemmGrid(gemm, 0).empty());
  gemm.M = 1;
  gemm.N = 0;
  EXPECT_TRUE(groupedGemmGrid(gemm, 0).empty());
  gemm.N = 1;
  gemm.numGroups = 0;
  EXPECT_TRUE(groupedGemmGrid(gemm, 0).empty());

  // Grid limits: 65535 in y and z, 2^31 − 1 in x.
  gemm.numGroups = 65536;
  EXPECT_FALSE(groupedGemmGrid(gemm, 0).fits);
  gemm.numGroups = 1;
  gemm.N = 65535LL * kBf16TileN;
  EXPECT_TRUE(groupedGemmGrid(gemm, 0).fits);
  gemm.N += 1;
  EXPECT_FALSE(groupedGemmGrid(gemm, 0).fits);
  gemm.N = 1;
  gemm.M = (int64_t{1} << 31) * kTileM;
  EXPECT_FALSE(groupedGemmGrid(gemm, 0).fits);
}

TEST(GroupedGemm, VarMWithBiasAndActivation) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  // Groups of 0, 1, 130 (3 tiles) and 77 rows, a negative count (empty),
  // rows past Σ counts; N = 200 (a partial 128 tile), K = 45 (a partial
  // k-step of 32).
  for (bool transB : {false, true}) {
    SCOPED_TRACE(transB ? "transB" : "B");
    HostGemm h = varM({0, 1, 130, -3, 77}, 260, 200, 45, transB, 11);
    h.bias = randomValues(5 * 200, 13);
    h.gemm.biasGroupStride = 200;
    h.gemm.act = MoeAct::Gelu;
    checkBothPrecisions(h);
    h.gemm.act = MoeAct::Relu;
    h.withC2 = true; // preact and act
    checkBothPrecisions(h);
  }
}

TEST(GroupedGemm, VarMManyTilesAndKSteps) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  // A group of 1000 rows (16 tiles) beside small ones, K = 300 (10 k-steps:
  // both shared-memory stages are reused several times), N = 257 (three
  // 128-wide tiles, the last one column wide).
  HostGemm h = varM({1000, 0, 37}, 1100, 257, 300, /*transB=*/false, 61);
  h.bias = randomValues(3 * 257, 63);
  h.gemm.biasGroupStride = 257;
  checkBothPrecisions(h);
}

TEST(GroupedGemm, VarMDerivativeEpilogueAndAlpha) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  HostGemm h = varM({64, 3, 0, 65}, 140, 37, 70, /*transB=*/true, 21);
  h.gemm.alpha = -0.75f;
  h.gemm.act = MoeAct::Gelu;
  h.derivOf = randomValues(h.cSize, 23, 2.0f);
  checkBothPrecisions(h);
}

TEST(GroupedGemm, VarKGivesZeroForEmptyGroups) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  // The weight gradient's form: C_g = A_gᵀ·B_g over the group's rows, K
  // varies; C has one [M, N] matrix per group.
  const std::vector<int32_t> counts = {0, 50, 97, 200};
  const int64_t rows = 160, M = 70, N = 33, G = 4;
  HostGemm h;
  GroupedGemm &p = h.gemm;
  p.var = GroupedGemm::Var::K;
  p.numGroups = G;
  p.M = M;
  p.N = N;
  p.K = rows;
  h.counts = counts; // 200 is clamped to K
  h.aRowStart = {0, 0, 50, 10};
  h.bRowStart = {5, 5, 55, 0};
  h.A = randomValues((rows + 10) * M, 31);
  p.transA = true;
  p.lda = M;
  p.aRowScale = M;
  h.B = randomValues((rows + 10) * N, 32);
  p.ldb = N;
  p.bRowScale = N;
  h.cSize = G * M * N;
  p.ldc = N;
  p.cGroupStride = M * N;
  checkBothPrecisions(h);
  h.bias = randomValues(N, 33);
  checkBothPrecisions(h); // an empty group gives the bias alone
}

TEST(GroupedGemm, FixedShapesBothTransposes) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  struct Shape {
    int64_t M, N, K;
  };
  for (Shape s : {Shape{1, 1, 1}, Shape{65, 129, 33}, Shape{64, 128, 32}}) {
    for (bool transA : {false, true})
      for (bool transB : {false, true}) {
        SCOPED_TRACE(testing::Message() << s.M << "x" << s.N << "x" << s.K
                                        << " " << transA << transB);
        HostGemm h;
        GroupedGemm &p = h.gemm;
        p.numGroups = 2;
        p.M = s.M;
        p.N = s.N;
        p.K = s.K;
        h.A = randomValues(2 * s.M * s.K, 41);
        p.transA = transA;
        p.lda = transA ? s.M : s.K;
        p.aGroupStride = s.M * s.K;
        h.B = randomValues(2 * s.K * s.N, 42);
        p.transB = transB;
        p.ldb = transB ? s.K : s.N;
        p.bGroupStride = s.K * s.N;
        h.cSize = 2 * s.M * s.N;
        p.ldc = s.N;
        p.cGroupStride = s.M * s.N;
        if (s.K >= 30) {
          checkBothPrecisions(h);
        } else {
          // Too few terms for the "it rounds" check: the references only.
          std::vector<float> exactC, exactC2, roundedC, roundedC2, C, C2;
          reference(h, h.A, h.B, exactC, exactC2);
          reference(h, roundedToBf16(h.A), roundedToBf16(h.B), roundedC,
                    roundedC2);
          run(h, MathPrecision::F32, C, C2);
          expectNear(C, exactC, 1e-5, 1e-5, "F32 C");
          run(h, MathPrecision::BF16, C, C2);
          expectNear(C, roundedC, 1e-5, 1e-5, "BF16 C");
        }
      }
  }
}
