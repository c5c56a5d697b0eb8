//===- Bf16GemmTest.cpp - BF16 GEMM ops against the CPU backend -----------===//
//
// Every GEMM op of a CudaDevice created with MathPrecision::BF16 (nn.linear,
// nn.linear_grad, nn.matmul through cuBLASLt; moe.experts and
// moe.experts_grad through the WMMA grouped GEMM), against the fp32 CPU
// backend run on inputs that are already bfloat16 values. Rounding such an
// input to bf16 changes nothing, and a product of two bf16 values is exact in
// fp32, so the GEMMs whose operands are all inputs differ from the CPU only
// by the fp32 summation order. The experts round intermediates the CPU keeps
// in fp32 (the hidden activation, the backward's dAct): those outputs get a
// bf16-sized tolerance.
//
//===----------------------------------------------------------------------===//

#include "Bf16TestUtil.h"

using namespace flexmoe;
using namespace flexmoe::gpu_testing;
using fb::OpAttrs;
using fb::OpCode;

namespace {

/// GEMMs whose operands are all bf16-exact inputs: fp32 summation order
/// only, ~k·2^-24 of the sum of |terms|; 1e-3 of the output's rms leaves a
/// wide margin and still catches any wrong term (each is ~1e-2 of the rms
/// or more at these sizes).
constexpr double kExactOperandsRel = 1e-3;
/// Outputs whose GEMM reads an fp32 intermediate the GPU rounds to bf16
/// (relative error up to 2^-9 ≈ 2e-3 per term, random in sign): their
/// error is a few 1e-3 of the rms; a wrong term, transpose or group is far
/// beyond 1e-2.
constexpr double kRoundedIntermediateRel = 1e-2;

/// Runs the instruction on the CPU (fp32) and on a BF16 CudaDevice and
/// compares each float output within rel[o] of its rms (integer outputs
/// exactly); returns the CPU's outputs.
std::vector<HostTensor>
expectBf16MatchesCpu(const InstructionBytes &instruction,
                     const std::vector<HostTensor> &inputs,
                     const std::vector<HostTensor> &outputShapes,
                     const std::vector<double> &rel) {
  std::vector<HostTensor> cpuOut = outputShapes, gpuOut = outputShapes;
  Status cpu = runOnCpu(instruction.get(), inputs, cpuOut);
  EXPECT_TRUE(cpu.isOk()) << "CPU: " << cpu.message();
  Status gpu = runOnGpu(bf16Options(), instruction.get(), inputs, gpuOut);
  EXPECT_TRUE(gpu.isOk()) << "GPU: " << gpu.message();
  EXPECT_EQ(rel.size(), cpuOut.size());
  if (!cpu.isOk() || !gpu.isOk() || rel.size() != cpuOut.size())
    return cpuOut;
  for (size_t o = 0; o < cpuOut.size(); ++o) {
    if (cpuOut[o].type == fb::ElementType::I32)
      EXPECT_EQ(cpuOut[o].i32, gpuOut[o].i32) << "output " << o;
    else
      EXPECT_TRUE(closeRelativeToRms(cpuOut[o].f32, gpuOut[o].f32, rel[o]))
          << "output " << o;
  }
  return cpuOut;
}

int64_t product(const std::vector<int64_t> &shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

} // namespace

TEST(Bf16Rounding, NearestEvenLikeTheGpu) {
  // Runs without a GPU: the host rounding the tests rely on.
  EXPECT_EQ(roundToBf16(1.0f), 1.0f);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(roundToBf16(1.0f + 0x1p-8f), 1.0f);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
  EXPECT_EQ(roundToBf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  EXPECT_EQ(roundToBf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_EQ(roundToBf16(-1.0f - 0x1p-8f - 0x1p-20f), -1.0f - 0x1p-7f);
  EXPECT_TRUE(std::isnan(roundToBf16(NAN)));
  EXPECT_EQ(roundToBf16(INFINITY), INFINITY);
  for (float v : randomFloats(1000, 5)) {
    const float r = roundToBf16(v);
    EXPECT_LE(std::fabs(r - v), std::fabs(v) * 0x1p-8f) << v;
    EXPECT_EQ(roundToBf16(r), r) << v;
  }
}

TEST(Bf16Dense, LinearWithAndWithoutBiasAndItsGradient) {
  FLEXMOE_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> x;
    int64_t k, n;
  };
  for (const Case &c : {Case{{7, 13}, 13, 9}, Case{{2, 5, 64}, 64, 33},
                        Case{{1, 1}, 1, 1}, Case{{3, 67, 129}, 129, 71}}) {
    const int64_t m = product(c.x) / c.k;
    SCOPED_TRACE(testing::Message()
                 << "m " << m << " k " << c.k << " n " << c.n);
    expectBf16MatchesCpu(InstructionBytes(OpCode::Linear),
                         {bf16Floats(c.x, 24), bf16Floats({c.k, c.n}, 25)},
                         {output({m, c.n})}, {kExactOperandsRel});
    expectBf16MatchesCpu(
        InstructionBytes(OpCode::Linear),
        {bf16Floats(c.x, 26), bf16Floats({c.k, c.n}, 27), floats({c.n}, 28)},
        {output({m, c.n})}, {kExactOperandsRel});
    expectBf16MatchesCpu(InstructionBytes(OpCode::LinearGrad),
                         {bf16Floats(c.x, 29), bf16Floats({c.k, c.n}, 30),
                          bf16Floats({m, c.n}, 31)},
                         {output(c.x), output({c.k, c.n})},
                         {kExactOperandsRel, kExactOperandsRel});
  }
}

TEST(Bf16Dense, MatmulTranspositionsAndBatches) {
  FLEXMOE_REQUIRE_GPU();
  const int64_t b = 3, m = 37, k = 45, n = 19;
  forEachMatmulLayout(
      b, m, k, n,
      [&](const InstructionBytes &matmul, const std::vector<int64_t> &lhs,
          const std::vector<int64_t> &rhs) {
        expectBf16MatchesCpu(matmul, {bf16Floats(lhs, 32), bf16Floats(rhs, 33)},
                             {output({b, m, n})}, {kExactOperandsRel});
      });
}

namespace {

struct ExpertsCase {
  const char *name;
  int64_t rows, dim, hidden, capacity;
  std::vector<int32_t> counts;
  fb::Activation activation;
};

void PrintTo(const ExpertsCase &c, std::ostream *os) { *os << c.name; }

class Bf16Experts : public ::testing::TestWithParam<ExpertsCase> {};

} // namespace

TEST_P(Bf16Experts, ForwardAndBackwardMatchCpu) {
  FLEXMOE_REQUIRE_GPU();
  const ExpertsCase &c = GetParam();
  const int64_t N = c.rows, D = c.dim, H = c.hidden;
  const int64_t G = static_cast<int64_t>(c.counts.size());
  AttrsFn attrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateExpertsAttrs(b, c.activation, c.capacity).Union();
  };
  // Weights in ±0.5 keep the activations O(1) at these widths.
  std::vector<HostTensor> inputs = {bf16Floats({N, D}, 41),
                                    ints({G}, c.counts),
                                    bf16Floats({G, D, H}, 42, -0.5f, 0.5f),
                                    floats({G, H}, 43),
                                    bf16Floats({G, H, D}, 44, -0.5f, 0.5f),
                                    floats({G, D}, 45)};
  // out = act(x·w1 + b1)·w2 + b2: the second GEMM reads the hidden
  // activation, rounded to bf16 on the GPU only.
  expectBf16MatchesCpu(
      InstructionBytes(OpCode::Experts, OpAttrs::ExpertsAttrs, attrs), inputs,
      {output({N, D})}, {kRoundedIntermediateRel});

  inputs.push_back(bf16Floats({N, D}, 46));
  // dRouted = dAct·w1ᵀ and dw1 = xᵀ·dAct read dAct (rounded on the GPU);
  // dw2 = hᵀ·dy reads the hidden activation; db1 sums dAct in fp32 (dAct's
  // own GEMM has exact operands, but its act' reads a preact whose sum
  // order differs); db2 sums dy (exact inputs).
  expectBf16MatchesCpu(
      InstructionBytes(OpCode::ExpertsGrad, OpAttrs::ExpertsAttrs, attrs),
      inputs,
      {output({N, D}), output({G, D, H}), output({G, H}), output({G, H, D}),
       output({G, D})},
      {kRoundedIntermediateRel, kRoundedIntermediateRel, kExactOperandsRel,
       kRoundedIntermediateRel, kExactOperandsRel});
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, Bf16Experts,
    ::testing::Values(
        // Packed: groups of 0, 1, 150 (3 row tiles) and 70 rows, rows past
        // Σ counts; H = 150 spans two 128-wide tiles, D = 45 a partial one
        // and two k-steps of 32 (one partial).
        ExpertsCase{"PackedGelu",
                    300,
                    45,
                    150,
                    0,
                    {0, 1, 150, 70, 40},
                    fb::Activation::Gelu},
        ExpertsCase{"PackedRelu",
                    97,
                    33,
                    17,
                    0,
                    {5, 0, 64, 0}, // 64: 1 tile
                    fb::Activation::Relu},
        // Capacity layout: a full group, an empty one, a partial one.
        ExpertsCase{
            "CapacityGelu", 210, 40, 72, 70, {70, 0, 33}, fb::Activation::Gelu},
        // One row, one column: every tile is mostly padding.
        ExpertsCase{"Tiny", 1, 1, 1, 0, {1}, fb::Activation::Relu}),
    [](const ::testing::TestParamInfo<ExpertsCase> &info) {
      return std::string(info.param.name);
    });

TEST(Bf16Gate, StaysFp32) {
  FLEXMOE_REQUIRE_GPU();
  // The gate's GEMMs stay fp32 in BF16 mode (routing is discrete): on
  // inputs that are not bf16 values, the same expert ids as the CPU and
  // fp32 tolerances (1e-4 of the rms; rounding x and w to bf16 would move
  // the logits, and so probs and gradients, by ~1e-3).
  const int64_t T = 77, D = 45, E = 7, K = 2;
  AttrsFn attrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateGateAttrs(b, K).Union();
  };
  const HostTensor x = floats({T, D}, 51), w = floats({D, E}, 52);
  std::vector<HostTensor> gate = expectBf16MatchesCpu(
      InstructionBytes(OpCode::Gate, OpAttrs::GateAttrs, attrs), {x, w},
      {output({T, E}), output({T, K}, fb::ElementType::I32), output({T, K})},
      {1e-4, 0, 1e-4});
  ASSERT_EQ(gate.size(), 3u);
  expectBf16MatchesCpu(
      InstructionBytes(OpCode::GateGrad, OpAttrs::GateAttrs, attrs),
      {x, w, gate[0], gate[1], floats({T, K}, 53), floats({T, E}, 54)},
      {output({T, D}), output({D, E})}, {1e-4, 1e-4});
}
