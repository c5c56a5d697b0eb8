//===- Executor.cpp - runs a program's training step on a device ----------===//

#include "runtime/executor/Executor.h"

#include "runtime/plan/Reorder.h"
#include "runtime/program/OpInfo.h"

#include <cmath>
#include <cstring>
#include <numbers>

using namespace flexmoe;
using namespace flexmoe::executor;
using device::Operand;

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
          const fb::MoeLayer &layer =
              *prog.moe_layers()->Get(buffer.moe_layer());
          int64_t slots = layer.placement()->slots_per_device();
          int64_t perSlot = slots ? operand.numElements() / slots : 0;
          for (int64_t s = 0; s < slots; ++s) {
            int32_t expert = layer.slot_table()->Get(rank * slots + s);
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
    state.plannedStep = 0;
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
// Running a step
//===----------------------------------------------------------------------===//

StatusOr<float> Executor::step() {
  const fb::Program &prog = program_.program();
  const auto *instructions = prog.instructions();
  size_t count = instructions ? instructions->size() : 0;
  for (size_t i = 0; i < count; ++i) {
    const fb::Instruction &instruction = *instructions->Get(i);
    Status status = runInstruction(static_cast<uint32_t>(i), instruction);
    if (!status.isOk()) {
      const program::OpInfo *info = program::lookupOpInfo(instruction.opcode());
      return std::move(status).withContext(
          "instruction " + std::to_string(i) + " (" +
          std::string(info ? info->irName : "unknown opcode") + ")");
    }
  }
  FLEXMOE_RETURN_IF_ERROR(stream_->synchronize());
  ++stepsDone_;
  if (prog.loss_buffer() < 0)
    return Status::error("the program has no loss buffer");
  float loss = 0;
  FLEXMOE_RETURN_IF_ERROR(device_.copyToHost(
      &loss, operands_[prog.loss_buffer()].data, sizeof(float)));
  return loss;
}

Status Executor::runInstruction(uint32_t, const fb::Instruction &instruction) {
  switch (instruction.opcode()) {
  case fb::OpCode::AllToAllDispatch:
    return runAllToAll(instruction, /*dispatch=*/true);
  case fb::OpCode::AllToAllCombine:
    return runAllToAll(instruction, /*dispatch=*/false);
  case fb::OpCode::ReplicaGradSync:
    return runReplicaGradSync(instruction);
  case fb::OpCode::AllReduceMean:
    return runAllReduce(instruction, /*mean=*/true);
  case fb::OpCode::AllReduceSum:
    return runAllReduce(instruction, /*mean=*/false);
  default:
    break;
  }
  device::KernelCall call;
  call.instruction = &instruction;
  call.step = stepsDone_ + 1;
  if (instruction.inputs())
    for (uint32_t id : *instruction.inputs())
      call.inputs.push_back(operands_[id]);
  if (instruction.outputs())
    for (uint32_t id : *instruction.outputs())
      call.outputs.push_back(operands_[id]);
  return stream_->launch(call);
}

namespace {

/// Copies `in` into `out` unless the instruction works in place.
void copyIfDistinct(const Operand &in, const Operand &out) {
  if (in.data != out.data)
    std::memmove(out.data, in.data, in.numBytes());
}

} // namespace

Status Executor::runAllToAll(const fb::Instruction &instruction,
                             bool dispatch) {
  if (!device_.hostAccessible())
    return errorf("device ", device_.name(),
                  " has no host-side dispatch reorder");
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
  if (layer.capacity() != 0)
    return errorf("layer '", layerName,
                  "': all-to-all of a layer with capacity ", layer.capacity(),
                  " is not supported yet (only dropless layers)");
  int64_t numExperts = layer.num_experts();
  int64_t slots = layer.placement()->slots_per_device();
  int64_t rank = comm_.rank();
  size_t rowBytes = static_cast<size_t>(rows.shape[1]) * sizeof(float);

  // The layer's first all-to-all of the step plans from every rank's
  // counts; the other three of the step move the same rows back and forth.
  int64_t step = stepsDone_ + 1;
  if (state.plannedStep != step) {
    if (!dispatch)
      return errorf("layer '", layerName,
                    "': the first all-to-all of a step must dispatch");
    if (counts.numElements() != numExperts)
      return errorf("layer '", layerName, "': ", counts.numElements(),
                    " counts for ", numExperts, " experts");
    const int32_t *c = counts.as<int32_t>();
    state.localCounts.assign(c, c + numExperts);
    state.allCounts.assign(numExperts * comm_.worldSize(), 0);
    FLEXMOE_RETURN_IF_ERROR(
        comm_.allGather(state.localCounts, state.allCounts));
    FLEXMOE_RETURN_IF_ERROR(plan::computeDispatchPlan(
        state.placement, state.allCounts, state.plan, layerName, rank));
    state.plannedStep = step;
  }
  const plan::DevicePlan &mine = state.plan.devices[rank];

  // The counts operand must be the ones the plan was made for.
  const int32_t *given = counts.as<int32_t>();
  if (dispatch) {
    for (int64_t e = 0; e < numExperts; ++e)
      if (counts.numElements() != numExperts ||
          given[e] != state.localCounts[e])
        return errorf("layer '", layerName,
                      "': dispatch counts differ from the step's plan");
    if (rows.shape[0] < mine.sendRows || out.shape[0] < mine.recvRows ||
        outCounts.numElements() != slots)
      return errorf("layer '", layerName, "': all-to-all buffers of ",
                    rows.shape[0], " and ", out.shape[0], " rows for ",
                    mine.sendRows, " sent and ", mine.recvRows, " received");
    state.send.resize(mine.sendRows * rowBytes);
    state.recv.resize(mine.recvRows * rowBytes);
    FLEXMOE_RETURN_IF_ERROR(plan::packDispatch(
        mine, rowBytes, {rows.data, mine.sendRows * rowBytes}, state.send));
    FLEXMOE_RETURN_IF_ERROR(comm_.allToAllV(
        state.send.data(), mine.sendCounts, mine.sendOffsets, state.recv.data(),
        mine.recvCounts, mine.recvOffsets, rowBytes));
    FLEXMOE_RETURN_IF_ERROR(plan::unpackDispatch(
        mine, rowBytes, state.recv, {out.data, mine.recvRows * rowBytes}));
    std::memset(out.data + mine.recvRows * rowBytes, 0,
                (out.shape[0] - mine.recvRows) * rowBytes);
    for (int64_t s = 0; s < slots; ++s)
      outCounts.as<int32_t>()[s] = static_cast<int32_t>(mine.slotCounts[s]);
    return Status::ok();
  }

  for (int64_t s = 0; s < slots; ++s)
    if (counts.numElements() != slots || given[s] != mine.slotCounts[s])
      return errorf("layer '", layerName,
                    "': combine slot counts differ from the step's plan");
  if (rows.shape[0] < mine.recvRows || out.shape[0] < mine.sendRows ||
      outCounts.numElements() != numExperts)
    return errorf("layer '", layerName, "': all-to-all buffers of ",
                  rows.shape[0], " and ", out.shape[0], " rows for ",
                  mine.recvRows, " sent back and ", mine.sendRows, " received");
  state.send.resize(mine.sendRows * rowBytes);
  state.recv.resize(mine.recvRows * rowBytes);
  FLEXMOE_RETURN_IF_ERROR(plan::packCombine(
      mine, rowBytes, {rows.data, mine.recvRows * rowBytes}, state.recv));
  // Backwards: what a rank received in the dispatch it now sends.
  FLEXMOE_RETURN_IF_ERROR(comm_.allToAllV(
      state.recv.data(), mine.recvCounts, mine.recvOffsets, state.send.data(),
      mine.sendCounts, mine.sendOffsets, rowBytes));
  FLEXMOE_RETURN_IF_ERROR(plan::unpackCombine(
      mine, rowBytes, state.send, {out.data, mine.sendRows * rowBytes}));
  std::memset(out.data + mine.sendRows * rowBytes, 0,
              (out.shape[0] - mine.sendRows) * rowBytes);
  for (int64_t e = 0; e < numExperts; ++e)
    outCounts.as<int32_t>()[e] = static_cast<int32_t>(state.localCounts[e]);
  return Status::ok();
}

Status Executor::runReplicaGradSync(const fb::Instruction &instruction) {
  const fb::MoeLayer &layer =
      *program_.program().moe_layers()->Get(instruction.moe_layer());
  int64_t rank = comm_.rank();
  for (size_t i = 0; i < instruction.inputs()->size(); ++i) {
    const Operand &in = operands_[instruction.inputs()->Get(i)];
    const Operand &out = operands_[instruction.outputs()->Get(i)];
    copyIfDistinct(in, out);
    if (!layer.replica_groups() || out.shape.empty() || out.shape[0] == 0)
      continue;
    int64_t perSlot = out.numElements() / out.shape[0];
    for (const fb::ReplicaGroup *group : *layer.replica_groups()) {
      std::span<const int32_t> ranks(group->devices()->data(),
                                     group->devices()->size());
      for (size_t j = 0; j < ranks.size(); ++j)
        if (ranks[j] == rank)
          FLEXMOE_RETURN_IF_ERROR(
              comm_.groupSum(out.as<float>() + group->slots()->Get(j) * perSlot,
                             perSlot, ranks));
    }
  }
  return Status::ok();
}

Status Executor::runAllReduce(const fb::Instruction &instruction, bool mean) {
  const Operand &in = operands_[instruction.inputs()->Get(0)];
  const Operand &out = operands_[instruction.outputs()->Get(0)];
  copyIfDistinct(in, out);
  return comm_.allReduce(out.as<float>(), out.numElements(),
                         mean ? device::ReduceOp::Mean : device::ReduceOp::Sum);
}
