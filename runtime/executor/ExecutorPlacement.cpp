//===- ExecutorPlacement.cpp - changing expert placement at run time ------===//
//
// What follows a MoE layer's placement: the layer's expert slots (parameters
// and optimizer state), its replica groups and the gradient-norm terms, and
// the setPlacement migration that moves them. See docs/dispatch-plan.md,
// "Changing placement at run time".
//
//===----------------------------------------------------------------------===//

#include "runtime/executor/Executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::executor;
using device::Operand;

namespace {

/// One migration message per transfer: an expert's slices of every buffer.
constexpr int kMigrationTag = 0x706d; // "pm"

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;

uint64_t fnv1a(uint64_t hash, std::span<const std::byte> bytes) {
  for (std::byte b : bytes) {
    hash ^= static_cast<uint64_t>(b);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

/// An expert replica that a rank must receive: `expert` from `source` to
/// `destination`.
struct Transfer {
  int64_t expert, source, destination;
};

/// Every rank computes the same list from the two placements: experts in
/// ascending order, destinations ascending; each source is the holder of
/// the expert that has sent the fewest replicas so far (the lowest rank on
/// ties), which spreads the sending load deterministically.
std::vector<Transfer> planTransfers(const plan::Placement &from,
                                    const plan::SlotTable &fromTable,
                                    const plan::Placement &to) {
  std::vector<Transfer> transfers;
  std::vector<int64_t> sent(from.worldSize, 0);
  for (int64_t e = 0; e < to.numExperts(); ++e) {
    std::vector<int64_t> destinations = to.replicas[e];
    std::sort(destinations.begin(), destinations.end());
    std::vector<int64_t> holders = from.replicas[e];
    std::sort(holders.begin(), holders.end());
    for (int64_t d : destinations) {
      if (fromTable.slotOf(d, e) >= 0)
        continue; // kept: a local copy
      int64_t source = holders.front();
      for (int64_t h : holders)
        if (sent[h] < sent[source])
          source = h;
      ++sent[source];
      transfers.push_back({e, source, d});
    }
  }
  return transfers;
}

} // namespace

Status Executor::prepareLayers() {
  const fb::Program &prog = program_.program();
  const auto *buffers = prog.buffers();
  for (size_t l = 0; l < layerState_.size(); ++l) {
    LayerState &state = layerState_[l];
    state.expertParameters.clear();
    state.expertState.clear();
    for (size_t id = 0; id < operands_.size(); ++id) {
      const fb::Buffer &buffer = *buffers->Get(id);
      // Gradients are rewritten every step; views share their source.
      if (buffer.moe_layer() != static_cast<int32_t>(l) ||
          buffer.alias_of() >= 0 || !program::isPersistent(buffer.kind()))
        continue;
      if (buffer.kind() == fb::BufferKind::Parameter)
        state.expertParameters.push_back(static_cast<uint32_t>(id));
      else if (buffer.kind() == fb::BufferKind::AdamM ||
               buffer.kind() == fb::BufferKind::AdamV)
        state.expertState.push_back(static_cast<uint32_t>(id));
    }
    state.replicaGroups = plan::buildReplicaGroups(state.placement);
  }
  return Status::ok();
}

void Executor::buildNormTerms() {
  // Dense gradients are identical on every rank after their all-reduce; an
  // expert's gradient is counted on the lowest rank holding it, in its slot
  // there, and summed over the ranks.
  const fb::Program &prog = program_.program();
  const auto *instructions = prog.instructions();
  size_t count = instructions ? instructions->size() : 0;
  int64_t rank = comm_.rank();
  std::vector<plan::SlotTable> tables;
  for (const LayerState &state : layerState_)
    tables.push_back(plan::buildSlotTable(state.placement));
  normTerms_.clear();
  for (size_t i = firstUpdate_; i < count; ++i) {
    const fb::Instruction &inst = *instructions->Get(i);
    if (inst.opcode() != fb::OpCode::AdamW)
      continue;
    uint32_t paramId = inst.inputs()->Get(0), gradId = inst.inputs()->Get(1);
    const fb::Buffer &param = *prog.buffers()->Get(paramId);
    const Operand &grad = operands_[gradId];
    if (param.moe_layer() < 0) {
      normTerms_.push_back({gradId, 0, grad.numElements(), false});
      continue;
    }
    const plan::Placement &placement = layerState_[param.moe_layer()].placement;
    const plan::SlotTable &table = tables[param.moe_layer()];
    int64_t slots = placement.slotsPerDevice;
    int64_t perSlot = slots ? grad.numElements() / slots : 0;
    for (int64_t s = 0; s < slots; ++s) {
      int64_t expert = table.slotExpert[rank][s];
      if (expert < 0)
        continue;
      const std::vector<int64_t> &holders = placement.replicas[expert];
      if (*std::min_element(holders.begin(), holders.end()) == rank)
        normTerms_.push_back({gradId, s * perSlot, perSlot, true});
    }
  }
}

Status Executor::setPlacement(size_t layer, const plan::Placement &next,
                              MigrationStats *stats) {
  auto start = std::chrono::steady_clock::now();
  if (layer >= layerState_.size())
    return errorf("cannot change the placement of MoE layer ", layer,
                  ": the program has ", layerState_.size(), " MoE layer(s)");
  const fb::MoeLayer &moe = *program_.program().moe_layers()->Get(layer);
  std::string_view name = moe.name()->string_view();
  LayerState &state = layerState_[layer];
  const plan::Placement &current = state.placement;
  if (next.worldSize != current.worldSize)
    return errorf("layer '", name, "': the new placement is for world size ",
                  next.worldSize, " but the program runs on ",
                  current.worldSize, " ranks");
  if (next.slotsPerDevice != current.slotsPerDevice)
    return errorf(
        "layer '", name, "': the new placement has ", next.slotsPerDevice,
        " slots per device but the program stores ", current.slotsPerDevice);
  if (next.numExperts() != current.numExperts())
    return errorf("layer '", name, "': the new placement places ",
                  next.numExperts(), " experts but the layer has ",
                  current.numExperts());
  FLEXMOE_RETURN_IF_ERROR(plan::validatePlacement(next, name));

  MigrationStats local;
  const int64_t rank = comm_.rank(), slots = current.slotsPerDevice;
  plan::SlotTable from = plan::buildSlotTable(current);
  plan::SlotTable to = plan::buildSlotTable(next);

  // One expert's slot of every buffer, packed in buffer order: the unit
  // of a transfer and of the snapshot below.
  std::vector<uint32_t> ids = state.expertParameters;
  ids.insert(ids.end(), state.expertState.begin(), state.expertState.end());
  std::vector<size_t> slotBytes(ids.size());
  size_t messageBytes = 0;
  for (size_t b = 0; b < ids.size(); ++b) {
    slotBytes[b] = operands_[ids[b]].numBytes() / slots;
    messageBytes += slotBytes[b];
  }
  auto pack = [&](int64_t slot, std::byte *out) -> Status {
    for (size_t b = 0; b < ids.size(); ++b) {
      FLEXMOE_RETURN_IF_ERROR(device_.copyToHost(
          out, operands_[ids[b]].data + slot * slotBytes[b], slotBytes[b]));
      out += slotBytes[b];
    }
    return Status::ok();
  };
  auto unpack = [&](const std::byte *in, int64_t slot) -> Status {
    for (size_t b = 0; b < ids.size(); ++b) {
      FLEXMOE_RETURN_IF_ERROR(device_.copyToDevice(
          operands_[ids[b]].data + slot * slotBytes[b], in, slotBytes[b]));
      in += slotBytes[b];
    }
    return Status::ok();
  };
  std::vector<Transfer> transfers = planTransfers(current, from, next);

  // Snapshot the old slots that a copy or a send reads: slots shift under
  // the slot rule, so writing the new slots could overwrite them first.
  // Kept replicas that stay in their slot are not touched at all.
  std::vector<int64_t> snapshotOf(slots, -1);
  int64_t snapshots = 0;
  auto need = [&](int64_t oldSlot) {
    if (snapshotOf[oldSlot] < 0)
      snapshotOf[oldSlot] = snapshots++;
  };
  for (int64_t s = 0; s < slots; ++s) {
    int64_t expert = to.slotExpert[rank][s];
    int64_t old = expert >= 0 ? from.slotOf(rank, expert) : -1;
    if (old >= 0 && old != s)
      need(old);
  }
  for (const Transfer &t : transfers)
    if (t.source == rank)
      need(from.slotOf(rank, t.expert));
  FLEXMOE_RETURN_IF_ERROR(stream_->synchronize());
  std::vector<std::byte> &scratch = state.migrationScratch;
  scratch.resize((snapshots + 1) * messageBytes);
  for (int64_t s = 0; s < slots; ++s)
    if (snapshotOf[s] >= 0)
      FLEXMOE_RETURN_IF_ERROR(
          pack(s, scratch.data() + snapshotOf[s] * messageBytes));
  std::byte *message = scratch.data() + snapshots * messageBytes;

  // Local copies, and zeros in the slots left empty.
  for (int64_t s = 0; s < slots; ++s) {
    int64_t expert = to.slotExpert[rank][s];
    int64_t old = expert >= 0 ? from.slotOf(rank, expert) : -1;
    if (expert < 0) {
      std::fill(message, message + messageBytes, std::byte{0});
      FLEXMOE_RETURN_IF_ERROR(unpack(message, s));
    } else if (old >= 0 && old != s) {
      FLEXMOE_RETURN_IF_ERROR(
          unpack(scratch.data() + snapshotOf[old] * messageBytes, s));
      ++local.localMoves;
    }
  }

  // Every rank walks the same transfer list and does its part of each in
  // order: the earliest unfinished transfer always has both its ranks at
  // it, so blocking send/recv cannot deadlock.
  for (const Transfer &t : transfers) {
    if (t.source == rank) {
      int64_t slot = from.slotOf(rank, t.expert);
      FLEXMOE_RETURN_IF_ERROR(
          comm_.send(scratch.data() + snapshotOf[slot] * messageBytes,
                     messageBytes, t.destination, kMigrationTag));
      ++local.replicasSent;
      local.bytesSent += static_cast<int64_t>(messageBytes);
    } else if (t.destination == rank) {
      FLEXMOE_RETURN_IF_ERROR(
          comm_.recv(message, messageBytes, t.source, kMigrationTag));
      FLEXMOE_RETURN_IF_ERROR(unpack(message, to.slotOf(rank, t.expert)));
      ++local.replicasReceived;
      local.bytesReceived += static_cast<int64_t>(messageBytes);
    }
  }
  for (int64_t d = 0; d < current.worldSize; ++d)
    for (int64_t e = 0; e < current.numExperts(); ++e) {
      bool had = from.slotOf(d, e) >= 0, has = to.slotOf(d, e) >= 0;
      local.replicasAdded += has && !had;
      local.replicasRemoved += had && !has;
    }

  state.placement = next;
  state.replicaGroups = plan::buildReplicaGroups(state.placement);
  // The next run plans afresh from the new placement.
  state.plannedRun = -1;
  buildNormTerms();
  local.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  if (stats)
    *stats = local;
  return Status::ok();
}

Status Executor::setRoutingBias(size_t layer, std::vector<float> bias) {
  if (layer >= layerState_.size())
    return errorf("cannot set the routing bias of MoE layer ", layer,
                  ": the program has ", layerState_.size(), " MoE layer(s)");
  const fb::MoeLayer &moe = *program_.program().moe_layers()->Get(layer);
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != moe.num_experts())
    return errorf("layer '", moe.name()->string_view(), "': a routing bias of ",
                  bias.size(), " values for ", moe.num_experts(), " experts");
  for (size_t e = 0; e < bias.size(); ++e)
    if (!std::isfinite(bias[e]))
      return errorf("layer '", moe.name()->string_view(),
                    "': the routing bias of expert ", e, " is not finite (",
                    bias[e], ")");
  layerState_[layer].routingBias = std::move(bias);
  return Status::ok();
}

StatusOr<std::vector<SlotChecksum>>
Executor::slotChecksums(size_t layer) const {
  if (layer >= layerState_.size())
    return errorf("no MoE layer ", layer, ": the program has ",
                  layerState_.size());
  const LayerState &state = layerState_[layer];
  int64_t slots = state.placement.slotsPerDevice;
  plan::SlotTable table = plan::buildSlotTable(state.placement);
  std::vector<SlotChecksum> sums(slots);
  for (int64_t s = 0; s < slots; ++s) {
    sums[s].slot = s;
    sums[s].expert = table.slotExpert[comm_.rank()][s];
    sums[s].parameters = sums[s].optimizerState = kFnvOffset;
  }
  FLEXMOE_RETURN_IF_ERROR(stream_->synchronize());
  std::vector<std::byte> host;
  auto hash = [&](const std::vector<uint32_t> &ids,
                  uint64_t SlotChecksum::*field) -> Status {
    for (uint32_t id : ids) {
      const Operand &operand = operands_[id];
      host.resize(operand.numBytes());
      FLEXMOE_RETURN_IF_ERROR(
          device_.copyToHost(host.data(), operand.data, host.size()));
      size_t perSlot = host.size() / slots;
      for (int64_t s = 0; s < slots; ++s)
        sums[s].*field = fnv1a(sums[s].*field,
                               std::span(host).subspan(s * perSlot, perSlot));
    }
    return Status::ok();
  };
  FLEXMOE_RETURN_IF_ERROR(
      hash(state.expertParameters, &SlotChecksum::parameters));
  FLEXMOE_RETURN_IF_ERROR(
      hash(state.expertState, &SlotChecksum::optimizerState));
  return sums;
}

int64_t Executor::expertParameterBytes(size_t layer) const {
  if (layer >= layerState_.size())
    return 0;
  const LayerState &state = layerState_[layer];
  int64_t bytes = 0;
  for (uint32_t id : state.expertParameters)
    bytes += operands_[id].numBytes() / state.placement.slotsPerDevice;
  return bytes;
}

int64_t Executor::expertStateBytes(size_t layer) const {
  if (layer >= layerState_.size())
    return 0;
  const LayerState &state = layerState_[layer];
  int64_t bytes = expertParameterBytes(layer);
  for (uint32_t id : state.expertState)
    bytes += operands_[id].numBytes() / state.placement.slotsPerDevice;
  return bytes;
}

int64_t Executor::allToAllRowBytes(size_t layer) const {
  if (layer >= layerState_.size())
    return 0;
  return static_cast<int64_t>(
             program_.program().moe_layers()->Get(layer)->d_model()) *
         static_cast<int64_t>(sizeof(float));
}
