//===- DispatchPlanTest.cpp - dispatch plans on hand-computed cases -------===//
//
// The first case is the worked example of docs/dispatch-plan.md; keep them in
// sync.
//
//===----------------------------------------------------------------------===//
#include "runtime/plan/DispatchPlan.h"

#include <gtest/gtest.h>

#include <limits>

using namespace flexmoe;
using namespace flexmoe::plan;

namespace {

using Rows = std::vector<std::vector<int64_t>>;
using Vec = std::vector<int64_t>;

Placement makePlacement(int64_t worldSize, int64_t slots, Rows replicas) {
  Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slots;
  placement.replicas = std::move(replicas);
  return placement;
}

Segment seg(int64_t expert, int64_t src, int64_t dst, int64_t slot,
            int64_t rows, int64_t srcOffset, int64_t sendOffset,
            int64_t recvOffset, int64_t slotOffset) {
  return Segment{expert,    src,        dst,        slot,      rows,
                 srcOffset, sendOffset, recvOffset, slotOffset};
}

DispatchPlan planOrDie(const Placement &placement, const Rows &counts) {
  StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts, "moe1");
  EXPECT_TRUE(plan.isOk()) << plan.status().message();
  return plan.isOk() ? std::move(plan).value() : DispatchPlan{};
}

std::string errorOf(const Placement &placement, const Rows &counts) {
  StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts, "moe1");
  return plan.isOk() ? "ok" : plan.status().message();
}

// docs/dispatch-plan.md, "A worked example".
class WorkedExample : public ::testing::Test {
protected:
  Placement placement = makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}});
  Rows counts = {{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}};
  DispatchPlan plan = planOrDie(placement, counts);
};

TEST_F(WorkedExample, Summary) {
  EXPECT_EQ(plan.worldSize, 4);
  EXPECT_EQ(plan.slotsPerDevice, 2);
  EXPECT_EQ(plan.numExperts, 4);
  EXPECT_EQ(plan.load, (Vec{6, 4, 7, 13}));
  EXPECT_EQ(plan.totalRows, 30);
  EXPECT_EQ(plan.crossDeviceRows, 20);
  EXPECT_DOUBLE_EQ(plan.balanceRatio, 13.0 / (30.0 / 4.0));
}

TEST_F(WorkedExample, SendSide) {
  const DevicePlan &d0 = plan.devices[0];
  EXPECT_EQ(d0.sends, (std::vector<Segment>{seg(0, 0, 0, 0, 3, 0, 0, 0, 0),
                                            seg(1, 0, 1, 0, 1, 3, 3, 0, 0),
                                            seg(2, 0, 2, 0, 5, 4, 4, 0, 0),
                                            seg(2, 0, 3, 0, 1, 9, 9, 0, 0),
                                            seg(3, 0, 3, 1, 1, 10, 10, 1, 6)}));
  EXPECT_EQ(d0.sendCounts, (Vec{3, 1, 5, 2}));
  EXPECT_EQ(d0.sendOffsets, (Vec{0, 3, 4, 9}));
  EXPECT_EQ(d0.sendRows, 11);

  const DevicePlan &d1 = plan.devices[1];
  EXPECT_EQ(d1.sends, (std::vector<Segment>{seg(1, 1, 1, 0, 2, 0, 0, 1, 1),
                                            seg(2, 1, 3, 0, 5, 2, 2, 2, 1),
                                            seg(3, 1, 3, 1, 1, 7, 7, 7, 7)}));
  EXPECT_EQ(d1.sendCounts, (Vec{0, 2, 0, 6}));
  EXPECT_EQ(d1.sendOffsets, (Vec{0, 0, 2, 2}));

  const DevicePlan &d2 = plan.devices[2];
  EXPECT_EQ(d2.sends, (std::vector<Segment>{seg(0, 2, 0, 0, 1, 0, 0, 3, 3),
                                            seg(2, 2, 2, 0, 2, 1, 1, 5, 5),
                                            seg(3, 2, 3, 1, 2, 3, 3, 8, 8)}));
  EXPECT_EQ(d2.sendCounts, (Vec{1, 0, 2, 2}));
  EXPECT_EQ(d2.sendOffsets, (Vec{0, 1, 1, 3}));

  const DevicePlan &d3 = plan.devices[3];
  EXPECT_EQ(d3.sends, (std::vector<Segment>{seg(0, 3, 0, 0, 2, 0, 0, 4, 4),
                                            seg(1, 3, 1, 0, 1, 2, 2, 3, 3),
                                            seg(3, 3, 3, 1, 3, 3, 3, 10, 10)}));
  EXPECT_EQ(d3.sendCounts, (Vec{2, 1, 0, 3}));
  EXPECT_EQ(d3.sendOffsets, (Vec{0, 2, 3, 3}));
}

