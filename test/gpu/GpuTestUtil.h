//===- GpuTestUtil.h - helpers of the CUDA backend tests --------*- C++ -*-===//
//
// Skips a test where no CUDA device answers, fills inputs with seeded random
// values (never all zeros), runs one instruction through the CPU backend and
// the CUDA backend with the same KernelCall (once on a new device, or one
// after another on one stream: GpuRunner), and compares the outputs with a
// relative + absolute tolerance, naming the worst element.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_GPU_GPUTESTUTIL_H
#define FLEXMOE_TEST_GPU_GPUTESTUTIL_H

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/backends/cuda/CudaDevice.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace flexmoe::gpu_testing {

/// True when the CUDA runtime reports at least one device.
inline bool gpuPresent() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

#define FLEXMOE_REQUIRE_GPU()                                                  \
  do {                                                                         \
    if (!::flexmoe::gpu_testing::gpuPresent())                                 \
      GTEST_SKIP() << "no CUDA device";                                        \
  } while (false)

/// Uniform in [lo, hi), nudged away from zero so no element is exactly 0.
inline std::vector<float> randomFloats(size_t n, uint32_t seed,
                                       float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(lo, hi);
  std::vector<float> values(n);
  for (float &v : values) {
    v = uniform(generator);
    if (v == 0.0f)
      v = 0.5f * (hi - lo) / 1024;
  }
  return values;
}

inline std::vector<int32_t> randomInts(size_t n, uint32_t seed, int32_t lo,
                                       int32_t hi) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> uniform(lo, hi - 1);
  std::vector<int32_t> values(n);
  for (int32_t &v : values)
    v = uniform(generator);
  return values;
}

/// |actual − expected| ≤ atol + rtol·|expected| everywhere; otherwise names
/// the worst element and how many failed.
inline ::testing::AssertionResult allClose(const std::vector<float> &expected,
                                           const std::vector<float> &actual,
                                           double rtol, double atol) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure()
           << "sizes differ: " << expected.size() << " vs " << actual.size();
  size_t bad = 0, worst = 0;
  double worstExcess = -1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    const double allowed = atol + rtol * std::fabs(e);
    const double excess =
        std::isnan(a) != std::isnan(e) ? INFINITY : std::fabs(a - e) - allowed;
    if (excess > 0 || (std::isnan(a) && !std::isnan(e))) {
      ++bad;
      if (excess > worstExcess) {
        worstExcess = excess;
        worst = i;
      }
    }
  }
  if (bad == 0)
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << expected.size() << " elements differ; worst at "
         << worst << ": expected " << expected[worst] << ", got "
         << actual[worst] << " (rtol " << rtol << ", atol " << atol << ")";
}

/// One operand of a test: its shape and its host data (f32 or i32).
struct HostTensor {
  std::vector<int64_t> shape;
  fb::ElementType type = fb::ElementType::F32;
  std::vector<float> f32;
  std::vector<int32_t> i32;

  int64_t numElements() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
  size_t numBytes() const { return static_cast<size_t>(numElements()) * 4; }
  void *data() {
    return type == fb::ElementType::I32 ? static_cast<void *>(i32.data())
                                        : static_cast<void *>(f32.data());
  }
  const void *data() const { return const_cast<HostTensor *>(this)->data(); }
};

inline HostTensor floats(std::vector<int64_t> shape, uint32_t seed,
                         float lo = -1.0f, float hi = 1.0f) {
  HostTensor t{std::move(shape)};
  t.f32 = randomFloats(t.numElements(), seed, lo, hi);
  return t;
}

inline HostTensor ints(std::vector<int64_t> shape,
                       std::vector<int32_t> values) {
  HostTensor t{std::move(shape), fb::ElementType::I32};
  t.i32 = std::move(values);
  return t;
}

/// An output of `shape` and `type`, filled with a marker the kernels must
/// overwrite.
inline HostTensor output(std::vector<int64_t> shape,
                         fb::ElementType type = fb::ElementType::F32) {
  HostTensor t{std::move(shape), type};
  if (type == fb::ElementType::I32)
    t.i32.assign(t.numElements(), -7);
  else
    t.f32.assign(t.numElements(), 12345.0f);
  return t;
}

using AttrsFn =
    std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder &)>;

