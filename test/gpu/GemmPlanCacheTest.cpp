//===- GemmPlanCacheTest.cpp - cached cuBLASLt plans on one stream --------===//
//
// A stream caches each GEMM shape's cuBLASLt plan (descriptor, layouts,
// algorithm) and sets the bias pointer on the cached descriptor per call
// (DenseGemm.cpp). These tests run sequences of nn.linear, nn.linear_grad
// and nn.matmul on one stream, shapes interleaved so that plans are made
// and reused (with and without a bias, operands at other alignments, shapes
// that differ only in their transposes, new data and new addresses each
// run), compare every result with the CPU backend, and check that repeated
// runs give identical bits: on the same stream (cached plans), and in F32
// on a new stream too (plans made afresh, as the uncached path did).
//
//===----------------------------------------------------------------------===//

#include "Bf16TestUtil.h"

#include <cstdint>
#include <cstring>
#include <string>

using namespace flexmoe;
using namespace flexmoe::gpu_testing;
using fb::OpAttrs;
using fb::OpCode;

namespace {

/// One launch of a sequence.
struct Step {
  Step(std::string name, InstructionBytes instruction)
      : name(std::move(name)), instruction(std::move(instruction)) {}

  std::string name;
  InstructionBytes instruction;
  std::vector<HostTensor> inputs;
  /// Output shapes, filled with the marker the GEMM must overwrite.
  std::vector<HostTensor> outputs;
  /// GpuRunner::run's byte shifts: alignment (below 256) or place (256s).
  std::vector<size_t> shifts;
  /// The index of an earlier step of the same sequence that had the same
  /// shape, data and alignments, whose outputs this one must equal bit for
  /// bit (-1: none).
  int sameAs = -1;
};

/// Matrix operands: bf16-exact for BF16 (so the GPU's rounding changes
/// nothing and only the summation order differs from the CPU).
HostTensor matrix(bool bf16, std::vector<int64_t> shape, uint32_t seed) {
  return bf16 ? bf16Floats(std::move(shape), seed)
              : floats(std::move(shape), seed);
}

InstructionBytes matmulInstruction(bool transposeLhs, bool transposeRhs) {
  return InstructionBytes(
      OpCode::Matmul, OpAttrs::MatmulAttrs,
      [=](flatbuffers::FlatBufferBuilder &b) {
        return fb::CreateMatmulAttrs(b, transposeLhs, transposeRhs).Union();
      });
}

Step linear(std::string name, bool bf16, int64_t m, int64_t k, int64_t n,
            bool bias, uint32_t seed, std::vector<size_t> shifts = {}) {
  Step step{std::move(name), InstructionBytes(OpCode::Linear)};
  step.inputs = {matrix(bf16, {m, k}, seed), matrix(bf16, {k, n}, seed + 1)};
  if (bias)
    step.inputs.push_back(floats({n}, seed + 2));
  step.outputs = {output({m, n})};
  step.shifts = std::move(shifts);
  return step;
}

/// A batched matmul, rhs batched too: out[b] = op(lhs[b]) · op(rhs[b]).
Step batchedMatmul(std::string name, bool bf16, int64_t batch, int64_t m,
                   int64_t k, int64_t n, bool transposeLhs, bool transposeRhs,
                   uint32_t seed) {
  Step step{std::move(name), matmulInstruction(transposeLhs, transposeRhs)};
  step.inputs = {matrix(bf16,
                        transposeLhs ? std::vector<int64_t>{batch, k, m}
                                     : std::vector<int64_t>{batch, m, k},
                        seed),
                 matrix(bf16,
                        transposeRhs ? std::vector<int64_t>{batch, n, k}
                                     : std::vector<int64_t>{batch, k, n},
                        seed + 1)};
  step.outputs = {output({batch, m, n})};
  return step;
}

/// Plans made, reused and told apart: every step's key differs from the
/// steps before it in one thing at most (data, bias, alignment, transposes),
/// and some steps repeat an earlier one exactly.
std::vector<Step> interleavedSequence(bool bf16) {
  std::vector<Step> steps;
  // 0: a plan is made.
  steps.push_back(linear("linear 7x13x9", bf16, 7, 13, 9, false, 100));
  // 1: the same shape with a bias: another epilogue, another plan.
  steps.push_back(linear("linear 7x13x9 + bias", bf16, 7, 13, 9, true, 110));
  // 2: a batched matmul between the reuses.
  steps.push_back(batchedMatmul("matmul 3x(5x19·(7x19)^T)", bf16, 3, 5, 19, 7,
                                false, true, 120));
  // 3: step 0's plan, new data.
  steps.push_back(
      linear("linear 7x13x9, new data", bf16, 7, 13, 9, false, 130));
  // 4: step 1's plan, new data and a bias 512 bytes further on: a stale
  // bias pointer on the cached descriptor would read the old one (or freed
  // memory), even where the new arena lands where the old one was.
  steps.push_back(linear("linear 7x13x9 + moved bias, new data", bf16, 7, 13, 9,
                         true, 140, {0, 0, 512}));
  // 5, 6: x, then the output, less aligned (4 and 8 bytes): new plans.
  steps.push_back(
      linear("linear 7x13x9, x at +4 bytes", bf16, 7, 13, 9, false, 150, {4}));
  steps.push_back(linear("linear 7x13x9, out at +8 bytes", bf16, 7, 13, 9,
                         false, 160, {0, 0, 8}));
  // 7: a wider shape with a bias.
  steps.push_back(
      linear("linear 10x64x33 + bias", bf16, 10, 64, 33, true, 170));
  // 8-11: the same data and sizes, only the transposes differ.
  for (bool transposeLhs : {false, true})
    for (bool transposeRhs : {false, true})
      steps.push_back(batchedMatmul(
          std::string("matmul 2x8x8x8 ") + (transposeLhs ? "T" : "N") +
              (transposeRhs ? "T" : "N"),
          bf16, 2, 8, 8, 8, transposeLhs, transposeRhs, 180));
  // 12: step 1 exactly, after step 4 moved the bias pointer of their shared
  // plan: the pointer must follow the call.
  steps.push_back(
      linear("linear 7x13x9 + bias, step 1's data", bf16, 7, 13, 9, true, 110));
  steps.back().sameAs = 1;
  // 13: both GEMMs of the gradient (transposed operands).
  {
    Step grad{"linear_grad 7x13x9", InstructionBytes(OpCode::LinearGrad)};
    grad.inputs = {matrix(bf16, {7, 13}, 190), matrix(bf16, {13, 9}, 191),
                   matrix(bf16, {7, 9}, 192)};
    grad.outputs = {output({7, 13}), output({13, 9})};
    steps.push_back(std::move(grad));
  }
  // 14: step 0 exactly, after everything above.
  steps.push_back(
      linear("linear 7x13x9, step 0's data", bf16, 7, 13, 9, false, 100));
  steps.back().sameAs = 0;
  // 15: step 2's plan, new data.
  steps.push_back(batchedMatmul("matmul 3x(5x19·(7x19)^T), new data", bf16, 3,
                                5, 19, 7, false, true, 200));
  // 16: step 7's plan with a moved bias, new data.
  steps.push_back(linear("linear 10x64x33 + moved bias, new data", bf16, 10, 64,
                         33, true, 210, {0, 0, 256}));
  // 17: 1x1x1, then step 5 exactly (the +4 plan again).
  steps.push_back(linear("linear 1x1x1 + bias", bf16, 1, 1, 1, true, 220));
  steps.push_back(
      linear("linear 7x13x9, x at +4 bytes", bf16, 7, 13, 9, false, 150, {4}));
  steps.back().sameAs = 5;
  return steps;
}

/// Every float of `actual` has the bits of `expected`'s.
::testing::AssertionResult sameBits(const std::vector<float> &expected,
                                    const std::vector<float> &actual) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure()
           << "sizes differ: " << expected.size() << " vs " << actual.size();
  for (size_t i = 0; i < expected.size(); ++i)
    if (std::memcmp(&expected[i], &actual[i], sizeof(float)) != 0)
      return ::testing::AssertionFailure()
             << "element " << i << " differs: " << expected[i] << " vs "
             << actual[i];
  return ::testing::AssertionSuccess();
}

