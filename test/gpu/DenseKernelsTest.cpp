//===- DenseKernelsTest.cpp - CUDA dense kernels against the CPU backend --===//
//
// Each test runs one instruction through CpuDevice's kernels and through
// CudaDevice on the same random inputs and KernelCall, for a few shapes
// including odd sizes, and compares every output.
//
//===----------------------------------------------------------------------===//

#include "GpuTestUtil.h"

using namespace flexmoe;
using namespace flexmoe::gpu_testing;
using fb::OpAttrs;
using fb::OpCode;

namespace {

/// Runs `instruction` on both backends and compares every output.
void expectSameAsCpu(const InstructionBytes &instruction,
                     const std::vector<HostTensor> &inputs,
                     const std::vector<HostTensor> &outputShapes, double rtol,
                     double atol, const CallSettings &settings = {},
                     bool deterministic = true) {
  std::vector<HostTensor> cpuOut = outputShapes, gpuOut = outputShapes;
  Status cpu = runOnCpu(instruction.get(), inputs, cpuOut, settings);
  ASSERT_TRUE(cpu.isOk()) << "CPU: " << cpu.message();
  Status gpu =
      runOnGpu(instruction.get(), inputs, gpuOut, settings, deterministic);
  ASSERT_TRUE(gpu.isOk()) << "GPU: " << gpu.message();
  for (size_t o = 0; o < cpuOut.size(); ++o) {
    if (cpuOut[o].type == fb::ElementType::I32)
      EXPECT_EQ(cpuOut[o].i32, gpuOut[o].i32) << "output " << o;
    else
      EXPECT_TRUE(allClose(cpuOut[o].f32, gpuOut[o].f32, rtol, atol))
          << "output " << o;
  }
}

/// fp32 GEMMs sum in another order than OpenBLAS: ~k·eps of the terms.
constexpr double kGemmRtol = 1e-4, kGemmAtol = 1e-4;

AttrsFn fillAttrs(float value) {
  return [=](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateFillAttrs(b, value).Union();
  };
}

} // namespace

TEST(CudaDense, Fill) {
  FLEXMOE_REQUIRE_GPU();
  InstructionBytes ins(OpCode::Fill, OpAttrs::FillAttrs, fillAttrs(0.75f));
  CallSettings settings;
  settings.fillScale = 3.0f;
  expectSameAsCpu(ins, {}, {output({37, 3})}, 0, 0, settings);
}

TEST(CudaDense, CopyAndReshape) {
  FLEXMOE_REQUIRE_GPU();
  expectSameAsCpu(InstructionBytes(OpCode::Copy), {floats({5, 7}, 1)},
                  {output({35})}, 0, 0);
  expectSameAsCpu(InstructionBytes(OpCode::Reshape), {floats({3, 4, 5}, 2)},
                  {output({12, 5})}, 0, 0);
}

TEST(CudaDense, Scale) {
  FLEXMOE_REQUIRE_GPU();
  InstructionBytes ins(OpCode::Scale, OpAttrs::ScaleAttrs,
                       [](flatbuffers::FlatBufferBuilder &b) {
                         return fb::CreateScaleAttrs(b, -1.7f).Union();
                       });
  expectSameAsCpu(ins, {floats({1001}, 3)}, {output({1001})}, 0, 0);
}

TEST(CudaDense, AddAndMulBroadcast) {
  FLEXMOE_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> lhs, rhs, out;
  };
  for (const Case &c :
       {Case{{3, 5, 7}, {5, 1}, {3, 5, 7}}, Case{{4, 1, 6}, {3, 1}, {4, 3, 6}},
        Case{{129}, {129}, {129}}, Case{{1}, {2, 9}, {2, 9}}})
    for (OpCode op : {OpCode::Add, OpCode::Mul})
      expectSameAsCpu(InstructionBytes(op),
                      {floats(c.lhs, 4), floats(c.rhs, 5)}, {output(c.out)}, 0,
                      0);
}

