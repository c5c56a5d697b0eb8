//===- ExpertSlots.h - expert parameters between slots and experts -*- C++ -*-//
//
// On a device, the parameters of a MoE layer's experts are stored per local
// slot ([slots_per_device, ...]); the layer's slot table says which expert
// each slot of each rank holds (replicas in several slots, -1 = empty). A
// checkpoint stores them placement-independently, in expert order
// ([num_experts, ...]). These functions convert between the two on the host;
// they see every rank's slots, so a distributed checkpoint only has to
// gather (save) the slot data of the other ranks over the Communicator
// before calling them.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_TRAIN_EXPERTSLOTS_H
#define FLEXMOE_RUNTIME_TRAIN_EXPERTSLOTS_H

#include "runtime/plan/Placement.h"
#include "runtime/schema/program_generated.h"
#include "runtime/support/Status.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace flexmoe::train {

/// A layer's slot table.
struct SlotMap {
  int64_t worldSize = 1;
  int64_t slotsPerDevice = 0;
  int64_t numExperts = 0;
  /// Row-major [worldSize, slotsPerDevice]: the expert in each slot, -1 if
  /// empty.
  std::vector<int32_t> table;

  int32_t expertAt(int64_t rank, int64_t slot) const {
    return table[rank * slotsPerDevice + slot];
  }
};

/// The slot map of a verified program's MoE layer (its initial placement).
SlotMap slotMapOf(const fb::MoeLayer &layer);
/// The slot map of a placement (one that passes plan::validatePlacement):
/// an executor's current one, after Executor::setPlacement.
SlotMap slotMapOf(const plan::Placement &placement);

/// The [numExperts, ...] tensor in expert order from every rank's
/// [slotsPerDevice, ...] slot data (rankSlots[r]: rank r's bytes,
/// slotsPerDevice × expertBytes each). Each expert is taken from its first
/// replica (lowest rank, lowest slot). An error if an expert has no slot.
StatusOr<std::vector<std::byte>>
expertsFromSlots(const SlotMap &map,
                 std::span<const std::span<const std::byte>> rankSlots,
                 size_t expertBytes);

/// Rank `rank`'s [slotsPerDevice, ...] slot data from the [numExperts, ...]
/// tensor: every slot gets its expert's values (all replicas alike), empty
/// slots zeros.
std::vector<std::byte> slotsFromExperts(const SlotMap &map, int64_t rank,
                                        std::span<const std::byte> experts,
                                        size_t expertBytes);

} // namespace flexmoe::train

#endif // FLEXMOE_RUNTIME_TRAIN_EXPERTSLOTS_H