/// Runs the steps in order on `runner`'s stream; returns their outputs (an
/// empty list after a failed run, which fails the test).
std::vector<std::vector<HostTensor>> runAll(GpuRunner &runner,
                                            const std::vector<Step> &steps) {
  std::vector<std::vector<HostTensor>> results;
  for (const Step &step : steps) {
    std::vector<HostTensor> outputs = step.outputs;
    Status status = runner.run(step.instruction.get(), step.inputs, outputs, {},
                               step.shifts);
    EXPECT_TRUE(status.isOk()) << step.name << ": " << status.message();
    if (!status.isOk())
      return {};
    results.push_back(std::move(outputs));
  }
  return results;
}

/// Each step's outputs against the CPU within `rel` of their rms, and
/// against its `sameAs` step's bit for bit.
void expectMatchesCpu(const std::vector<Step> &steps,
                      const std::vector<std::vector<HostTensor>> &results,
                      double rel) {
  ASSERT_EQ(results.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step &step = steps[i];
    SCOPED_TRACE(step.name);
    std::vector<HostTensor> cpu = step.outputs;
    Status status = runOnCpu(step.instruction.get(), step.inputs, cpu);
    ASSERT_TRUE(status.isOk()) << "CPU: " << status.message();
    ASSERT_EQ(results[i].size(), cpu.size());
    for (size_t o = 0; o < cpu.size(); ++o) {
      EXPECT_TRUE(closeRelativeToRms(cpu[o].f32, results[i][o].f32, rel))
          << "output " << o;
      if (step.sameAs >= 0) {
        EXPECT_TRUE(sameBits(results[step.sameAs][o].f32, results[i][o].f32))
            << "output " << o << " against step " << step.sameAs;
      }
    }
  }
}