TEST(CudaDense, ReduceSum) {
  FLEXMOE_REQUIRE_GPU();
  const std::vector<int64_t> shape = {6, 5, 33};
  for (std::vector<int64_t> dims :
       {std::vector<int64_t>{0}, {1}, {-1}, {0, 2}, {0, 1}, {0, 1, 2}}) {
    std::vector<int64_t> outShape;
    for (int64_t d = 0; d < 3; ++d)
      if (std::find(dims.begin(), dims.end(), d) == dims.end() &&
          std::find(dims.begin(), dims.end(), d - 3) == dims.end())
        outShape.push_back(shape[d]);
    InstructionBytes ins(
        OpCode::ReduceSum, OpAttrs::ReduceSumAttrs,
        [&](flatbuffers::FlatBufferBuilder &b) {
          return fb::CreateReduceSumAttrsDirect(b, &dims).Union();
        });
    SCOPED_TRACE(dims.size());
    expectSameAsCpu(ins, {floats(shape, 6)}, {output(outShape)}, 1e-6, 1e-6);
  }
}

TEST(CudaDense, GeluAndGrad) {
  FLEXMOE_REQUIRE_GPU();
  for (fb::GeluApproximation approximation :
       {fb::GeluApproximation::Tanh, fb::GeluApproximation::None}) {
    AttrsFn attrs = [=](flatbuffers::FlatBufferBuilder &b) {
      return fb::CreateGeluAttrs(b, approximation).Union();
    };
    expectSameAsCpu(InstructionBytes(OpCode::Gelu, OpAttrs::GeluAttrs, attrs),
                    {floats({17, 31}, 7, -4, 4)}, {output({17, 31})}, 1e-5,
                    1e-6);
    expectSameAsCpu(
        InstructionBytes(OpCode::GeluGrad, OpAttrs::GeluAttrs, attrs),
        {floats({17, 31}, 8, -4, 4), floats({17, 31}, 9)}, {output({17, 31})},
        1e-5, 1e-6);
  }
}

TEST(CudaDense, LayerNormAndGrad) {
  FLEXMOE_REQUIRE_GPU();
  AttrsFn attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateLayerNormAttrs(b, 1e-5f).Union();
  };
  for (std::vector<int64_t> shape :
       {std::vector<int64_t>{5, 37}, {3, 4, 129}, {2, 1000}}) {
    const int64_t dim = shape.back();
    expectSameAsCpu(
        InstructionBytes(OpCode::LayerNorm, OpAttrs::LayerNormAttrs, attrs),
        {floats(shape, 10, -2, 3), floats({dim}, 11), floats({dim}, 12)},
        {output(shape)}, 1e-5, 1e-5);
    expectSameAsCpu(
        InstructionBytes(OpCode::LayerNormGrad, OpAttrs::LayerNormAttrs, attrs),
        {floats(shape, 13, -2, 3), floats({dim}, 14), floats(shape, 15)},
        {output(shape), output({dim}), output({dim})}, 1e-4, 1e-5);
  }
}

TEST(CudaDense, SoftmaxAndGradOnEveryAxis) {
  FLEXMOE_REQUIRE_GPU();
  const std::vector<int64_t> shape = {3, 7, 65};
  for (int64_t axis : {-1, 0, 1}) {
    AttrsFn attrs = [=](flatbuffers::FlatBufferBuilder &b) {
      return fb::CreateSoftmaxAttrs(b, axis).Union();
    };
    SCOPED_TRACE(axis);
    expectSameAsCpu(
        InstructionBytes(OpCode::Softmax, OpAttrs::SoftmaxAttrs, attrs),
        {floats(shape, 16, -5, 5)}, {output(shape)}, 1e-5, 1e-7);
    std::vector<HostTensor> probs = {output(shape)};
    ASSERT_TRUE(
        runOnCpu(InstructionBytes(OpCode::Softmax, OpAttrs::SoftmaxAttrs, attrs)
                     .get(),
                 {floats(shape, 17, -5, 5)}, probs)
            .isOk());
    expectSameAsCpu(
        InstructionBytes(OpCode::SoftmaxGrad, OpAttrs::SoftmaxAttrs, attrs),
        {probs[0], floats(shape, 18)}, {output(shape)}, 1e-5, 1e-7);
  }
}