/// One serialised fb::Instruction (the kernels read only its opcode and
/// attributes).
class InstructionBytes {
public:
  InstructionBytes(fb::OpCode opcode, fb::OpAttrs attrsType = fb::OpAttrs::NONE,
                   const AttrsFn &attrs = nullptr) {
    flatbuffers::FlatBufferBuilder builder;
    flatbuffers::Offset<void> attrsOffset = attrs ? attrs(builder) : 0;
    fb::InstructionBuilder instruction(builder);
    instruction.add_opcode(opcode);
    instruction.add_moe_layer(-1);
    if (attrs) {
      instruction.add_attrs_type(attrsType);
      instruction.add_attrs(attrsOffset);
    }
    builder.Finish(instruction.Finish());
    bytes_.assign(builder.GetBufferPointer(),
                  builder.GetBufferPointer() + builder.GetSize());
  }
  const fb::Instruction *get() const {
    return flatbuffers::GetRoot<fb::Instruction>(bytes_.data());
  }

private:
  std::vector<uint8_t> bytes_;
};

/// The KernelCall fields besides the instruction and the operands.
struct CallSettings {
  int64_t step = 1;
  int64_t shard = 0;
  bool training = true;
  float gradScale = 1.0f;
  float lr = 0.0f;
  float fillScale = 1.0f;
};

inline device::KernelCall makeCall(const fb::Instruction *instruction,
                                   const CallSettings &settings) {
  device::KernelCall call;
  call.instruction = instruction;
  call.step = settings.step;
  call.shard = settings.shard;
  call.training = settings.training;
  call.gradScale = settings.gradScale;
  call.lr = settings.lr;
  call.fillScale = settings.fillScale;
  return call;
}

inline device::Operand operandOf(const HostTensor &t, std::byte *data,
                                 uint32_t id) {
  device::Operand operand;
  operand.data = data;
  operand.shape = t.shape;
  operand.elementType = t.type;
  operand.id = id;
  operand.name = "operand";
  return operand;
}

/// Runs the instruction on the CPU backend; `outputs` receive the results.
inline Status runOnCpu(const fb::Instruction *instruction,
                       std::vector<HostTensor> inputs,
                       std::vector<HostTensor> &outputs,
                       const CallSettings &settings = {}) {
  device::KernelCall call = makeCall(instruction, settings);
  uint32_t id = 0;
  for (HostTensor &t : inputs)
    call.inputs.push_back(
        operandOf(t, static_cast<std::byte *>(t.data()), id++));
  for (HostTensor &t : outputs)
    call.outputs.push_back(
        operandOf(t, static_cast<std::byte *>(t.data()), id++));
  return cpu::runCpuKernel(call);
}

/// One CudaDevice and one of its streams, running instructions one after
/// another: what a stream keeps between launches (its cached GEMM plans)
/// carries over from run to run, as in a training step.
class GpuRunner {
public:
  static StatusOr<GpuRunner> create(const cuda::CudaDeviceOptions &options) {
    StatusOr<std::unique_ptr<cuda::CudaDevice>> device =
        cuda::CudaDevice::create(options);
    if (!device)
      return device.status();
    StatusOr<std::unique_ptr<device::Stream>> stream =
        (*device)->createStream();
    if (!stream)
      return stream.status();
    GpuRunner runner;
    runner.device_ = std::move(*device);
    runner.stream_ = std::move(*stream);
    return runner;
  }

