//===- GuardedDeviceTest.cpp - the executor on memory it cannot touch -----===//
//
// The executor on a GuardedDevice (hostAccessible() false, arena pages
// inaccessible outside the device's own operations), as on a GPU, against
// the CPU device: the same training steps (loss scaling, clipping, two
// micro-batches, a re-plan, evaluation) must give the same bits. A
// direct access to device memory would crash the test. Multi-rank runs,
// whose collectives are staged through host memory, are in
// test/Distributed/guarded.test.
//
//===----------------------------------------------------------------------===//

#include "GuardedDevice.h"
#include "../program/ProgramBuilder.h"
#include "MoeTestProgram.h"

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::testing;
using namespace flexmoe::testing::moetest;
using executor::Executor;

namespace {

program::LoadedProgram load(const ProgramDesc &desc) {
  StatusOr<program::LoadedProgram> loaded =
      program::loadProgramFromBytes(serialize(desc));
  EXPECT_TRUE(loaded.isOk()) << loaded.status().message();
  return std::move(loaded).value();
}

std::vector<int32_t> randomIds(uint64_t seed) {
  std::vector<int32_t> ids(kT);
  uint64_t state = seed;
  for (int32_t &id : ids) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    id = static_cast<int32_t>((state >> 33) % kV);
  }
  return ids;
}

/// Every persistent buffer (parameters, optimizer state), read through the
/// device.
std::vector<float> persistentState(const Executor &ex) {
  std::vector<float> all;
  const auto *buffers = ex.program().program().buffers();
  for (uint32_t id = 0; id < ex.numBuffers(); ++id) {
    const fb::Buffer &b = *buffers->Get(id);
    if (b.alias_of() >= 0 || !program::isPersistent(b.kind()))
      continue;
    const device::Operand &op = ex.buffer(id);
    std::vector<float> values(op.numElements());
    EXPECT_TRUE(
        ex.device().copyToHost(values.data(), op.data, op.numBytes()).isOk());
    all.insert(all.end(), values.begin(), values.end());
  }
  return all;
}

struct Trace {
  std::vector<float> losses;
  std::vector<double> norms;
  std::vector<double> observedSquares;
  float evalLoss = 0;
  std::vector<float> state;
};

Trace train(device::Device &device, const program::LoadedProgram &program) {
  Trace trace;
  device::SingleProcessCommunicator comm;
  executor::ExecutorOptions options;
  options.seed = 11;
  StatusOr<std::unique_ptr<Executor>> created =
      Executor::create(program, device, comm, options);
  EXPECT_TRUE(created.isOk()) << created.status().message();
  if (!created)
    return trace;
  Executor &ex = **created;
  double squares = 0;
  ex.setGradientObserver(
      [&](const fb::Buffer &, const device::Operand &gradient) {
        for (int64_t i = 0; i < gradient.numElements(); ++i)
          squares += static_cast<double>(gradient.as<float>()[i]) *
                     gradient.as<float>()[i];
      });
  for (int64_t s = 1; s <= 4; ++s) {
    executor::StepOptions step;
    step.lossScale = s % 2 ? 1024.0f : 1.0f;
    step.maxGradNorm = s == 3 ? 0.05f : 0.0f;
    if (s == 2) {
      step.microBatches = 2;
      step.loadMicroBatch = [&](int64_t micro) {
        return ex.setInputs(randomIds(10 + micro), randomIds(20 + micro));
      };
    } else {
      EXPECT_TRUE(ex.setInputs(randomIds(s), randomIds(100 + s)).isOk());
    }
    if (s == 3) {
      // A re-plan (one rank: the same placement) copies slots through
      // the device.
      EXPECT_TRUE(ex.setPlacement(0, ex.placement(0)).isOk());
    }
    squares = 0;
    StatusOr<executor::StepResult> result = ex.step(step);
    EXPECT_TRUE(result.isOk()) << result.status().message();
    if (!result)
      return trace;
    trace.losses.push_back(result->loss);
    trace.norms.push_back(result->gradNorm);
    trace.observedSquares.push_back(squares);
  }
  StatusOr<float> eval = ex.evaluate();
  EXPECT_TRUE(eval.isOk()) << eval.status().message();
  trace.evalLoss = eval.isOk() ? *eval : NAN;
  trace.state = persistentState(ex);
  return trace;
}

TEST(GuardedDevice, TheExecutorNeverTouchesDeviceMemory) {
  GuardedDevice guarded;
  program::LoadedProgram program = load(moeProgram(6));
  StatusOr<std::unique_ptr<device::Arena>> arena = guarded.allocateArena(64);
  ASSERT_TRUE(arena.isOk());
  // The wall is real: outside the device's operations a read faults.
  EXPECT_DEATH(
      {
        volatile std::byte b = (*arena)->base()[0];
        (void)b;
      },
      "");
}

TEST(GuardedDevice, TrainsBitIdenticallyToTheCpu) {
  program::LoadedProgram program = load(moeProgram(6));
  cpu::CpuDevice cpu;
  GuardedDevice guarded;
  Trace expected = train(cpu, program);
  Trace actual = train(guarded, program);
  ASSERT_EQ(expected.losses.size(), 4u);
  EXPECT_EQ(actual.losses, expected.losses);
  EXPECT_EQ(actual.norms, expected.norms);
  EXPECT_EQ(actual.observedSquares, expected.observedSquares);
  EXPECT_EQ(actual.evalLoss, expected.evalLoss);
  ASSERT_EQ(actual.state.size(), expected.state.size());
  EXPECT_EQ(std::memcmp(actual.state.data(), expected.state.data(),
                        actual.state.size() * sizeof(float)),
            0);
  // The observed gradients are the ones the norm is made of.
  for (size_t s = 0; s < 4; ++s)
    EXPECT_GT(actual.observedSquares[s], 0.0);
}

} // namespace