TEST(CudaDense, CrossEntropyAndGradWithIgnoredLabels) {
  FLEXMOE_REQUIRE_GPU();
  AttrsFn attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateCrossEntropyAttrs(b, -100).Union();
  };
  for (int64_t vocab : {int64_t{11}, int64_t{1037}}) {
    const int64_t rows = 23;
    std::vector<int32_t> labels = randomInts(rows, 19, 0, vocab);
    labels[3] = labels[10] = -100;
    HostTensor logits = floats({rows, vocab}, 20, -6, 6);
    expectSameAsCpu(InstructionBytes(OpCode::CrossEntropy,
                                     OpAttrs::CrossEntropyAttrs, attrs),
                    {logits, ints({rows}, labels)}, {output({})}, 1e-5, 1e-6);
    HostTensor dloss{{}};
    dloss.f32 = {0.37f};
    expectSameAsCpu(InstructionBytes(OpCode::CrossEntropyGrad,
                                     OpAttrs::CrossEntropyAttrs, attrs),
                    {logits, ints({rows}, labels), dloss},
                    {output({rows, vocab})}, 1e-5, 1e-8);
  }
}

TEST(CudaDense, EmbeddingAndDeterministicGrad) {
  FLEXMOE_REQUIRE_GPU();
  const int64_t vocab = 50, dim = 67, numIds = 301;
  std::vector<int32_t> ids = randomInts(numIds, 21, 0, vocab);
  expectSameAsCpu(InstructionBytes(OpCode::Embedding),
                  {ints({numIds}, ids), floats({vocab, dim}, 22)},
                  {output({numIds, dim})}, 0, 0);
  AttrsFn attrs = [=](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateEmbeddingGradAttrs(b, vocab).Union();
  };
  InstructionBytes grad(OpCode::EmbeddingGrad, OpAttrs::EmbeddingGradAttrs,
                        attrs);
  std::vector<HostTensor> inputs = {ints({numIds}, ids),
                                    floats({numIds, dim}, 23)};
  // Deterministic: the CPU's summation order, bit for bit.
  expectSameAsCpu(grad, inputs, {output({vocab, dim})}, 0, 0, {}, true);
  expectSameAsCpu(grad, inputs, {output({vocab, dim})}, 1e-5, 1e-5, {}, false);
}

TEST(CudaDense, LinearWithAndWithoutBias) {
  FLEXMOE_REQUIRE_GPU();
  struct Case {
    std::vector<int64_t> x;
    int64_t k, n;
  };
  for (const Case &c :
       {Case{{7, 13}, 13, 9}, Case{{2, 5, 64}, 64, 33}, Case{{1, 1}, 1, 1}}) {
    int64_t m = 1;
    for (int64_t d : c.x)
      m *= d;
    m /= c.k;
    expectSameAsCpu(InstructionBytes(OpCode::Linear),
                    {floats(c.x, 24), floats({c.k, c.n}, 25)},
                    {output({m, c.n})}, kGemmRtol, kGemmAtol);
    expectSameAsCpu(
        InstructionBytes(OpCode::Linear),
        {floats(c.x, 26), floats({c.k, c.n}, 27), floats({c.n}, 28)},
        {output({m, c.n})}, kGemmRtol, kGemmAtol);
    expectSameAsCpu(
        InstructionBytes(OpCode::LinearGrad),
        {floats(c.x, 29), floats({c.k, c.n}, 30), floats({m, c.n}, 31)},
        {output(c.x), output({c.k, c.n})}, kGemmRtol, kGemmAtol);
  }
}

TEST(CudaDense, MatmulTranspositionsAndBatches) {
  FLEXMOE_REQUIRE_GPU();
  const int64_t b = 3, m = 5, k = 19, n = 7;
  forEachMatmulLayout(
      b, m, k, n,
      [&](const InstructionBytes &matmul, const std::vector<int64_t> &lhs,
          const std::vector<int64_t> &rhs) {
        expectSameAsCpu(matmul, {floats(lhs, 32), floats(rhs, 33)},
                        {output({b, m, n})}, kGemmRtol, kGemmAtol);
      });
}