  /// Uploads inputs and outputs into a fresh arena, launches the
  /// instruction on the stream, synchronises and downloads `outputs`.
  /// Operand i (inputs, then outputs) starts `byteShifts[i]` bytes (a
  /// multiple of 4; missing entries are 0) past where it would: below 256
  /// to test a less aligned operand, a multiple of 256 to move it alone.
  Status run(const fb::Instruction *instruction,
             const std::vector<HostTensor> &inputs,
             std::vector<HostTensor> &outputs,
             const CallSettings &settings = {},
             const std::vector<size_t> &byteShifts = {}) {
    if (byteShifts.size() > inputs.size() + outputs.size())
      return Status::error("more byte shifts than operands");
    for (size_t shift : byteShifts)
      if (shift % 4 != 0)
        return Status::error("a byte shift must be a multiple of 4");
    std::vector<size_t> offsets;
    size_t total = 0;
    const std::vector<HostTensor> *lists[] = {&inputs, &outputs};
    for (const std::vector<HostTensor> *list : lists)
      for (const HostTensor &t : *list) {
        const size_t shift =
            offsets.size() < byteShifts.size() ? byteShifts[offsets.size()] : 0;
        offsets.push_back(total + shift);
        total += (shift + t.numBytes() + 255) / 256 * 256;
      }
    StatusOr<std::unique_ptr<device::Arena>> arena =
        device_->allocateArena(std::max<size_t>(total, 256));
    if (!arena)
      return arena.status();
    std::byte *base = (*arena)->base();
    device::KernelCall call = makeCall(instruction, settings);
    size_t index = 0;
    for (const HostTensor &t : inputs) {
      std::byte *at = base + offsets[index];
      FLEXMOE_RETURN_IF_ERROR(
          device_->copyToDevice(at, t.data(), t.numBytes()));
      call.inputs.push_back(operandOf(t, at, index++));
    }
    for (HostTensor &t : outputs) {
      std::byte *at = base + offsets[index];
      FLEXMOE_RETURN_IF_ERROR(
          device_->copyToDevice(at, t.data(), t.numBytes()));
      call.outputs.push_back(operandOf(t, at, index++));
    }
    // Synchronise even after a failed launch: the arena is freed on return
    // and part of the work may be enqueued.
    Status launched = stream_->launch(call);
    Status synchronized = stream_->synchronize();
    FLEXMOE_RETURN_IF_ERROR(launched);
    FLEXMOE_RETURN_IF_ERROR(synchronized);
    for (size_t o = 0; o < outputs.size(); ++o)
      FLEXMOE_RETURN_IF_ERROR(device_->copyToHost(
          outputs[o].data(), call.outputs[o].data, outputs[o].numBytes()));
    return Status::ok();
  }

private:
  GpuRunner() = default;

  std::unique_ptr<cuda::CudaDevice> device_;
  /// Declared after the device: destroyed (synchronised) first.
  std::unique_ptr<device::Stream> stream_;
};

/// Runs the instruction once through a CudaDevice created with `options`
/// (for example BF16 precision) on a new stream.
inline Status runOnGpu(const cuda::CudaDeviceOptions &options,
                       const fb::Instruction *instruction,
                       const std::vector<HostTensor> &inputs,
                       std::vector<HostTensor> &outputs,
                       const CallSettings &settings = {}) {
  StatusOr<GpuRunner> runner = GpuRunner::create(options);
  if (!runner)
    return runner.status();
  return runner->run(instruction, inputs, outputs, settings);
}

/// The same on device 0, F32, with or without deterministic kernels.
inline Status runOnGpu(const fb::Instruction *instruction,
                       const std::vector<HostTensor> &inputs,
                       std::vector<HostTensor> &outputs,
                       const CallSettings &settings = {},
                       bool deterministic = true) {
  cuda::CudaDeviceOptions options;
  options.deterministic = deterministic;
  return runOnGpu(options, instruction, inputs, outputs, settings);
}

/// Calls `body` with each nn.matmul layout of [b, m, k] x [k, n]: either
/// operand transposed, the rhs shared or batched (a SCOPED_TRACE names it).
inline void forEachMatmulLayout(
    int64_t b, int64_t m, int64_t k, int64_t n,
    const std::function<void(const InstructionBytes &matmul,
                             const std::vector<int64_t> &lhs,
                             const std::vector<int64_t> &rhs)> &body) {
  for (bool tl : {false, true})
    for (bool tr : {false, true})
      for (bool rhsBatched : {false, true}) {
        AttrsFn attrs = [=](flatbuffers::FlatBufferBuilder &fbb) {
          return fb::CreateMatmulAttrs(fbb, tl, tr).Union();
        };
        std::vector<int64_t> lhs =
            tl ? std::vector<int64_t>{b, k, m} : std::vector<int64_t>{b, m, k};
        std::vector<int64_t> rhs =
            tr ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n};
        if (rhsBatched)
          rhs.insert(rhs.begin(), b);
        SCOPED_TRACE(::testing::Message()
                     << "transpose lhs " << tl << ", rhs " << tr
                     << ", batched rhs " << rhsBatched);
        body(InstructionBytes(fb::OpCode::Matmul, fb::OpAttrs::MatmulAttrs,
                              attrs),
             lhs, rhs);
      }
}

} // namespace flexmoe::gpu_testing

#endif // FLEXMOE_TEST_GPU_GPUTESTUTIL_H
