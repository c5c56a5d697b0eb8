//===- flexmoe-step-test.cpp - run training steps of a program (tests) ----===//
//
// A test driver, not the product's flexmoe-run: loads a .fmoe program, binds
// it to the CPU device with the single-process communicator, and runs N steps
// on one fixed batch of seeded random tokens and labels, printing each loss.
// Training on a repeated batch must overfit it, so the tool fails unless every
// loss is finite and the last is below the first. With --time each step line
// also gives the step's wall time in milliseconds (benchmarks/ reads it).
//
//   flexmoe-step-test <program.fmoe> [--steps N] [--seed S] [--time]
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Dataset.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

using namespace flexmoe;

namespace {

int fail(const std::string &message) {
  std::fprintf(stderr, "flexmoe-step-test: %s\n", message.c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  std::string path;
  int64_t steps = 20;
  uint64_t seed = 0;
  bool time = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--steps" && i + 1 < argc)
      steps = std::atoll(argv[++i]);
    else if (arg == "--seed" && i + 1 < argc)
      seed = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--time")
      time = true;
    else if (path.empty() && arg[0] != '-')
      path = arg;
    else
      return fail("usage: flexmoe-step-test <program.fmoe> [--steps N] "
                  "[--seed S] [--time]");
  }
  if (path.empty() || steps < 2)
    return fail("usage: flexmoe-step-test <program.fmoe> [--steps N >= 2] "
                "[--seed S] [--time]");

  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  if (!loaded)
    return fail(loaded.status().message());
  const fb::Program &program = loaded->program();
  StatusOr<train::ProgramInputShape> shape = train::programInputShape(program);
  if (!shape)
    return fail(shape.status().message());
  int64_t vocab = shape->vocabSize;

  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  executor::ExecutorOptions options;
  options.seed = seed;
  StatusOr<std::unique_ptr<executor::Executor>> created =
      executor::Executor::create(*loaded, device, comm, options);
  if (!created)
    return fail(created.status().message());
  executor::Executor &executor = **created;

  // Labels have the tokens' shape (one next token per position).
  int64_t numTokens = shape->localBatch * shape->seqLen, numLabels = numTokens;
  std::mt19937_64 rng(seed + 1);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> tokens(numTokens), labels(numLabels);
  for (int32_t &t : tokens)
    t = id(rng);
  for (int32_t &l : labels)
    l = id(rng);
  if (Status status = executor.setInputs(tokens, labels); !status.isOk())
    return fail(status.message());

  std::printf("program '%s': %u buffers, %u instructions, arena %llu bytes, "
              "vocab %lld, %d CPU threads\n",
              program.name()->c_str(), program.buffers()->size(),
              program.instructions()->size(),
              static_cast<unsigned long long>(program.arena_size()),
              static_cast<long long>(vocab), device.numThreads());
  float first = 0, last = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    auto start = std::chrono::steady_clock::now();
    StatusOr<float> loss = executor.step();
    std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    if (!loss)
      return fail("step " + std::to_string(s) + ": " + loss.status().message());
    if (time)
      std::printf("step %lld loss %.6f time_ms %.3f\n",
                  static_cast<long long>(s), *loss, elapsed.count());
    else
      std::printf("step %lld loss %.6f\n", static_cast<long long>(s), *loss);
    std::fflush(stdout);
    if (!std::isfinite(*loss))
      return fail("step " + std::to_string(s) + ": the loss is not finite");
    if (s == 1)
      first = *loss;
    last = *loss;
  }
  if (!(last < first))
    return fail("the loss did not decrease: " + std::to_string(first) + " -> " +
                std::to_string(last));
  std::printf("loss decreased from %.6f to %.6f\n", first, last);
  return 0;
}
