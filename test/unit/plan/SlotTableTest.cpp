//===- SlotTableTest.cpp - slot rule and replica groups -------------------===//
#include "runtime/plan/SlotTable.h"
#include "test/unit/plan/RandomPlacement.h"

#include <gtest/gtest.h>

#include <algorithm>

using namespace flexmoe::plan;

namespace {

using test::Rows;

Placement makePlacement(int64_t worldSize, int64_t slots, Rows replicas) {
  Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slots;
  placement.replicas = std::move(replicas);
  return placement;
}

TEST(SlotTable, FollowsTheSlotRuleOnTheIRExample) {
  SlotTable table =
      buildSlotTable(makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}}));
  EXPECT_EQ(table.worldSize, 4);
  EXPECT_EQ(table.slotsPerDevice, 2);
  EXPECT_EQ(table.numExperts, 4);
  EXPECT_EQ(table.slotExpert, (Rows{{0, -1}, {1, -1}, {2, -1}, {2, 3}}));
  EXPECT_EQ(table.slotOf(3, 2), 0);
  EXPECT_EQ(table.slotOf(3, 3), 1);
  EXPECT_EQ(table.slotOf(2, 2), 0);
  EXPECT_EQ(table.slotOf(0, 2), -1);
  EXPECT_EQ(table.slotOf(1, 0), -1);
}

TEST(SlotTable, OrdersSlotsByExpertIdNotListingOrder) {
  // Device 0 is listed for expert 3 before expert 1 is seen; its slots still
  // hold experts in ascending id: 1, 3, 4.
  SlotTable table =
      buildSlotTable(makePlacement(2, 4, {{1}, {1, 0}, {1}, {0, 1}, {0}}));
  EXPECT_EQ(table.slotExpert, (Rows{{1, 3, 4, -1}, {0, 1, 2, 3}}));
  EXPECT_EQ(table.slotOf(0, 4), 2);
  EXPECT_EQ(table.slotOf(1, 3), 3);
}

TEST(SlotTable, SlotOfIsTheInverseOfSlotExpert) {
  Placement placement = makePlacement(3, 3, {{0, 1}, {2}, {1, 2}, {0}, {2}});
  SlotTable table = buildSlotTable(placement);
  for (int64_t d = 0; d < 3; ++d) {
    for (int64_t s = 0; s < 3; ++s) {
      int64_t e = table.slotExpert[d][s];
      if (e >= 0) {
        EXPECT_EQ(table.slotOf(d, e), s);
      }
    }
    for (int64_t e = 0; e < 5; ++e) {
      int64_t s = table.slotOf(d, e);
      bool holds = false;
      for (int64_t r : placement.replicas[e])
        holds |= r == d;
      EXPECT_EQ(s >= 0, holds) << "device " << d << " expert " << e;
      if (s >= 0) {
        EXPECT_EQ(table.slotExpert[d][s], e);
      }
    }
  }
}

TEST(SlotTable, SlotOfOutOfRangeIsMinusOne) {
  SlotTable table = buildSlotTable(roundRobinPlacement(4, 2));
  EXPECT_EQ(table.slotOf(-1, 0), -1);
  EXPECT_EQ(table.slotOf(2, 0), -1);
  EXPECT_EQ(table.slotOf(0, -1), -1);
  EXPECT_EQ(table.slotOf(0, 4), -1);
}

TEST(SlotTable, RoundRobinFillsSlotsInOrder) {
  SlotTable table = buildSlotTable(roundRobinPlacement(7, 3));
  EXPECT_EQ(table.slotExpert, (Rows{{0, 3, 6}, {1, 4, -1}, {2, 5, -1}}));
}

TEST(SlotTable, InvalidPlacementGivesAWellFormedTable) {
  // Out-of-range devices are ignored; experts past the last slot get none.
  SlotTable table = buildSlotTable(makePlacement(2, 1, {{0, 9}, {0}, {-1, 1}}));
  EXPECT_EQ(table.slotExpert, (Rows{{0}, {2}}));
  EXPECT_EQ(table.slotOf(0, 1), -1);

  SlotTable huge = buildSlotTable(makePlacement(int64_t{1} << 40, -5, {{0}}));
  EXPECT_EQ(huge.worldSize, kMaxWorldSize);
  EXPECT_EQ(huge.slotsPerDevice, 0);
  EXPECT_EQ(huge.slotOf(0, 0), -1);
}