TEST(CudaDense, AdamWWithScheduleAndGradScale) {
  FLEXMOE_REQUIRE_GPU();
  AttrsFn attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateAdamWAttrs(b, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f).Union();
  };
  const std::vector<int64_t> shape = {33, 17};
  CallSettings settings;
  settings.step = 3;
  settings.gradScale = 0.5f;
  settings.lr = 2e-3f;
  expectSameAsCpu(
      InstructionBytes(OpCode::AdamW, OpAttrs::AdamWAttrs, attrs),
      {floats(shape, 34), floats(shape, 35), floats(shape, 36, -0.1f, 0.1f),
       floats(shape, 37, 1e-4f, 1e-2f)},
      {output(shape), output(shape), output(shape)}, 1e-6, 1e-7, settings);
}

TEST(CudaDense, TransposeFloatsAndInts) {
  FLEXMOE_REQUIRE_GPU();
  const std::vector<int64_t> shape = {3, 5, 7};
  for (std::vector<int64_t> perm :
       {std::vector<int64_t>{2, 0, 1}, {0, 2, 1}, {1, 0, 2}}) {
    AttrsFn attrs = [&](flatbuffers::FlatBufferBuilder &b) {
      return fb::CreateTransposeAttrsDirect(b, &perm).Union();
    };
    std::vector<int64_t> outShape = {shape[perm[0]], shape[perm[1]],
                                     shape[perm[2]]};
    InstructionBytes ins(OpCode::Transpose, OpAttrs::TransposeAttrs, attrs);
    expectSameAsCpu(ins, {floats(shape, 38)}, {output(outShape)}, 0, 0);
    expectSameAsCpu(ins, {ints(shape, randomInts(105, 39, -50, 50))},
                    {output(outShape, fb::ElementType::I32)}, 0, 0);
  }
}

TEST(CudaDense, RollFloatsAndInts) {
  FLEXMOE_REQUIRE_GPU();
  std::vector<int64_t> shifts = {-2, 9}, dims = {0, -1};
  AttrsFn attrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateRollAttrsDirect(b, &shifts, &dims).Union();
  };
  InstructionBytes ins(OpCode::Roll, OpAttrs::RollAttrs, attrs);
  expectSameAsCpu(ins, {floats({5, 4, 7}, 40)}, {output({5, 4, 7})}, 0, 0);
  expectSameAsCpu(ins, {ints({5, 4, 7}, randomInts(140, 41, 0, 99))},
                  {output({5, 4, 7}, fb::ElementType::I32)}, 0, 0);
}

TEST(CudaDense, DropoutDrawsTheCpuMask) {
  FLEXMOE_REQUIRE_GPU();
  AttrsFn attrs = [](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateDropoutAttrs(b, 0.3f, 1234).Union();
  };
  InstructionBytes ins(OpCode::Dropout, OpAttrs::DropoutAttrs, attrs);
  for (int64_t shard : {0, 3}) {
    CallSettings settings;
    settings.step = 5;
    settings.shard = shard;
    expectSameAsCpu(ins, {floats({1000, 3}, 42)}, {output({1000, 3})}, 0, 0,
                    settings);
  }
  CallSettings eval;
  eval.training = false;
  expectSameAsCpu(ins, {floats({77}, 43)}, {output({77})}, 0, 0, eval);
}

TEST(CudaDense, CollectivesAreErrorsNotCrashes) {
  FLEXMOE_REQUIRE_GPU();
  std::vector<HostTensor> out = {output({4})};
  Status allReduce = runOnGpu(InstructionBytes(OpCode::AllReduceSum).get(),
                              {floats({4}, 44)}, out);
  ASSERT_FALSE(allReduce.isOk());
  EXPECT_NE(allReduce.message().find("collective"), std::string::npos)
      << allReduce.message();
}
