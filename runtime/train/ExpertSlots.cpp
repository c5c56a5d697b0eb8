//===- ExpertSlots.cpp - expert parameters between slots and experts ------===//
#include "runtime/train/ExpertSlots.h"

#include "runtime/plan/SlotTable.h"

#include <cstring>

using namespace flexmoe;
using namespace flexmoe::train;

SlotMap flexmoe::train::slotMapOf(const fb::MoeLayer &layer) {
  SlotMap map;
  map.worldSize = layer.placement()->world_size();
  map.slotsPerDevice = layer.placement()->slots_per_device();
  map.numExperts = layer.num_experts();
  map.table.assign(layer.slot_table()->begin(), layer.slot_table()->end());
  return map;
}

SlotMap flexmoe::train::slotMapOf(const plan::Placement &placement) {
  plan::SlotTable slots = plan::buildSlotTable(placement);
  SlotMap map;
  map.worldSize = slots.worldSize;
  map.slotsPerDevice = slots.slotsPerDevice;
  map.numExperts = slots.numExperts;
  map.table.reserve(map.worldSize * map.slotsPerDevice);
  for (const std::vector<int64_t> &device : slots.slotExpert)
    for (int64_t expert : device)
      map.table.push_back(static_cast<int32_t>(expert));
  return map;
}

StatusOr<std::vector<std::byte>> flexmoe::train::expertsFromSlots(
    const SlotMap &map, std::span<const std::span<const std::byte>> rankSlots,
    size_t expertBytes) {
  if (static_cast<int64_t>(rankSlots.size()) != map.worldSize)
    return errorf("expected the slots of ", map.worldSize, " ranks, got ",
                  rankSlots.size());
  std::vector<std::byte> experts(map.numExperts * expertBytes);
  std::vector<bool> found(map.numExperts, false);
  for (int64_t r = 0; r < map.worldSize; ++r) {
    if (rankSlots[r].size() != map.slotsPerDevice * expertBytes)
      return errorf("rank ", r, " holds ", rankSlots[r].size(),
                    " bytes of expert slots, expected ",
                    map.slotsPerDevice * expertBytes);
    for (int64_t s = 0; s < map.slotsPerDevice; ++s) {
      int32_t e = map.expertAt(r, s);
      if (e < 0 || e >= map.numExperts || found[e])
        continue;
      found[e] = true;
      if (expertBytes)
        std::memcpy(experts.data() + e * expertBytes,
                    rankSlots[r].data() + s * expertBytes, expertBytes);
    }
  }
  for (int64_t e = 0; e < map.numExperts; ++e)
    if (!found[e])
      return errorf("expert ", e, " is in no slot of any rank");
  return experts;
}

std::vector<std::byte>
flexmoe::train::slotsFromExperts(const SlotMap &map, int64_t rank,
                                 std::span<const std::byte> experts,
                                 size_t expertBytes) {
  std::vector<std::byte> slots(map.slotsPerDevice * expertBytes, std::byte{0});
  for (int64_t s = 0; s < map.slotsPerDevice; ++s) {
    int32_t e = map.expertAt(rank, s);
    if (e >= 0 && e < map.numExperts && expertBytes)
      std::memcpy(slots.data() + s * expertBytes,
                  experts.data() + e * expertBytes, expertBytes);
  }
  return slots;
}