TEST_F(WorkedExample, ReceiveSide) {
  const DevicePlan &d0 = plan.devices[0];
  EXPECT_EQ(d0.recvCounts, (Vec{3, 0, 1, 2}));
  EXPECT_EQ(d0.recvOffsets, (Vec{0, 3, 3, 4}));
  EXPECT_EQ(d0.slotCounts, (Vec{6, 0}));
  EXPECT_EQ(d0.slotOffsets, (Vec{0, 6}));
  EXPECT_EQ(d0.recvs, (std::vector<Segment>{seg(0, 0, 0, 0, 3, 0, 0, 0, 0),
                                            seg(0, 2, 0, 0, 1, 0, 0, 3, 3),
                                            seg(0, 3, 0, 0, 2, 0, 0, 4, 4)}));

  const DevicePlan &d2 = plan.devices[2];
  EXPECT_EQ(d2.recvCounts, (Vec{5, 0, 2, 0}));
  EXPECT_EQ(d2.recvOffsets, (Vec{0, 5, 5, 7}));
  EXPECT_EQ(d2.slotCounts, (Vec{7, 0}));

  // Device 3 holds expert 2's second replica in slot 0 and expert 3 in slot
  // 1. Sources 0 and 1 send to both slots, so the receive buffer (by source)
  // and the slot-major buffer (by slot) differ.
  const DevicePlan &d3 = plan.devices[3];
  EXPECT_EQ(d3.recvCounts, (Vec{2, 6, 2, 3}));
  EXPECT_EQ(d3.recvOffsets, (Vec{0, 2, 8, 10}));
  EXPECT_EQ(d3.slotCounts, (Vec{6, 7}));
  EXPECT_EQ(d3.slotOffsets, (Vec{0, 6}));
  EXPECT_EQ(d3.recvRows, 13);
  EXPECT_EQ(d3.recvs, (std::vector<Segment>{seg(2, 0, 3, 0, 1, 9, 9, 0, 0),
                                            seg(2, 1, 3, 0, 5, 2, 2, 2, 1),
                                            seg(3, 0, 3, 1, 1, 10, 10, 1, 6),
                                            seg(3, 1, 3, 1, 1, 7, 7, 7, 7),
                                            seg(3, 2, 3, 1, 2, 3, 3, 8, 8),
                                            seg(3, 3, 3, 1, 3, 3, 3, 10, 10)}));
}

TEST(DispatchPlan, LocalFirstBeatsAscendingOrder) {
  // Expert 0 on devices 0 and 1, 4 tokens from each: quotas 4 and 4. Without
  // local first, source 0 would fill device 0 and source 1's tokens would
  // cross; with it nothing crosses.
  DispatchPlan plan = planOrDie(makePlacement(2, 1, {{0, 1}}), Rows{{4}, {4}});
  EXPECT_EQ(plan.crossDeviceRows, 0);
  EXPECT_EQ(plan.devices[0].sendCounts, (Vec{4, 0}));
  EXPECT_EQ(plan.devices[1].sendCounts, (Vec{0, 4}));
}

TEST(DispatchPlan, QuotaRemainderGoesToLowestDevices) {
  // 7 tokens of expert 0 on replicas {0, 2, 3}, all from device 1 (which has
  // no replica): quotas 3, 2, 2 in ascending device order.
  DispatchPlan plan =
      planOrDie(makePlacement(4, 1, {{3, 0, 2}}), Rows{{0}, {7}, {0}, {0}});
  EXPECT_EQ(plan.load, (Vec{3, 0, 2, 2}));
  EXPECT_EQ(plan.devices[1].sends,
            (std::vector<Segment>{seg(0, 1, 0, 0, 3, 0, 0, 0, 0),
                                  seg(0, 1, 2, 0, 2, 3, 3, 0, 0),
                                  seg(0, 1, 3, 0, 2, 5, 5, 0, 0)}));
  EXPECT_EQ(plan.crossDeviceRows, 7);
}

TEST(DispatchPlan, LocalKeepIsCappedByQuota) {
  // Device 0 routes 9 tokens to expert 0 (replicas 0 and 1), device 1 routes
  // 1: quotas 5 and 5. Device 0 keeps 5 and sends 4 to device 1.
  DispatchPlan plan = planOrDie(makePlacement(2, 1, {{0, 1}}), Rows{{9}, {1}});
  EXPECT_EQ(plan.devices[0].sendCounts, (Vec{5, 4}));
  EXPECT_EQ(plan.devices[1].sendCounts, (Vec{0, 1}));
  EXPECT_EQ(plan.load, (Vec{5, 5}));
  EXPECT_EQ(plan.crossDeviceRows, 4);
  // Device 1 receives its own row first (slot 0, then source order: 0, 1).
  EXPECT_EQ(plan.devices[1].recvs,
            (std::vector<Segment>{seg(0, 0, 1, 0, 4, 5, 5, 0, 0),
                                  seg(0, 1, 1, 0, 1, 0, 0, 4, 4)}));
}

