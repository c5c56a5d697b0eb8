//===- Executor.cpp - runs a program's training step on a device ----------===//

#include "runtime/executor/Executor.h"

#include "runtime/program/OpInfo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numbers>

using namespace flexmoe;
using namespace flexmoe::executor;
using device::Operand;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

//===----------------------------------------------------------------------===//
// Parameter initialisation
//===----------------------------------------------------------------------===//

namespace {

uint64_t splitMix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view text) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : text) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

/// Uniform in (0, 1]: never 0, so the logarithm below is finite.
double uniformOpenZero(uint64_t &state) {
  return (static_cast<double>(splitMix64(state) >> 11) + 1.0) * 0x1.0p-53;
}

} // namespace

void flexmoe::executor::initNormal(uint64_t seed, std::string_view paramName,
                                   int64_t expert, float std,
                                   std::span<float> out) {
  // Box-Muller on splitmix64: unlike std::normal_distribution, the values
  // are the same with every standard library.
  uint64_t state = seed;
  state ^= fnv1a(paramName);
  splitMix64(state);
  state ^= static_cast<uint64_t>(expert + 1) * 0xd6e8feb86659fd93ULL;
  for (size_t i = 0; i < out.size(); i += 2) {
    double radius = std::sqrt(-2.0 * std::log(uniformOpenZero(state)));
    double angle = 2.0 * std::numbers::pi * uniformOpenZero(state);
    out[i] = static_cast<float>(std * radius * std::cos(angle));
    if (i + 1 < out.size())
      out[i + 1] = static_cast<float>(std * radius * std::sin(angle));
  }
}

//===----------------------------------------------------------------------===//
// Binding and initialisation
//===----------------------------------------------------------------------===//

StatusOr<std::unique_ptr<Executor>>
Executor::create(const program::LoadedProgram &program, device::Device &device,
                 device::Communicator &comm, ExecutorOptions options) {
  const fb::Program &prog = program.program();
  if (comm.worldSize() != prog.world_size())
    return errorf("program '", prog.name() ? prog.name()->str() : "",
                  "' is compiled for world size ", prog.world_size(),
                  " but the communicator has ", comm.worldSize(), " ranks");
  std::unique_ptr<Executor> executor(
      new Executor(program, device, comm, options));
  FLEXMOE_RETURN_IF_ERROR(executor->bind());
  FLEXMOE_RETURN_IF_ERROR(executor->analyse());
  FLEXMOE_RETURN_IF_ERROR(executor->analyseOverlap());
  FLEXMOE_RETURN_IF_ERROR(executor->initialize());
  return executor;
}

Status Executor::bind() {
  const fb::Program &prog = program_.program();
  StatusOr<std::unique_ptr<device::Arena>> arena =
      device_.allocateArena(prog.arena_size());
  if (!arena)
    return arena.status();
  arena_ = std::move(arena).value();
  StatusOr<std::unique_ptr<device::Stream>> stream = device_.createStream();
  if (!stream)
    return stream.status();
  stream_ = std::move(stream).value();

  const auto *buffers = prog.buffers();
  size_t numBuffers = buffers ? buffers->size() : 0;
  operands_.resize(numBuffers);
  for (size_t id = 0; id < numBuffers; ++id) {
    const fb::Buffer &buffer = *buffers->Get(id);
    // A view shares its source's bytes; the verifier checked that both
    // record the same offset and size, so resolve through the source anyway
    // to never depend on a copy of the number.
    const fb::Buffer &storage =
        buffer.alias_of() >= 0 ? *buffers->Get(buffer.alias_of()) : buffer;
    if (storage.offset() + storage.size() > arena_->size())
      return errorf("buffer ", id, " ('", buffer.name()->str(),
                    "') lies outside the arena of ", arena_->size(), " bytes");
    Operand &operand = operands_[id];
    operand.data = arena_->base() + storage.offset();
    if (buffer.shape())
      operand.shape = {buffer.shape()->data(), buffer.shape()->size()};
    operand.elementType = buffer.element_type();
    operand.id = static_cast<uint32_t>(id);
    operand.name = buffer.name() ? buffer.name()->string_view() : "";
  }

  const auto *layers = prog.moe_layers();
  size_t numLayers = layers ? layers->size() : 0;
  layerState_.resize(numLayers);
  for (size_t l = 0; l < numLayers; ++l)
    layerState_[l].placement = program_.placements()[l];
  return Status::ok();
}

Status Executor::initialize() {
  const fb::Program &prog = program_.program();
  const auto *buffers = prog.buffers();
  int64_t rank = comm_.rank();
  std::vector<float> host;
  for (size_t id = 0; id < operands_.size(); ++id) {
    const fb::Buffer &buffer = *buffers->Get(id);
    if (buffer.alias_of() >= 0)
      continue;
    const Operand &operand = operands_[id];
    host.assign(operand.numElements(), 0.0f);
    if (buffer.kind() == fb::BufferKind::Parameter) {
      std::string_view paramName = buffer.param_name()
                                       ? buffer.param_name()->string_view()
                                       : operand.name;
      switch (buffer.init()) {
      case fb::InitKind::Ones:
        std::fill(host.begin(), host.end(), 1.0f);
        break;
      case fb::InitKind::Normal:
        if (buffer.moe_layer() < 0) {
          initNormal(options_.seed, paramName, -1, buffer.init_std(), host);
          break;
        } else {
          // Expert parameters are [slots_per_device, ...]: each slot gets
          // its expert's values, so all replicas of an expert agree.
          // The current placement's slots (the program's until a
          // setPlacement).
          plan::SlotTable table =
              plan::buildSlotTable(layerState_[buffer.moe_layer()].placement);
          int64_t slots = table.slotsPerDevice;
          int64_t perSlot = slots ? operand.numElements() / slots : 0;
          for (int64_t s = 0; s < slots; ++s) {
            int64_t expert = table.slotExpert[rank][s];
            if (expert >= 0)
              initNormal(options_.seed, paramName, expert, buffer.init_std(),
                         std::span<float>(host).subspan(s * perSlot, perSlot));
          }
        }
        break;
      case fb::InitKind::Zeros:
      case fb::InitKind::None:
        break;
      }
    }
    // Everything else (optimizer state, inputs, per-step buffers) starts
    // at zero.
    FLEXMOE_RETURN_IF_ERROR(
        device_.copyToDevice(operand.data, host.data(), operand.numBytes()));
  }
  for (LayerState &state : layerState_)
    state.plannedRun = -1;
  stepsDone_ = 0;
  return Status::ok();
}