void expectSameBits(const std::vector<Step> &steps,
                    const std::vector<std::vector<HostTensor>> &first,
                    const std::vector<std::vector<HostTensor>> &second,
                    const char *what) {
  ASSERT_EQ(first.size(), steps.size());
  ASSERT_EQ(second.size(), steps.size());
  for (size_t i = 0; i < steps.size(); ++i)
    for (size_t o = 0; o < first[i].size(); ++o)
      EXPECT_TRUE(sameBits(first[i][o].f32, second[i][o].f32))
          << steps[i].name << ", output " << o << ": " << what;
}

/// fp32 GEMMs differ from OpenBLAS by the summation order: ~k·2^-24 of the
/// terms; 1e-4 of the rms leaves a wide margin and still catches any wrong
/// term, transpose or bias (each ~1e-1 of the rms or more here).
constexpr double kF32Rel = 1e-4;
/// BF16 on bf16-exact operands: the summation order only (Bf16GemmTest's
/// kExactOperandsRel).
constexpr double kBf16Rel = 1e-3;

} // namespace

TEST(GemmPlanCache, F32InterleavedShapesMatchCpuAndRepeatBitForBit) {
  FLEXMOE_REQUIRE_GPU();
  cuda::CudaDeviceOptions options;
  options.deterministic = true;
  StatusOr<GpuRunner> runner = GpuRunner::create(options);
  ASSERT_TRUE(runner.isOk()) << runner.status().message();
  const std::vector<Step> steps = interleavedSequence(/*bf16=*/false);

  const std::vector<std::vector<HostTensor>> first = runAll(*runner, steps);
  expectMatchesCpu(steps, first, kF32Rel);
  // Every plan is cached now: the same sequence again, from the cache.
  const std::vector<std::vector<HostTensor>> again = runAll(*runner, steps);
  expectSameBits(steps, first, again, "second run on the same stream");
  // A new stream makes every plan afresh, as each call did before plans
  // were cached: F32 results must not change.
  StatusOr<GpuRunner> fresh = GpuRunner::create(options);
  ASSERT_TRUE(fresh.isOk()) << fresh.status().message();
  const std::vector<std::vector<HostTensor>> afresh = runAll(*fresh, steps);
  expectSameBits(steps, first, afresh, "run on a new stream");
}

TEST(GemmPlanCache, Bf16InterleavedShapesMatchCpuAndRepeatBitForBit) {
  FLEXMOE_REQUIRE_GPU();
  StatusOr<GpuRunner> runner = GpuRunner::create(bf16Options());
  ASSERT_TRUE(runner.isOk()) << runner.status().message();
  const std::vector<Step> steps = interleavedSequence(/*bf16=*/true);

  const std::vector<std::vector<HostTensor>> first = runAll(*runner, steps);
  expectMatchesCpu(steps, first, kBf16Rel);
  // Cached plans pin the algorithm: a rerun on the stream repeats the bits.
  const std::vector<std::vector<HostTensor>> again = runAll(*runner, steps);
  expectSameBits(steps, first, again, "second run on the same stream");
}

TEST(GemmPlanCache, MoreShapesThanTheCacheHoldsStayCorrect) {
  FLEXMOE_REQUIRE_GPU();
  StatusOr<GpuRunner> runner = GpuRunner::create(cuda::CudaDeviceOptions{});
  ASSERT_TRUE(runner.isOk()) << runner.status().message();
  // 300 shapes (the cache holds 256 and is emptied when full), every other
  // one with a bias, then the first ones again: their plans were dropped and
  // are made anew.
  std::vector<Step> steps;
  for (int64_t k = 1; k <= 300; ++k)
    steps.push_back(linear("linear 3x" + std::to_string(k) + "x5", false, 3, k,
                           5, k % 2 == 1, static_cast<uint32_t>(1000 + 3 * k)));
  for (int i = 0; i < 3; ++i) {
    Step repeat = steps[i];
    repeat.name += ", again";
    repeat.sameAs = i;
    steps.push_back(std::move(repeat));
  }
  expectMatchesCpu(steps, runAll(*runner, steps), kF32Rel);
}