TEST(DispatchPlan, SingleDevice) {
  DispatchPlan plan =
      planOrDie(makePlacement(1, 3, {{0}, {0}, {0}}), Rows{{2, 0, 5}});
  const DevicePlan &d0 = plan.devices[0];
  EXPECT_EQ(d0.sends, (std::vector<Segment>{seg(0, 0, 0, 0, 2, 0, 0, 0, 0),
                                            seg(2, 0, 0, 2, 5, 2, 2, 2, 2)}));
  EXPECT_EQ(d0.recvs, d0.sends);
  EXPECT_EQ(d0.slotCounts, (Vec{2, 0, 5}));
  EXPECT_EQ(d0.slotOffsets, (Vec{0, 2, 2}));
  EXPECT_EQ(plan.crossDeviceRows, 0);
  EXPECT_DOUBLE_EQ(plan.balanceRatio, 1.0);
}

TEST(DispatchPlan, AllZeroCounts) {
  DispatchPlan plan = planOrDie(makePlacement(3, 2, {{0, 1}, {2}, {1}}),
                                Rows{{0, 0, 0}, {0, 0, 0}, {0, 0, 0}});
  EXPECT_EQ(plan.load, (Vec{0, 0, 0}));
  EXPECT_EQ(plan.totalRows, 0);
  EXPECT_DOUBLE_EQ(plan.balanceRatio, 1.0);
  for (const DevicePlan &device : plan.devices) {
    EXPECT_TRUE(device.sends.empty());
    EXPECT_TRUE(device.recvs.empty());
    EXPECT_EQ(device.sendCounts, (Vec{0, 0, 0}));
    EXPECT_EQ(device.recvOffsets, (Vec{0, 0, 0}));
    EXPECT_EQ(device.slotCounts, (Vec{0, 0}));
  }
}

TEST(DispatchPlan, BalanceRatioOfPlainExpertParallelism) {
  // Round-robin, every token to expert 0: device 0 does all the work.
  DispatchPlan plan =
      planOrDie(roundRobinPlacement(4, 4),
                Rows{{5, 0, 0, 0}, {5, 0, 0, 0}, {5, 0, 0, 0}, {5, 0, 0, 0}});
  EXPECT_EQ(plan.load, (Vec{20, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(plan.balanceRatio, 4.0);
  EXPECT_EQ(plan.crossDeviceRows, 15);
  // Replicating expert 0 everywhere (in slot 0 of every device) balances it.
  Placement everywhere = makePlacement(4, 2, {{0, 1, 2, 3}, {1}, {2}, {3}});
  DispatchPlan balanced = planOrDie(
      everywhere, Rows{{5, 0, 0, 0}, {5, 0, 0, 0}, {5, 0, 0, 0}, {5, 0, 0, 0}});
  EXPECT_EQ(balanced.load, (Vec{5, 5, 5, 5}));
  EXPECT_DOUBLE_EQ(balanced.balanceRatio, 1.0);
  EXPECT_EQ(balanced.crossDeviceRows, 0);
}

TEST(DispatchPlan, FlatCountsGiveTheSamePlan) {
  Placement placement = makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}});
  Rows nested = {{3, 1, 6, 0}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}};
  Vec flat = {3, 1, 6, 0, 0, 2, 5, 1, 1, 0, 2, 2, 2, 1, 0, 3};
  StatusOr<DispatchPlan> fromFlat = computeDispatchPlan(placement, flat);
  ASSERT_TRUE(fromFlat.isOk()) << fromFlat.status().message();
  EXPECT_EQ(*fromFlat, planOrDie(placement, nested));
}

TEST(DispatchPlan, ReusedPlanEqualsFreshPlan) {
  // Re-planning into a plan of another shape must leave nothing behind.
  Placement big = makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}});
  Placement small = makePlacement(2, 3, {{0, 1}, {1}, {0}});
  Vec bigCounts = {3, 1, 6, 0, 0, 2, 5, 1, 1, 0, 2, 2, 2, 1, 0, 3};
  Vec smallCounts = {4, 1, 0, 2, 2, 7};
  DispatchPlan reused;
  ASSERT_TRUE(computeDispatchPlan(big, bigCounts, reused).isOk());
  ASSERT_TRUE(computeDispatchPlan(small, smallCounts, reused).isOk());
  EXPECT_EQ(reused, *computeDispatchPlan(small, smallCounts));
  ASSERT_TRUE(computeDispatchPlan(big, bigCounts, reused).isOk());
  EXPECT_EQ(reused, *computeDispatchPlan(big, bigCounts));
}