TEST(ReplicaGroups, OnlyExpertsWithSeveralReplicas) {
  std::vector<ReplicaGroup> groups =
      buildReplicaGroups(makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}}));
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_EQ(groups[0].expert, 2);
  EXPECT_EQ(groups[0].members, (std::vector<ReplicaMember>{{2, 0}, {3, 0}}));
}

TEST(ReplicaGroups, MembersInAscendingDeviceOrderWithTheirSlots) {
  // Expert 1 listed as {3, 0, 2}: members ordered 0, 2, 3, each with the slot
  // its device keeps expert 1 in.
  std::vector<ReplicaGroup> groups = buildReplicaGroups(
      makePlacement(4, 3, {{0, 2}, {3, 0, 2}, {1}, {3, 1}, {2}}));
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(groups[0], (ReplicaGroup{0, {{0, 0}, {2, 0}}}));
  EXPECT_EQ(groups[1], (ReplicaGroup{1, {{0, 1}, {2, 1}, {3, 0}}}));
  EXPECT_EQ(groups[2], (ReplicaGroup{3, {{1, 1}, {3, 1}}}));
}

TEST(ReplicaGroups, NoneForPlainExpertParallelism) {
  EXPECT_TRUE(buildReplicaGroups(roundRobinPlacement(64, 16)).empty());
}

TEST(ReplicaGroups, EveryDeviceHoldingEveryExpert) {
  std::vector<ReplicaGroup> groups =
      buildReplicaGroups(makePlacement(3, 2, {{2, 1, 0}, {0, 1, 2}}));
  ASSERT_EQ(groups.size(), 2u);
  for (int64_t e = 0; e < 2; ++e) {
    EXPECT_EQ(groups[e].expert, e);
    EXPECT_EQ(groups[e].members,
              (std::vector<ReplicaMember>{{0, e}, {1, e}, {2, e}}));
  }
}

TEST(SlotTable, SlotRuleOnRandomPlacements) {
  for (uint64_t seed = 0; seed < 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Placement placement = test::randomPlacement(rng);
    SlotTable table = buildSlotTable(placement);
    for (int64_t d = 0; d < placement.worldSize; ++d) {
      // The experts d holds, in ascending id, then empty slots.
      std::vector<int64_t> expected;
      for (int64_t e = 0; e < placement.numExperts(); ++e)
        for (int64_t r : placement.replicas[e])
          if (r == d)
            expected.push_back(e);
      expected.resize(placement.slotsPerDevice, -1);
      ASSERT_EQ(table.slotExpert[d], expected) << "device " << d;
      for (int64_t s = 0; s < placement.slotsPerDevice; ++s)
        if (expected[s] >= 0) {
          EXPECT_EQ(table.slotOf(d, expected[s]), s);
        }
    }
  }
}

TEST(ReplicaGroups, OnRandomPlacements) {
  for (uint64_t seed = 0; seed < 300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Placement placement = test::randomPlacement(rng);
    SlotTable table = buildSlotTable(placement);
    std::vector<ReplicaGroup> groups = buildReplicaGroups(placement);
    size_t next = 0;
    for (int64_t e = 0; e < placement.numExperts(); ++e) {
      std::vector<int64_t> devices = placement.replicas[e];
      if (devices.size() < 2)
        continue;
      std::sort(devices.begin(), devices.end());
      ASSERT_LT(next, groups.size());
      const ReplicaGroup &group = groups[next++];
      EXPECT_EQ(group.expert, e);
      ASSERT_EQ(group.members.size(), devices.size());
      for (size_t i = 0; i < devices.size(); ++i) {
        EXPECT_EQ(group.members[i].device, devices[i]);
        EXPECT_EQ(group.members[i].slot, table.slotOf(devices[i], e));
      }
    }
    EXPECT_EQ(next, groups.size());
  }
}

} // namespace
