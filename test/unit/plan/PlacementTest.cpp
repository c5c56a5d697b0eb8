//===- PlacementTest.cpp - placement validation and round-robin -----------===//
#include "runtime/plan/Placement.h"

#include <gtest/gtest.h>

using namespace flexmoe;
using namespace flexmoe::plan;

namespace {

Placement makePlacement(int64_t worldSize, int64_t slots,
                        std::vector<std::vector<int64_t>> replicas) {
  Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slots;
  placement.replicas = std::move(replicas);
  return placement;
}

std::string errorOf(const Placement &placement) {
  Status status = validatePlacement(placement, "moe1");
  return status.isOk() ? "ok" : status.message();
}

TEST(ValidatePlacement, AcceptsTheIRExample) {
  // docs/IR.md's #moe.placement example.
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{0}, {1}, {2, 3}, {3}})), "ok");
}

TEST(ValidatePlacement, AcceptsFullSlotsAndUnsortedReplicas) {
  EXPECT_EQ(errorOf(makePlacement(3, 2, {{2, 0}, {1, 0}, {2, 1}})), "ok");
  EXPECT_EQ(errorOf(makePlacement(1, 1, {{0}})), "ok");
}

TEST(ValidatePlacement, RejectsWorldSizeBelowOne) {
  EXPECT_EQ(errorOf(makePlacement(0, 2, {{0}})),
            "world size of layer 'moe1' is 0 but must be at least 1");
  EXPECT_EQ(errorOf(makePlacement(-3, 2, {{0}})),
            "world size of layer 'moe1' is -3 but must be at least 1");
}

TEST(ValidatePlacement, RejectsSlotsBelowOne) {
  EXPECT_EQ(errorOf(makePlacement(2, 0, {{0}})),
            "slots per device of layer 'moe1' is 0 but must be at least 1");
}

TEST(ValidatePlacement, RejectsShapesBeyondTheBounds) {
  EXPECT_EQ(errorOf(makePlacement(kMaxWorldSize + 1, 2, {{0}})),
            "world size of layer 'moe1' is 4097, more than the 4096 supported");
  EXPECT_EQ(errorOf(makePlacement(2, int64_t{1} << 40, {{0}})),
            "slots per device of layer 'moe1' is 1099511627776, more than the "
            "4096 supported");
  EXPECT_EQ(errorOf(makePlacement(kMaxWorldSize, kMaxSlotsPerDevice, {{0}})),
            "ok");
}

TEST(ValidatePlacement, RejectsNoExperts) {
  EXPECT_EQ(errorOf(makePlacement(2, 1, {})), "layer 'moe1' has no experts");
}

TEST(ValidatePlacement, RejectsExpertWithoutReplica) {
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{0}, {1}, {2}, {}})),
            "expert 3 of layer 'moe1' has no replica");
}

TEST(ValidatePlacement, RejectsDeviceOutOfRange) {
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{0}, {1}, {2, 5}})),
            "device 5 of expert 2 in layer 'moe1' is out of range [0, 4)");
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{-1}})),
            "device -1 of expert 0 in layer 'moe1' is out of range [0, 4)");
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{4}})),
            "device 4 of expert 0 in layer 'moe1' is out of range [0, 4)");
}

TEST(ValidatePlacement, RejectsDeviceListedTwice) {
  EXPECT_EQ(errorOf(makePlacement(4, 2, {{0}, {1}, {1, 2, 1}})),
            "expert 2 of layer 'moe1' lists device 1 twice");
}

TEST(ValidatePlacement, DuplicateDetectionDoesNotLeakAcrossExperts) {
  // Device 1 appears for experts 0 and 1: that is two replicas, not a
  // duplicate.
  EXPECT_EQ(errorOf(makePlacement(2, 2, {{1}, {1}})), "ok");
}

TEST(ValidatePlacement, RejectsOverfullDevice) {
  EXPECT_EQ(errorOf(makePlacement(2, 2, {{1}, {1}, {1, 0}})),
            "device 1 holds 3 experts of layer 'moe1' but has 2 slots");
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {0}, {1}})),
            "device 0 holds 2 experts of layer 'moe1' but has 1 slot");
}

TEST(ValidatePlacement, ReportsTheFirstProblem) {
  // Expert 1 has no replica and expert 2 is out of range: expert order wins.
  EXPECT_EQ(errorOf(makePlacement(2, 1, {{0}, {}, {7}})),
            "expert 1 of layer 'moe1' has no replica");
}

TEST(ValidatePlacement, NamesTheLayer) {
  Status status =
      validatePlacement(makePlacement(2, 1, {{0}, {}}), "encoder.moe3");
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "expert 1 of layer 'encoder.moe3' has no replica");
}

TEST(RoundRobinPlacement, PutsExpertOnDeviceModWorld) {
  Placement placement = roundRobinPlacement(10, 4);
  EXPECT_EQ(placement.worldSize, 4);
  EXPECT_EQ(placement.slotsPerDevice, 3); // ceil(10 / 4)
  ASSERT_EQ(placement.numExperts(), 10);
  for (int64_t e = 0; e < 10; ++e)
    EXPECT_EQ(placement.replicas[e], std::vector<int64_t>{e % 4}) << e;
  EXPECT_TRUE(validatePlacement(placement, "moe1").isOk());
}

TEST(RoundRobinPlacement, SlotsDefaultToCeilingAndAtLeastOne) {
  EXPECT_EQ(roundRobinPlacement(8, 4).slotsPerDevice, 2);
  EXPECT_EQ(roundRobinPlacement(9, 4).slotsPerDevice, 3);
  EXPECT_EQ(roundRobinPlacement(2, 4).slotsPerDevice, 1);
  EXPECT_EQ(roundRobinPlacement(64, 16).slotsPerDevice, 4);
  EXPECT_EQ(roundRobinPlacement(5, 1).slotsPerDevice, 5);
}

TEST(RoundRobinPlacement, KeepsExplicitSlots) {
  Placement placement = roundRobinPlacement(4, 2, 3);
  EXPECT_EQ(placement.slotsPerDevice, 3);
  EXPECT_TRUE(validatePlacement(placement, "moe1").isOk());
}

TEST(RoundRobinPlacement, TooFewSlotsFailValidation) {
  Status status = validatePlacement(roundRobinPlacement(5, 2, 2), "moe1");
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "device 0 holds 3 experts of layer 'moe1' but has 2 slots");
}

TEST(RoundRobinPlacement, BadWorldSizeFailsValidation) {
  Status status = validatePlacement(roundRobinPlacement(4, 0), "moe1");
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "world size of layer 'moe1' is 0 but must be at least 1");
}

TEST(RoundRobinPlacement, NoExpertsFailsValidation) {
  Status status = validatePlacement(roundRobinPlacement(0, 4), "moe1");
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(), "layer 'moe1' has no experts");
}

} // namespace
