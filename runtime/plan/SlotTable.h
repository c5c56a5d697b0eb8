//===- SlotTable.h - local expert slots and replica groups ------*- C++ -*-===//
//
// What a placement means for the storage on each device: which expert each
// local slot holds (docs/IR.md's slot rule), and which slots of which devices
// must sum their gradients because they hold replicas of one expert.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PLAN_SLOTTABLE_H
#define FLEXMOE_RUNTIME_PLAN_SLOTTABLE_H

#include "runtime/plan/Placement.h"

#include <cstdint>
#include <vector>

namespace flexmoe::plan {

/// The slot rule: device d's local slot s holds the s-th expert, in ascending
/// expert id, among those with a replica on d; unused slots hold -1.
struct SlotTable {
  int64_t worldSize = 0;
  int64_t slotsPerDevice = 0;
  int64_t numExperts = 0;
  /// slotExpert[d][s]: the expert in device d's slot s, or -1 when empty.
  std::vector<std::vector<int64_t>> slotExpert;
  /// expertSlot[d * numExperts + e]: the inverse of slotExpert, -1 where d
  /// holds no replica of e. Read it through slotOf.
  std::vector<int64_t> expertSlot;

  /// Device's local slot holding expert, or -1 if it holds none (or either id
  /// is out of range).
  int64_t slotOf(int64_t device, int64_t expert) const;
};

/// Builds the slot table of a placement that passes validatePlacement. For one
/// that does not, the table is well-formed but meaningless: out-of-range
/// devices are ignored, experts beyond a device's last slot get no slot, and
/// the shape is clamped to the bounds of Placement.h.
SlotTable buildSlotTable(const Placement &placement);

/// One replica of an expert: the device and the local slot that holds it.
struct ReplicaMember {
  int64_t device = 0;
  int64_t slot = 0;
  bool operator==(const ReplicaMember &) const = default;
};

/// The replicas of one expert whose gradients are summed before the update
/// (moe.replica_grad_sync), so that they stay bit-identical.
struct ReplicaGroup {
  int64_t expert = 0;
  /// In ascending device order; at least two.
  std::vector<ReplicaMember> members;
  bool operator==(const ReplicaGroup &) const = default;
};

/// The replica groups of a placement that passes validatePlacement: one per
/// expert with at least two replicas, in ascending expert order. Experts with
/// one replica need no gradient sync and have no group. Members without a
/// slot (only in an invalid placement) are left out.
std::vector<ReplicaGroup> buildReplicaGroups(const Placement &placement);

} // namespace flexmoe::plan

#endif // FLEXMOE_RUNTIME_PLAN_SLOTTABLE_H
