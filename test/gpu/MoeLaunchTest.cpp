//===- MoeLaunchTest.cpp - launchMoe against the CPU backend --------------===//
//
// Runs one MoE layer's forward and backward instruction by instruction
// through launchMoe (device operands) and through the CPU backend's
// runCpuKernel (host operands) with the same KernelCall shape, and compares
// every output: this checks launchMoe's reading of operands and attributes,
// not only the kernels. Skipped without a GPU, except the operand checks,
// which fail before any CUDA call.
//
//===----------------------------------------------------------------------===//
#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/backends/cuda/CudaContext.h"
#include "test/gpu/MoeTestUtil.h"

#include <flatbuffers/flatbuffers.h>

using namespace flexmoe;
using namespace flexmoe::cuda::test;
using device::KernelCall;
using device::Operand;

namespace {

/// A host tensor: f32 or i32 values and a shape.
struct Tensor {
  std::vector<int64_t> shape;
  fb::ElementType type = fb::ElementType::F32;
  std::vector<float> f;
  std::vector<int32_t> i;

  static Tensor floats(std::vector<int64_t> shape, std::vector<float> v) {
    return {std::move(shape), fb::ElementType::F32, std::move(v), {}};
  }
  static Tensor ints(std::vector<int64_t> shape, std::vector<int32_t> v) {
    return {std::move(shape), fb::ElementType::I32, {}, std::move(v)};
  }
  /// An output to be written: sized, filled with a marker value.
  static Tensor output(std::vector<int64_t> shape,
                       fb::ElementType type = fb::ElementType::F32) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    Tensor t{std::move(shape), type, {}, {}};
    if (type == fb::ElementType::F32)
      t.f.assign(n, -777.0f);
    else
      t.i.assign(n, -777);
    return t;
  }
  size_t bytes() const { return 4 * (f.size() + i.size()); }
  void *data() {
    return type == fb::ElementType::F32 ? static_cast<void *>(f.data())
                                        : static_cast<void *>(i.data());
  }
};

Operand operandOf(Tensor &t, void *data) {
  Operand operand;
  operand.data = static_cast<std::byte *>(data);
  operand.shape = t.shape;
  operand.elementType = t.type;
  return operand;
}

/// An instruction with no buffer ids (the call carries the operands).
const fb::Instruction *instruction(flatbuffers::FlatBufferBuilder &b,
                                   fb::OpCode opcode, fb::OpAttrs attrsType,
                                   flatbuffers::Offset<void> attrs) {
  std::vector<uint32_t> none;
  b.Finish(fb::CreateInstructionDirect(b, opcode, &none, &none, 0, attrsType,
                                       attrs));
  return flatbuffers::GetRoot<fb::Instruction>(b.GetBufferPointer());
}

/// Runs the instruction on the CPU and through launchMoe; returns the CPU's
/// outputs after checking the GPU's against them.
std::vector<Tensor> runBoth(const fb::Instruction *ins,
                            std::vector<Tensor> inputs,
                            std::vector<Tensor> outputs) {
  std::vector<Tensor> cpuOut = outputs;
  KernelCall cpuCall;
  cpuCall.instruction = ins;
  for (Tensor &t : inputs)
    cpuCall.inputs.push_back(operandOf(t, t.data()));
  for (Tensor &t : cpuOut)
    cpuCall.outputs.push_back(operandOf(t, t.data()));
  Status cpuStatus = cpu::runCpuKernel(cpuCall);
  EXPECT_TRUE(cpuStatus.isOk()) << cpuStatus.message();

  TestScratch scratch;
  std::vector<void *> memory;
  auto upload = [&](Tensor &t) {
    void *p = nullptr;
    cudaMalloc(&p, t.bytes() ? t.bytes() : 4);
    cudaMemcpy(p, t.data(), t.bytes(), cudaMemcpyHostToDevice);
    memory.push_back(p);
    return p;
  };
  KernelCall gpuCall;
  gpuCall.instruction = ins;
  for (Tensor &t : inputs)
    gpuCall.inputs.push_back(operandOf(t, upload(t)));
  for (Tensor &t : outputs)
    gpuCall.outputs.push_back(operandOf(t, upload(t)));
  cuda::LaunchContext context;
  context.scratch = scratch.fn();
  Status gpuStatus = cuda::launchMoe(gpuCall, context);
  EXPECT_TRUE(gpuStatus.isOk()) << gpuStatus.message();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (size_t k = 0; k < outputs.size(); ++k) {
    Tensor &t = outputs[k];
    cudaMemcpy(t.data(), gpuCall.outputs[k].data, t.bytes(),
               cudaMemcpyDeviceToHost);
    const std::string what = "output " + std::to_string(k);
    if (t.type == fb::ElementType::F32)
      expectNear(t.f, cpuOut[k].f, 1e-3, 1e-4, what);
    else
      expectEqual(t.i, cpuOut[k].i, what);
  }
  for (void *p : memory)
    cudaFree(p);
  return cpuOut;
}

class MoeLaunchTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(MoeLaunchTest, OneLayerForwardAndBackwardMatchCpu) {
  FLEXMOE_SKIP_WITHOUT_GPU();
  const int64_t T = 50, D = 24, E = 6, K = 2, H = 20, C = GetParam();
  const int64_t N = C == 0 ? T * K : E * C;
  const float coef = 0.01f;
  using fb::OpAttrs;
  using fb::OpCode;
  auto gateAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateGateAttrs(b, K).Union();
  };
  auto auxAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateAuxLossAttrs(b, coef).Union();
  };
  auto expertsAttrs = [&](flatbuffers::FlatBufferBuilder &b) {
    return fb::CreateExpertsAttrs(b, fb::Activation::Gelu, C).Union();
  };
  Tensor x = Tensor::floats({T, D}, randomValues(T * D, 31));
  Tensor w = Tensor::floats({D, E}, randomValues(D * E, 32, 0.5f));
  Tensor w1 = Tensor::floats({E, D, H}, randomValues(E * D * H, 33, 0.3f));
  Tensor b1 = Tensor::floats({E, H}, randomValues(E * H, 34, 0.3f));
  Tensor w2 = Tensor::floats({E, H, D}, randomValues(E * H * D, 35, 0.3f));
  Tensor b2 = Tensor::floats({E, D}, randomValues(E * D, 36, 0.3f));

  flatbuffers::FlatBufferBuilder b0, b1b, b2b, b3, b4, b5, b6, b7, b8, b9;
  auto gate = runBoth(
      instruction(b0, OpCode::Gate, OpAttrs::GateAttrs, gateAttrs(b0)), {x, w},
      {Tensor::output({T, E}), Tensor::output({T, K}, fb::ElementType::I32),
       Tensor::output({T, K})});
  Tensor &probs = gate[0], &ids = gate[1], &combine = gate[2];
  runBoth(
      instruction(b1b, OpCode::AuxLoss, OpAttrs::AuxLossAttrs, auxAttrs(b1b)),
      {probs, ids}, {Tensor::output({})});
  auto dispatch = runBoth(
      instruction(b2b, OpCode::Dispatch, OpAttrs::DispatchAttrs,
                  fb::CreateDispatchAttrs(b2b, E, C).Union()),
      {x, ids},
      {Tensor::output({N, D}), Tensor::output({T, K}, fb::ElementType::I32),
       Tensor::output({E}, fb::ElementType::I32)});
  Tensor &routed = dispatch[0], &positions = dispatch[1], &counts = dispatch[2];
  auto experts = runBoth(
      instruction(b3, OpCode::Experts, OpAttrs::ExpertsAttrs, expertsAttrs(b3)),
      {routed, counts, w1, b1, w2, b2}, {Tensor::output({N, D})});
  runBoth(instruction(b4, OpCode::Combine, OpAttrs::NONE, 0),
          {experts[0], positions, combine}, {Tensor::output({T, D})});

  Tensor dy = Tensor::floats({T, D}, randomValues(T * D, 37));
  auto combineGrad =
      runBoth(instruction(b5, OpCode::CombineGrad, OpAttrs::NONE, 0),
              {experts[0], positions, combine, dy},
              {Tensor::output({N, D}), Tensor::output({T, K})});
  auto expertsGrad =
      runBoth(instruction(b6, OpCode::ExpertsGrad, OpAttrs::ExpertsAttrs,
                          expertsAttrs(b6)),
              {routed, counts, w1, b1, w2, b2, combineGrad[0]},
              {Tensor::output({N, D}), Tensor::output({E, D, H}),
               Tensor::output({E, H}), Tensor::output({E, H, D}),
               Tensor::output({E, D})});
  runBoth(instruction(b7, OpCode::DispatchGrad, OpAttrs::NONE, 0),
          {expertsGrad[0], positions}, {Tensor::output({T, D})});
  auto auxGrad = runBoth(
      instruction(b8, OpCode::AuxLossGrad, OpAttrs::AuxLossAttrs, auxAttrs(b8)),
      {probs, ids, Tensor::floats({}, {1.0f})}, {Tensor::output({T, E})});
  runBoth(instruction(b9, OpCode::GateGrad, OpAttrs::GateAttrs, gateAttrs(b9)),
          {x, w, probs, ids, combineGrad[1], auxGrad[0]},
          {Tensor::output({T, D}), Tensor::output({D, E})});
}

INSTANTIATE_TEST_SUITE_P(Capacity, MoeLaunchTest,
                         ::testing::Values(int64_t{0}, int64_t{12},
                                           int64_t{30}));

TEST(MoeLaunchErrors, OperandCountAndTypeAreChecked) {
  // Fails before any CUDA call: no GPU needed.
  flatbuffers::FlatBufferBuilder b;
  const fb::Instruction *ins =
      instruction(b, fb::OpCode::Combine, fb::OpAttrs::NONE, 0);
  Tensor rows = Tensor::floats({4, 2}, std::vector<float>(8, 1.0f));
  Tensor positions = Tensor::floats({2, 1}, {0.0f, 1.0f}); // f32: wrong
  Tensor weights = Tensor::floats({2, 1}, {1.0f, 1.0f});
  Tensor y = Tensor::output({2, 2});
  TestScratch scratch;
  cuda::LaunchContext context;
  context.scratch = scratch.fn();
  KernelCall call;
  call.instruction = ins;
  call.inputs = {operandOf(rows, rows.data()),
                 operandOf(positions, positions.data())};
  call.outputs = {operandOf(y, y.data())};
  Status missing = cuda::launchMoe(call, context);
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.message(), "moe.combine: 2 inputs, expected 3");
  call.inputs.push_back(operandOf(weights, weights.data()));
  Status type = cuda::launchMoe(call, context);
  ASSERT_FALSE(type.isOk());
  EXPECT_NE(type.message().find("moe.combine: inputs 1 ('') is f32, "
                                "expected i32"),
            std::string::npos)
      << type.message();
}

} // namespace
