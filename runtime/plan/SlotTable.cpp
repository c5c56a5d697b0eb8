//===- SlotTable.cpp - local expert slots and replica groups --------------===//
#include "runtime/plan/SlotTable.h"

#include <algorithm>

using namespace flexmoe::plan;

int64_t SlotTable::slotOf(int64_t device, int64_t expert) const {
  if (device < 0 || device >= worldSize || expert < 0 || expert >= numExperts)
    return -1;
  return expertSlot[device * numExperts + expert];
}

SlotTable flexmoe::plan::buildSlotTable(const Placement &placement) {
  SlotTable table;
  // Clamped so that even an unchecked placement gives a table that fits.
  table.worldSize = std::clamp<int64_t>(placement.worldSize, 0, kMaxWorldSize);
  table.slotsPerDevice =
      std::clamp<int64_t>(placement.slotsPerDevice, 0, kMaxSlotsPerDevice);
  table.numExperts = placement.numExperts();
  table.slotExpert.assign(table.worldSize,
                          std::vector<int64_t>(table.slotsPerDevice, -1));
  table.expertSlot.assign(table.worldSize * table.numExperts, -1);

  // Mark where the replicas are, then number each device's experts in
  // ascending id: that order is the slot rule.
  std::vector<char> holds(table.worldSize * table.numExperts, 0);
  for (int64_t e = 0; e < table.numExperts; ++e)
    for (int64_t d : placement.replicas[e])
      if (d >= 0 && d < table.worldSize)
        holds[d * table.numExperts + e] = 1;
  for (int64_t d = 0; d < table.worldSize; ++d) {
    int64_t slot = 0;
    for (int64_t e = 0; e < table.numExperts && slot < table.slotsPerDevice;
         ++e) {
      if (!holds[d * table.numExperts + e])
        continue;
      table.slotExpert[d][slot] = e;
      table.expertSlot[d * table.numExperts + e] = slot;
      ++slot;
    }
  }
  return table;
}

std::vector<ReplicaGroup>
flexmoe::plan::buildReplicaGroups(const Placement &placement) {
  SlotTable table = buildSlotTable(placement);
  std::vector<ReplicaGroup> groups;
  for (int64_t e = 0; e < table.numExperts; ++e) {
    ReplicaGroup group;
    group.expert = e;
    // Walking devices in order gives ascending device order for free, and
    // ignores how the placement happened to list them.
    for (int64_t d = 0; d < table.worldSize; ++d) {
      int64_t slot = table.slotOf(d, e);
      if (slot >= 0)
        group.members.push_back({d, slot});
    }
    if (group.members.size() >= 2)
      groups.push_back(std::move(group));
  }
  return groups;
}