TEST(DispatchPlan, OneDevicesSegmentsOnly) {
  Placement placement = makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}});
  Vec counts = {3, 1, 6, 0, 0, 2, 5, 1, 1, 0, 2, 2, 2, 1, 0, 3};
  StatusOr<DispatchPlan> full = computeDispatchPlan(placement, counts);
  ASSERT_TRUE(full.isOk());
  DispatchPlan plan;
  ASSERT_TRUE(computeDispatchPlan(placement, counts, plan, "moe1", 3).isOk());
  EXPECT_EQ(plan.devices[3], full->devices[3]);
  for (int64_t d = 0; d < 3; ++d) {
    EXPECT_TRUE(plan.devices[d].sends.empty()) << d;
    EXPECT_TRUE(plan.devices[d].recvs.empty()) << d;
    EXPECT_EQ(plan.devices[d].sendCounts, full->devices[d].sendCounts);
    EXPECT_EQ(plan.devices[d].slotCounts, full->devices[d].slotCounts);
  }
  EXPECT_EQ(plan.load, full->load);
  EXPECT_EQ(plan.crossDeviceRows, full->crossDeviceRows);
}

TEST(DispatchPlan, NoSegmentsAtAll) {
  Placement placement = makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}});
  Vec counts = {3, 1, 6, 1, 0, 2, 5, 1, 1, 0, 2, 2, 2, 1, 0, 3};
  StatusOr<DispatchPlan> full = computeDispatchPlan(placement, counts);
  ASSERT_TRUE(full.isOk());
  DispatchPlan expected = *full;
  for (DevicePlan &device : expected.devices) {
    device.sends.clear();
    device.recvs.clear();
  }
  DispatchPlan plan;
  ASSERT_TRUE(
      computeDispatchPlan(placement, counts, plan, "moe1", kNoDevice).isOk());
  EXPECT_EQ(plan, expected);
  EXPECT_EQ(plan.load, (Vec{6, 4, 7, 13}));
}

TEST(DispatchPlanErrors, SegmentsForOutOfRange) {
  Placement placement = makePlacement(2, 1, {{0}, {1}});
  Vec counts = {1, 1, 1, 1};
  DispatchPlan plan;
  Status status = computeDispatchPlan(placement, counts, plan, "moe1", 2);
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "device 2 is out of range [0, 2) for the plan of layer 'moe1'");
  EXPECT_FALSE(computeDispatchPlan(placement, counts, plan, "moe1", -3).isOk());
}

TEST(DispatchPlanErrors, InvalidPlacement) {
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {}}), Rows{{1, 1}, {1, 1}}),
            "expert 1 of layer 'moe1' has no replica");
}

TEST(DispatchPlanErrors, WrongNumberOfRows) {
  EXPECT_EQ(errorOf(makePlacement(3, 1, {{0}, {1}}), Rows{{1, 1}, {1, 1}}),
            "counts of layer 'moe1' have 2 rows but the world size is 3");
}

TEST(DispatchPlanErrors, WrongRowLength) {
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {1}}), Rows{{1, 1}, {1, 1, 1}}),
            "counts of layer 'moe1' from device 1 have 3 entries but the "
            "layer has 2 experts");
}

TEST(DispatchPlanErrors, WrongFlatLength) {
  Vec flat = {1, 2, 3};
  StatusOr<DispatchPlan> plan =
      computeDispatchPlan(makePlacement(2, 1, {{0}, {1}}), flat, "moe1");
  ASSERT_FALSE(plan.isOk());
  EXPECT_EQ(plan.status().message(), "counts of layer 'moe1' have 3 entries "
                                     "but 2 devices x 2 experts need 4");
}

TEST(DispatchPlanErrors, NegativeCount) {
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {1}}), Rows{{1, 1}, {-3, 1}}),
            "device 1 routes -3 tokens to expert 0 of layer 'moe1'");
}

TEST(DispatchPlanErrors, Overflow) {
  int64_t big = std::numeric_limits<int64_t>::max() / 2 + 1;
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {1}}), Rows{{big, 0}, {0, big}}),
            "token counts of layer 'moe1' overflow a 64-bit total");
}

TEST(DispatchPlanErrors, DefaultLayerName) {
  StatusOr<DispatchPlan> plan =
      computeDispatchPlan(makePlacement(1, 1, {{0}}), Rows{{-1}});
  ASSERT_FALSE(plan.isOk());
  EXPECT_EQ(plan.status().message(),
            "device 0 routes -1 tokens to expert 0 of layer 'unnamed'");
}

} // namespace