Status Executor::setInputs(std::span<const int32_t> tokens,
                           std::span<const int32_t> labels) {
  const auto *buffers = program_.program().buffers();
  for (size_t id = 0; id < operands_.size(); ++id) {
    const fb::Buffer &buffer = *buffers->Get(id);
    if (buffer.alias_of() >= 0)
      continue;
    std::span<const int32_t> values;
    if (buffer.kind() == fb::BufferKind::InputTokens)
      values = tokens;
    else if (buffer.kind() == fb::BufferKind::InputLabels)
      values = labels;
    else
      continue;
    const Operand &operand = operands_[id];
    if (static_cast<int64_t>(values.size()) != operand.numElements())
      return errorf("input buffer '", operand.name, "' holds ",
                    operand.numElements(), " ids but ", values.size(),
                    " were given");
    FLEXMOE_RETURN_IF_ERROR(
        device_.copyToDevice(operand.data, values.data(), operand.numBytes()));
  }
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// The shape of the step
//===----------------------------------------------------------------------===//

namespace {

bool writesPersistent(const fb::Program &prog, const fb::Instruction &inst) {
  if (!inst.outputs())
    return false;
  for (uint32_t id : *inst.outputs())
    if (program::isPersistent(prog.buffers()->Get(id)->kind()))
      return true;
  return false;
}

} // namespace

Status Executor::analyse() {
  const fb::Program &prog = program_.program();
  const auto *instructions = prog.instructions();
  size_t count = instructions ? instructions->size() : 0;

  // The forward pass ends with the last instruction writing the loss.
  forwardEnd_ = count;
  for (size_t i = 0; i < count; ++i) {
    const auto *outputs = instructions->Get(i)->outputs();
    if (outputs && prog.loss_buffer() >= 0)
      for (uint32_t id : *outputs)
        if (static_cast<int32_t>(id) == prog.loss_buffer())
          forwardEnd_ = i;
  }
  crossEntropyBuffer_ = prog.loss_buffer();
  seedInstruction_ = -1;
  if (forwardEnd_ < count) {
    for (size_t i = 0; i <= forwardEnd_; ++i) {
      const fb::Instruction &inst = *instructions->Get(i);
      if (inst.opcode() == fb::OpCode::CrossEntropy)
        crossEntropyBuffer_ = inst.outputs()->Get(0);
    }
    // The backward pass is seeded by the first fill of a scalar after it.
    for (size_t i = forwardEnd_ + 1; i < count && seedInstruction_ < 0; ++i) {
      const fb::Instruction &inst = *instructions->Get(i);
      if (inst.opcode() == fb::OpCode::Fill &&
          operands_[inst.outputs()->Get(0)].numElements() == 1)
        seedInstruction_ = static_cast<int64_t>(i);
    }
  }

  // Updates: every AdamW at the end (docs/IR.md, stage 5).
  firstUpdate_ = count;
  for (size_t i = 0; i < count; ++i)
    if (instructions->Get(i)->opcode() == fb::OpCode::AdamW) {
      firstUpdate_ = i;
      break;
    }
  updatesLast_ = true;
  for (size_t i = firstUpdate_; i < count; ++i)
    if (instructions->Get(i)->opcode() != fb::OpCode::AdamW)
      updatesLast_ = false;

  FLEXMOE_RETURN_IF_ERROR(prepareLayers());
  buildNormTerms();
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Running a step
//===----------------------------------------------------------------------===//

StatusOr<float> Executor::step() {
  StatusOr<StepResult> result = step(StepOptions{});
  if (!result)
    return result.status();
  return result->loss;
}

StatusOr<StepResult> Executor::step(const StepOptions &options) {
  const fb::Program &prog = program_.program();
  if (prog.loss_buffer() < 0)
    return Status::error("the program has no loss buffer");
  if (!(options.lossScale > 0) || !std::isfinite(options.lossScale))
    return errorf("the loss scale must be a positive number, got ",
                  options.lossScale);
  if (!(options.maxGradNorm >= 0) || !std::isfinite(options.maxGradNorm))
    return errorf("the gradient clipping norm must be >= 0, got ",
                  options.maxGradNorm);
  if (!updatesLast_)
    return Status::error(
        "the program interleaves parameter updates with other instructions; "
        "recompile it with this flexmoe-compile (updates come last since "
        "format 1.0 programs of this release)");
  if (options.lossScale != 1 && seedInstruction_ < 0)
    return Status::error(
        "loss scaling needs the fill that seeds the backward pass, and the "
        "program has none");

  if (options.microBatches < 1)
    return errorf("a step needs at least one micro-batch, got ",
                  options.microBatches);
  if (options.microBatches > 1 && !options.loadMicroBatch)
    return Status::error("gradient accumulation needs a loadMicroBatch "
                         "callback to set each micro-batch's inputs");

  timings_ = {};
  Clock::time_point start = Clock::now();
  size_t count = prog.instructions() ? prog.instructions()->size() : 0;
  RunMode mode;
  mode.training = true;
  mode.options = &options;
  StepResult result;
  double lossSum = 0;
  // Micro-batches before the last: forward and backward, gradients summed.
  for (int64_t micro = 0; micro < options.microBatches; ++micro) {
    if (options.loadMicroBatch)
      FLEXMOE_RETURN_IF_ERROR(options.loadMicroBatch(micro));
    bool last = micro + 1 == options.microBatches;
    mode.micro = micro;
    mode.end = last ? count : firstUpdate_;
    mode.accumulated = options.microBatches > 1;
    FLEXMOE_RETURN_IF_ERROR(run(mode));
    if (!last)
      FLEXMOE_RETURN_IF_ERROR(accumulateGradients(mode));
    float loss = 0;
    FLEXMOE_RETURN_IF_ERROR(device_.copyToHost(
        &loss, operands_[prog.loss_buffer()].data, sizeof(float)));
    lossSum += loss;
  }
  ++stepsDone_;
  result.loss = static_cast<float>(lossSum / options.microBatches);
  FLEXMOE_RETURN_IF_ERROR(averageOverRanks(result.loss));
  result.gradNorm = mode.gradNorm;
  result.skipped = mode.skipUpdates;
  timings_.stepSeconds = secondsSince(start);
  return result;
}

StatusOr<float> Executor::evaluate() {
  const fb::Program &prog = program_.program();
  if (prog.loss_buffer() < 0 || crossEntropyBuffer_ < 0)
    return Status::error("the program has no loss buffer");
  size_t count = prog.instructions() ? prog.instructions()->size() : 0;
  if (forwardEnd_ >= count)
    return Status::error("no instruction of the program writes its loss");
  for (size_t i = 0; i <= forwardEnd_; ++i)
    if (writesPersistent(prog, *prog.instructions()->Get(i)))
      return errorf("instruction ", i,
                    " of the forward pass writes a parameter or optimizer "
                    "state; the program cannot be evaluated without "
                    "training it");
  timings_ = {};
  Clock::time_point start = Clock::now();
  RunMode mode;
  mode.training = false;
  mode.end = forwardEnd_ + 1;
  FLEXMOE_RETURN_IF_ERROR(run(mode));
  float loss = 0;
  FLEXMOE_RETURN_IF_ERROR(device_.copyToHost(
      &loss, operands_[crossEntropyBuffer_].data, sizeof(float)));
  FLEXMOE_RETURN_IF_ERROR(averageOverRanks(loss));
  timings_.stepSeconds = secondsSince(start);
  return loss;
}

Status Executor::averageOverRanks(float &value) {
  double reduced = value;
  FLEXMOE_RETURN_IF_ERROR(
      comm_.allReduceHost({&reduced, 1}, device::ReduceOp::Mean));
  value = static_cast<float>(reduced);
  return Status::ok();
}

Status Executor::run(RunMode &mode) {
  const fb::Program &prog = program_.program();
  const auto *instructions = prog.instructions();
  ++runsDone_;
  expertEventsUsed_ = 0;
  for (size_t i = 0; i < mode.end; ++i) {
    const fb::Instruction &instruction = *instructions->Get(i);
    // Waits name the all-reduce they wait for, not instruction i.
    Status waited = waitBefore(i);
    if (waited.isOk() && mode.training && i == firstUpdate_)
      waited = waitForAllReduces(); // the gradient norm reads every gradient
    if (!waited.isOk()) {
      drainAllReduces();
      return waited;
    }
    Status status = Status::ok();
    if (mode.training && i == firstUpdate_)
      status = prepareUpdates(mode);
    runningInstruction_ = i;
    if (status.isOk() &&
        !(mode.skipUpdates && instruction.opcode() == fb::OpCode::AdamW))
      status = runInstruction(instruction, mode, static_cast<int64_t>(i));
    if (status.isOk() && !inFlight_.empty())
      status = progressAllReduces();
    if (!status.isOk()) {
      drainAllReduces();
      const program::OpInfo *info = program::lookupOpInfo(instruction.opcode());
      return std::move(status).withContext(
          "instruction " + std::to_string(i) + " (" +
          std::string(info ? info->irName : "unknown opcode") + ")");
    }
  }
  FLEXMOE_RETURN_IF_ERROR(waitForAllReduces());
  FLEXMOE_RETURN_IF_ERROR(stream_->synchronize());
  for (size_t i = 0; i < expertEventsUsed_; ++i) {
    StatusOr<double> seconds = device_.elapsedSeconds(*expertEvents_[i].first,
                                                      *expertEvents_[i].second);
    if (!seconds)
      return seconds.status();
    timings_.expertSeconds += *seconds;
  }
  expertEventsUsed_ = 0;
  return Status::ok();
}

StatusOr<std::pair<device::Event *, device::Event *>>
Executor::nextExpertEvents() {
  if (expertEventsUsed_ == expertEvents_.size()) {
    StatusOr<std::unique_ptr<device::Event>> start =
        device_.createTimingEvent();
    if (!start)
      return start.status();
    StatusOr<std::unique_ptr<device::Event>> end = device_.createTimingEvent();
    if (!end)
      return end.status();
    expertEvents_.emplace_back(std::move(*start), std::move(*end));
  }
  auto &pair = expertEvents_[expertEventsUsed_++];
  return std::make_pair(pair.first.get(), pair.second.get());
}

Status Executor::accumulateGradients(RunMode &mode) {
  const auto *instructions = program_.program().instructions();
  size_t numUpdates = instructions->size() - firstUpdate_;
  auto gradientOf = [&](size_t u) -> const Operand & {
    return operands_[instructions->Get(firstUpdate_ + u)->inputs()->Get(1)];
  };
  if (!accumulation_) {
    accumulationOffsets_.clear();
    size_t total = 0;
    for (size_t u = 0; u < numUpdates; ++u) {
      accumulationOffsets_.push_back(total);
      total += (gradientOf(u).numBytes() + 63) / 64 * 64;
    }
    StatusOr<std::unique_ptr<device::Arena>> arena =
        device_.allocateArena(total);
    if (!arena)
      return Status(arena.status())
          .withContext("allocating the gradient accumulation buffers");
    accumulation_ = std::move(*arena);
  }
  for (size_t u = 0; u < numUpdates; ++u) {
    const Operand &grad = gradientOf(u);
    float *sum = reinterpret_cast<float *>(accumulation_->base() +
                                           accumulationOffsets_[u]);
    if (mode.micro == 0) {
      device::CopySegment copy{grad.data, reinterpret_cast<std::byte *>(sum),
                               grad.numBytes()};
      FLEXMOE_RETURN_IF_ERROR(stream_->copySegments({&copy, 1}));
    } else {
      FLEXMOE_RETURN_IF_ERROR(stream_->addScaled(sum, sum, grad.as<float>(),
                                                 grad.numElements(), 1.0f));
    }
  }
  return Status::ok();
}

Status Executor::prepareUpdates(RunMode &mode) {
  // Every gradient is final here: the updates come last.
  const fb::Program &prog = program_.program();
  const auto *instructions = prog.instructions();
  if (mode.accumulated) {
    // The last micro-batch's gradients join the sum; the mean replaces them.
    float inverse = 1.0f / static_cast<float>(mode.options->microBatches);
    for (size_t u = 0; u < accumulationOffsets_.size(); ++u) {
      const Operand &grad =
          operands_[instructions->Get(firstUpdate_ + u)->inputs()->Get(1)];
      const float *sum = reinterpret_cast<const float *>(
          accumulation_->base() + accumulationOffsets_[u]);
      FLEXMOE_RETURN_IF_ERROR(stream_->addScaled(grad.as<float>(), sum,
                                                 grad.as<float>(),
                                                 grad.numElements(), inverse));
    }
  }
  FLEXMOE_RETURN_IF_ERROR(stream_->synchronize());
  if (gradientObserver_)
    for (size_t i = firstUpdate_; i < instructions->size(); ++i) {
      const fb::Instruction &inst = *instructions->Get(i);
      Operand gradient = operands_[inst.inputs()->Get(1)];
      if (!device_.hostAccessible()) {
        // Observers read host memory: give them a copy.
        hostFloats_.resize(gradient.numElements());
        FLEXMOE_RETURN_IF_ERROR(device_.copyToHost(
            hostFloats_.data(), gradient.data, gradient.numBytes()));
        gradient.data = reinterpret_cast<std::byte *>(hostFloats_.data());
      }
      gradientObserver_(*prog.buffers()->Get(inst.inputs()->Get(0)), gradient);
    }

  // [dense, expert] sums of squares, in double and a fixed order.
  std::vector<device::FloatRange> ranges;
  ranges.reserve(normTerms_.size());
  for (const NormTerm &term : normTerms_)
    ranges.push_back(
        {operands_[term.buffer].as<float>() + term.offset, term.count});
  std::vector<double> termSums(ranges.size());
  FLEXMOE_RETURN_IF_ERROR(stream_->sumOfSquares(ranges, termSums));
  double sums[2] = {0, 0};
  for (size_t t = 0; t < normTerms_.size(); ++t)
    sums[normTerms_[t].expert ? 1 : 0] += termSums[t];
  FLEXMOE_RETURN_IF_ERROR(
      comm_.allReduceHost({&sums[1], 1}, device::ReduceOp::Sum));
  double lossScale = mode.options->lossScale;
  mode.gradNorm = std::sqrt(sums[0] + sums[1]) / lossScale;
  if (!std::isfinite(mode.gradNorm)) {
    mode.skipUpdates = true;
    return Status::ok();
  }
  double clip = 1.0;
  if (mode.options->maxGradNorm > 0)
    clip = std::min(1.0, mode.options->maxGradNorm / (mode.gradNorm + 1e-6));
  mode.gradScale = clip / lossScale;
  return Status::ok();
}

Status Executor::runInstruction(const fb::Instruction &instruction,
                                RunMode &mode, int64_t index) {
  switch (instruction.opcode()) {
  case fb::OpCode::AllToAllDispatch:
  case fb::OpCode::AllToAllCombine: {
    // Planning (inside the first dispatch) is timed on its own.
    Clock::time_point start = Clock::now();
    double planBefore = timings_.planSeconds;
    Status status = runAllToAll(instruction, instruction.opcode() ==
                                                 fb::OpCode::AllToAllDispatch);
    timings_.allToAllSeconds +=
        secondsSince(start) - (timings_.planSeconds - planBefore);
    return status;
  }
  case fb::OpCode::ReplicaGradSync:
    return runReplicaGradSync(instruction);
  case fb::OpCode::AllReduceMean:
    return runAllReduce(instruction, /*mean=*/true);
  case fb::OpCode::AllReduceSum:
    return runAllReduce(instruction, /*mean=*/false);
  case fb::OpCode::Dispatch:
    // T·k token copies: what the layer routes before any capacity drop.
    layerState_[instruction.moe_layer()].routedCopies =
        operands_[instruction.inputs()->Get(1)].numElements();
    break;
  default:
    break;
  }
  device::KernelCall call;
  call.instruction = &instruction;
  call.step = stepsDone_ + 1;
  call.shard = comm_.rank() + mode.micro * comm_.worldSize();
  call.training = mode.training;
  if (mode.options) {
    call.gradScale = static_cast<float>(mode.gradScale);
    call.lr = mode.options->lr;
    if (index == seedInstruction_)
      call.fillScale = mode.options->lossScale;
  }
  if (instruction.inputs())
    for (uint32_t id : *instruction.inputs())
      call.inputs.push_back(operands_[id]);
  if (instruction.outputs())
    for (uint32_t id : *instruction.outputs())
      call.outputs.push_back(operands_[id]);
  switch (instruction.opcode()) {
  case fb::OpCode::Gate: {
    // The load generator's bias: training runs only.
    const LayerState &state = layerState_[instruction.moe_layer()];
    if (mode.training && !state.routingBias.empty())
      call.logitBias = state.routingBias;
    return stream_->launch(call);
  }
  case fb::OpCode::Experts:
  case fb::OpCode::ExpertsGrad: {
    // The CPU stream runs a launch to completion, so the host clock times
    // the kernel; an asynchronous stream's kernel is timed by events, read
    // at the end of the run (the launch alone would take microseconds).
    Status status = Status::ok();
    if (device_.hostAccessible()) {
      Clock::time_point start = Clock::now();
      status = stream_->launch(call);
      timings_.expertSeconds += secondsSince(start);
    } else {
      StatusOr<std::pair<device::Event *, device::Event *>> events =
          nextExpertEvents();
      if (!events)
        return events.status();
      FLEXMOE_RETURN_IF_ERROR(stream_->record(*events->first));
      status = stream_->launch(call);
      if (status.isOk())
        status = stream_->record(*events->second);
    }
    if (instruction.opcode() == fb::OpCode::Experts) {
      const LayerState &state = layerState_[instruction.moe_layer()];
      if (state.plannedRun == runsDone_)
        timings_.expertRows += state.plan.devices[comm_.rank()].recvRows;
    }
    return status;
  }
  default:
    return stream_->launch(call);
  }
}

Status Executor::planLayer(int32_t layerIndex, const Operand &counts) {
  const fb::MoeLayer &layer = *program_.program().moe_layers()->Get(layerIndex);
  LayerState &state = layerState_[layerIndex];
  std::string_view layerName = layer.name()->string_view();
  int64_t numExperts = layer.num_experts();
  int64_t worldSize = comm_.worldSize();
  if (counts.numElements() != numExperts)
    return errorf("layer '", layerName, "': ", counts.numElements(),
                  " counts for ", numExperts, " experts");
  FLEXMOE_RETURN_IF_ERROR(readInts(counts, hostInts_));
  state.localCounts.assign(hostInts_.begin(), hostInts_.end());
  state.expertStart.assign(numExperts, 0);
  for (int64_t e = 1; e < numExperts; ++e)
    state.expertStart[e] = state.expertStart[e - 1] + state.localCounts[e - 1];
  state.allCounts.assign(numExperts * worldSize, 0);
  FLEXMOE_RETURN_IF_ERROR(comm_.allGather(state.localCounts, state.allCounts));
  // The all-gather waits for the slowest rank; the planning alone is timed.
  Clock::time_point start = Clock::now();
  FLEXMOE_RETURN_IF_ERROR(plan::computeDispatchPlan(
      state.placement, state.allCounts, state.plan, layerName, comm_.rank()));
  state.plannedRun = runsDone_;

  LayerStats &stats = state.stats;
  stats.name = layerName;
  stats.expertTokens.assign(numExperts, 0);
  int64_t kept = 0;
  for (int64_t r = 0; r < worldSize; ++r)
    for (int64_t e = 0; e < numExperts; ++e) {
      stats.expertTokens[e] += state.allCounts[r * numExperts + e];
      kept += state.allCounts[r * numExperts + e];
    }
  stats.deviceLoad = state.plan.load;
  stats.balanceRatio = state.plan.balanceRatio;
  int64_t maxTokens =
      *std::max_element(stats.expertTokens.begin(), stats.expertTokens.end());
  stats.expertBalance =
      kept > 0 ? static_cast<double>(maxTokens) * numExperts / kept : 1.0;
  // Every rank routes the same number of copies (equal batch shards).
  stats.droppedTokens =
      std::max<int64_t>(0, state.routedCopies * worldSize - kept);
  timings_.planSeconds += secondsSince(start);
  return Status::ok();
}

Status Executor::runAllToAll(const fb::Instruction &instruction,
                             bool dispatch) {
  const fb::Program &prog = program_.program();
  int32_t layerIndex = instruction.moe_layer();
  const fb::MoeLayer &layer = *prog.moe_layers()->Get(layerIndex);
  LayerState &state = layerState_[layerIndex];
  std::string_view layerName = layer.name()->string_view();
  const Operand &rows = operands_[instruction.inputs()->Get(0)];
  const Operand &counts = operands_[instruction.inputs()->Get(1)];
  const Operand &out = operands_[instruction.outputs()->Get(0)];
  const Operand &outCounts = operands_[instruction.outputs()->Get(1)];
  if (rows.shape.size() != 2 || out.shape.size() != 2 ||
      rows.shape[1] != out.shape[1])
    return errorf("layer '", layerName, "': all-to-all rows must be [N, D]");
  int64_t numExperts = layer.num_experts();
  int64_t slots = layer.placement()->slots_per_device();
  int64_t capacity = layer.capacity();
  int64_t rank = comm_.rank();
  size_t rowBytes = static_cast<size_t>(rows.shape[1]) * sizeof(float);

  // The layer's first all-to-all of a run plans from every rank's counts;
  // the others of the run move the same rows back and forth.
  if (state.plannedRun != runsDone_) {
    if (!dispatch)
      return errorf("layer '", layerName,
                    "': the first all-to-all of a step must dispatch");
    FLEXMOE_RETURN_IF_ERROR(planLayer(layerIndex, counts));
  }
  const plan::DevicePlan &mine = state.plan.devices[rank];
  // The expert-grouped side: packed, or at e·capacity in capacity layers.
  int64_t groupedRows = capacity > 0 ? numExperts * capacity : mine.sendRows;
  int64_t inRows = dispatch ? groupedRows : mine.recvRows;
  int64_t outRows = dispatch ? mine.recvRows : groupedRows;
  if (counts.numElements() != (dispatch ? numExperts : slots) ||
      outCounts.numElements() != (dispatch ? slots : numExperts))
    return errorf("layer '", layerName, "': all-to-all counts of ",
                  counts.numElements(), " and ", outCounts.numElements(),
                  " entries for ", numExperts, " experts and ", slots,
                  " slots");
  if (rows.shape[0] < inRows || out.shape[0] < outRows)
    return errorf("layer '", layerName, "': all-to-all buffers of ",
                  rows.shape[0], " and ", out.shape[0], " rows for ", inRows,
                  " sent and ", outRows, " received");
  // The counts operand must be the ones the plan was made for. Where the
  // host cannot read device memory for free, the plan's own read of the
  // dispatch counts is the check.
  if (device_.hostAccessible()) {
    const int32_t *given = counts.as<int32_t>();
    if (dispatch) {
      for (int64_t e = 0; e < numExperts; ++e)
        if (given[e] != state.localCounts[e] ||
            (capacity > 0 && given[e] > capacity))
          return errorf("layer '", layerName,
                        "': dispatch counts differ from the step's plan");
    } else {
      for (int64_t s = 0; s < slots; ++s)
        if (given[s] != mine.slotCounts[s])
          return errorf("layer '", layerName,
                        "': combine slot counts differ from the step's plan");
    }
  }

  // A segment's rows in the expert-grouped buffer (at e·capacity in
  // capacity layers, where the plan's packed offsets do not apply).
  auto grouped = [&](const std::byte *base, const plan::Segment &g) {
    int64_t row = capacity > 0 ? g.expert * capacity +
                                     (g.srcOffset - state.expertStart[g.expert])
                               : g.srcOffset;
    return const_cast<std::byte *>(base) + row * rowBytes;
  };
  auto at = [&](const std::byte *base, int64_t row) {
    return const_cast<std::byte *>(base) + row * rowBytes;
  };
  auto copy = [&]() -> Status {
    Status status = stream_->copySegments(segments_);
    segments_.clear();
    return status;
  };
  // Backwards (combine), what a rank received in the dispatch it sends.
  for (int64_t r = 0; r < comm_.worldSize(); ++r)
    if (r != rank)
      timings_.allToAllBytes +=
          (dispatch ? mine.sendCounts[r] : mine.recvCounts[r]) * rowBytes;

  segments_.clear();
  if (dispatch) {
    if (comm_.worldSize() == 1) {
      // Nothing leaves the device: straight from groups to slots.
      for (const plan::Segment &g : mine.sends)
        segments_.push_back({grouped(rows.data, g), at(out.data, g.slotOffset),
                             g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
    } else {
      StatusOr<std::byte *> space =
          workspace((mine.sendRows + mine.recvRows) * rowBytes);
      if (!space)
        return space.status();
      std::byte *send = *space, *recv = send + mine.sendRows * rowBytes;
      for (const plan::Segment &g : mine.sends)
        segments_.push_back(
            {grouped(rows.data, g), at(send, g.sendOffset), g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
      FLEXMOE_RETURN_IF_ERROR(exchangeRows(
          send, mine.sendCounts, mine.sendOffsets, mine.sendRows, recv,
          mine.recvCounts, mine.recvOffsets, mine.recvRows, rowBytes));
      for (const plan::Segment &g : mine.recvs)
        segments_.push_back({at(recv, g.recvOffset), at(out.data, g.slotOffset),
                             g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
    }
    FLEXMOE_RETURN_IF_ERROR(
        stream_->zero(at(out.data, mine.recvRows),
                      (out.shape[0] - mine.recvRows) * rowBytes));
    hostInts_.assign(mine.slotCounts.begin(), mine.slotCounts.end());
  } else {
    // Rows no segment writes are zero: capacity padding and the tail.
    int64_t zeroFrom = capacity > 0 ? 0 : mine.sendRows;
    auto zeroOut = [&] {
      return stream_->zero(at(out.data, zeroFrom),
                           (out.shape[0] - zeroFrom) * rowBytes);
    };
    if (comm_.worldSize() == 1) {
      FLEXMOE_RETURN_IF_ERROR(zeroOut());
      for (const plan::Segment &g : mine.sends)
        segments_.push_back({at(rows.data, g.slotOffset), grouped(out.data, g),
                             g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
    } else {
      StatusOr<std::byte *> space =
          workspace((mine.sendRows + mine.recvRows) * rowBytes);
      if (!space)
        return space.status();
      std::byte *back = *space, *there = back + mine.sendRows * rowBytes;
      for (const plan::Segment &g : mine.recvs)
        segments_.push_back({at(rows.data, g.slotOffset),
                             at(there, g.recvOffset), g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
      FLEXMOE_RETURN_IF_ERROR(exchangeRows(
          there, mine.recvCounts, mine.recvOffsets, mine.recvRows, back,
          mine.sendCounts, mine.sendOffsets, mine.sendRows, rowBytes));
      FLEXMOE_RETURN_IF_ERROR(zeroOut());
      for (const plan::Segment &g : mine.sends)
        segments_.push_back(
            {at(back, g.sendOffset), grouped(out.data, g), g.rows * rowBytes});
      FLEXMOE_RETURN_IF_ERROR(copy());
    }
    hostInts_.assign(state.localCounts.begin(), state.localCounts.end());
  }
  return stream_->copyFromHost(outCounts.data, hostInts_.data(),
                               hostInts_.size() * sizeof(int32_t));
}

Status Executor::runReplicaGradSync(const fb::Instruction &instruction) {
  // The groups of the current placement, not the program's: setPlacement
  // changes them.
  const LayerState &state = layerState_[instruction.moe_layer()];
  int64_t rank = comm_.rank();
  std::vector<int32_t> ranks;
  for (size_t i = 0; i < instruction.inputs()->size(); ++i) {
    const Operand &in = operands_[instruction.inputs()->Get(i)];
    const Operand &out = operands_[instruction.outputs()->Get(i)];
    FLEXMOE_RETURN_IF_ERROR(copyOperand(in, out));
    if (out.shape.empty() || out.shape[0] == 0)
      continue;
    int64_t perSlot = out.numElements() / out.shape[0];
    for (const plan::ReplicaGroup &group : state.replicaGroups) {
      ranks.clear();
      int64_t mySlot = -1;
      for (const plan::ReplicaMember &member : group.members) {
        ranks.push_back(static_cast<int32_t>(member.device));
        if (member.device == rank)
          mySlot = member.slot;
      }
      if (mySlot >= 0)
        FLEXMOE_RETURN_IF_ERROR(
            sumOverGroup(out.as<float>() + mySlot * perSlot, perSlot, ranks));
    }
  }
  return Status::ok();
}

Status Executor::runAllReduce(const fb::Instruction &instruction, bool mean) {
  const Operand &in = operands_[instruction.inputs()->Get(0)];
  const Operand &out = operands_[instruction.outputs()->Get(0)];
  FLEXMOE_RETURN_IF_ERROR(copyOperand(in, out));
  device::ReduceOp op = mean ? device::ReduceOp::Mean : device::ReduceOp::Sum;
  auto start = std::chrono::steady_clock::now();
  if (!commReadsArena()) {
    // Staged through the host: blocking.
    hostFloats_.resize(out.numElements());
    Status status =
        device_.copyToHost(hostFloats_.data(), out.data, out.numBytes());
    if (status.isOk())
      status = comm_.allReduce(hostFloats_.data(), out.numElements(), op);
    if (status.isOk())
      status =
          device_.copyToDevice(out.data, hostFloats_.data(), out.numBytes());
    exposedCommSeconds_ += secondsSince(start);
    return status;
  }
  FLEXMOE_RETURN_IF_ERROR(beforeDeviceCollective());
  if (!options_.overlapCommunication) {
    Status status =
        dataComm().allReduce(out.as<float>(), out.numElements(), op);
    exposedCommSeconds_ += secondsSince(start);
    return status;
  }
  StatusOr<device::Request> request =
      dataComm().startAllReduce(out.as<float>(), out.numElements(), op);
  exposedCommSeconds_ += secondsSince(start);
  if (!request)
    return request.status();
  inFlight_.push_back({runningInstruction_, *request});
  return Status::ok();
}

//===----------------------------------------------------------------------===//
// Device data movement and staged collectives
//===----------------------------------------------------------------------===//

StatusOr<std::byte *> Executor::workspace(size_t bytes) {
  if (!workspace_ || workspace_->size() < bytes) {
    // Grow by half again, so that slowly growing plans reallocate rarely.
    size_t size = std::max(bytes, workspace_ ? workspace_->size() * 3 / 2 : 0);
    workspace_.reset();
    FLEXMOE_RETURN_IF_ERROR(device_.synchronize());
    StatusOr<std::unique_ptr<device::Arena>> arena =
        device_.allocateArena(size);
    if (!arena)
      return Status(arena.status())
          .withContext("allocating the all-to-all buffers");
    workspace_ = std::move(*arena);
  }
  return workspace_->base();
}

Status Executor::beforeDeviceCollective() {
  if (options_.deviceCommunicator && !device_.hostAccessible())
    return stream_->synchronize();
  return Status::ok();
}

Status Executor::exchangeRows(const std::byte *send,
                              std::span<const int64_t> sendCounts,
                              std::span<const int64_t> sendOffsets,
                              int64_t sendRows, std::byte *recv,
                              std::span<const int64_t> recvCounts,
                              std::span<const int64_t> recvOffsets,
                              int64_t recvRows, size_t rowBytes) {
  if (commReadsArena()) {
    FLEXMOE_RETURN_IF_ERROR(beforeDeviceCollective());
    return dataComm().allToAllV(send, sendCounts, sendOffsets, recv, recvCounts,
                                recvOffsets, rowBytes);
  }
  hostSend_.resize(sendRows * rowBytes);
  hostRecv_.resize(recvRows * rowBytes);
  FLEXMOE_RETURN_IF_ERROR(
      device_.copyToHost(hostSend_.data(), send, hostSend_.size()));
  FLEXMOE_RETURN_IF_ERROR(comm_.allToAllV(hostSend_.data(), sendCounts,
                                          sendOffsets, hostRecv_.data(),
                                          recvCounts, recvOffsets, rowBytes));
  return device_.copyToDevice(recv, hostRecv_.data(), hostRecv_.size());
}

Status Executor::sumOverGroup(float *data, int64_t count,
                              std::span<const int32_t> ranks) {
  if (commReadsArena()) {
    FLEXMOE_RETURN_IF_ERROR(beforeDeviceCollective());
    return dataComm().groupSum(data, count, ranks);
  }
  hostFloats_.resize(count);
  auto *bytes = reinterpret_cast<std::byte *>(data);
  FLEXMOE_RETURN_IF_ERROR(
      device_.copyToHost(hostFloats_.data(), bytes, count * sizeof(float)));
  FLEXMOE_RETURN_IF_ERROR(comm_.groupSum(hostFloats_.data(), count, ranks));
  return device_.copyToDevice(bytes, hostFloats_.data(), count * sizeof(float));
}

Status Executor::copyOperand(const Operand &in, const Operand &out) {
  if (in.data == out.data)
    return Status::ok();
  device::CopySegment copy{in.data, out.data, in.numBytes()};
  return stream_->copySegments({&copy, 1});
}

Status Executor::readInts(const Operand &operand, std::vector<int32_t> &out) {
  out.resize(operand.numElements());
  return device_.copyToHost(out.data(), operand.data, operand.numBytes());
}

//===----------------------------------------------------------------------===//
// Communication overlap
//===----------------------------------------------------------------------===//

Status Executor::analyseOverlap() {
  const auto *instructions = program_.program().instructions();
  size_t count = instructions ? instructions->size() : 0;
  waitsBefore_.assign(count, {});
  auto touches = [&](const fb::Instruction &inst, const std::byte *begin,
                     const std::byte *end) {
    for (const auto *ids : {inst.inputs(), inst.outputs()})
      if (ids)
        for (uint32_t id : *ids) {
          const Operand &operand = operands_[id];
          const std::byte *b = operand.data, *e = b + operand.numBytes();
          if (b < end && begin < e)
            return true;
        }
    return false;
  };
  for (size_t a = 0; a < count; ++a) {
    const fb::Instruction &reduce = *instructions->Get(a);
    if (reduce.opcode() != fb::OpCode::AllReduceMean &&
        reduce.opcode() != fb::OpCode::AllReduceSum)
      continue;
    if (!reduce.outputs() || reduce.outputs()->size() != 1)
      return errorf("instruction ", a, " (all_reduce) must have one output");
    const Operand &out = operands_[reduce.outputs()->Get(0)];
    const std::byte *begin = out.data, *end = begin + out.numBytes();
    // The arena's bytes, not buffer ids: views and reused space count.
    for (size_t j = a + 1; j < count; ++j)
      if (touches(*instructions->Get(j), begin, end)) {
        waitsBefore_[j].push_back(static_cast<uint32_t>(a));
        break;
      }
    // None touches it: the wait before the updates or at the end of the
    // run covers it.
  }
  return Status::ok();
}

Status Executor::waitFor(size_t slot) {
  InFlightAllReduce inFlight = inFlight_[slot];
  inFlight_.erase(inFlight_.begin() + static_cast<std::ptrdiff_t>(slot));
  auto start = std::chrono::steady_clock::now();
  Status status = comm_.wait(inFlight.request);
  exposedCommSeconds_ += secondsSince(start);
  if (!status.isOk())
    return std::move(status).withContext("instruction " +
                                         std::to_string(inFlight.instruction) +
                                         " (moe.all_reduce)");
  return Status::ok();
}

Status Executor::waitBefore(size_t index) {
  if (inFlight_.empty() || index >= waitsBefore_.size())
    return Status::ok();
  for (uint32_t reduce : waitsBefore_[index])
    for (size_t slot = 0; slot < inFlight_.size(); ++slot)
      if (inFlight_[slot].instruction == reduce) {
        FLEXMOE_RETURN_IF_ERROR(waitFor(slot));
        break;
      }
  return Status::ok();
}

Status Executor::waitForAllReduces() {
  while (!inFlight_.empty())
    FLEXMOE_RETURN_IF_ERROR(waitFor(0));
  return Status::ok();
}

Status Executor::progressAllReduces() {
  auto start = std::chrono::steady_clock::now();
  Status status = comm_.progress();
  exposedCommSeconds_ += secondsSince(start);
  return status;
}

void Executor::drainAllReduces() {
  // A failed communicator fails each wait at once; the first error is the
  // one the caller reports.
  while (!inFlight_.empty())
    (void)waitFor(0);
}
