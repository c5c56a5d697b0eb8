//===- MonitorTest.cpp - routing monitor and traffic summaries ------------===//
#include "runtime/sched/Monitor.h"

#include <gtest/gtest.h>

#include <limits>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

using Vec = std::vector<int64_t>;

plan::Placement makePlacement(int64_t worldSize, int64_t slots,
                              std::vector<Vec> replicas) {
  plan::Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slots;
  placement.replicas = std::move(replicas);
  return placement;
}

std::string recordError(RoutingMonitor &monitor, int64_t step,
                        const Vec &counts) {
  Status status = monitor.record(step, counts);
  return status ? "ok" : status.message();
}

TEST(SchedMonitor, EmptyWindow) {
  RoutingMonitor monitor(2, 3, 4);
  EXPECT_EQ(monitor.worldSize(), 2);
  EXPECT_EQ(monitor.numExperts(), 3);
  EXPECT_EQ(monitor.window(), 4);
  EXPECT_EQ(monitor.samples(), 0);
  EXPECT_EQ(monitor.latestStep(), -1);
  EXPECT_TRUE(monitor.latest().empty());
  EXPECT_EQ(monitor.meanCounts(), Vec(6, 0));
  EXPECT_EQ(monitor.expertLoad(), std::vector<double>(3, 0.0));
}

TEST(SchedMonitor, WindowSlidesAndRoundsHalfUp) {
  RoutingMonitor monitor(1, 2, 2);
  ASSERT_TRUE(monitor.record(1, Vec{1, 2}));
  EXPECT_EQ(monitor.meanCounts(), (Vec{1, 2}));
  ASSERT_TRUE(monitor.record(2, Vec{4, 5}));
  EXPECT_EQ(monitor.samples(), 2);
  // (1 + 4) / 2 = 2.5 -> 3, (2 + 5) / 2 = 3.5 -> 4.
  EXPECT_EQ(monitor.meanCounts(), (Vec{3, 4}));
  EXPECT_EQ(monitor.expertLoad(), (std::vector<double>{2.5, 3.5}));
  // A full window drops step 1: (4 + 10) / 2 = 7, (5 + 0) / 2 = 2.5 -> 3.
  ASSERT_TRUE(monitor.record(3, Vec{10, 0}));
  EXPECT_EQ(monitor.samples(), 2);
  EXPECT_EQ(monitor.latestStep(), 3);
  EXPECT_EQ(Vec(monitor.latest().begin(), monitor.latest().end()),
            (Vec{10, 0}));
  EXPECT_EQ(monitor.meanCounts(), (Vec{7, 3}));
  EXPECT_EQ(monitor.expertLoad(), (std::vector<double>{7.0, 2.5}));
}

TEST(SchedMonitor, MeanOverThreeRoundsDown) {
  RoutingMonitor monitor(2, 1, 3);
  ASSERT_TRUE(monitor.record(10, Vec{1, 0}));
  ASSERT_TRUE(monitor.record(11, Vec{0, 1}));
  ASSERT_TRUE(monitor.record(12, Vec{0, 1}));
  // 1/3 -> 0, 2/3 -> 1.
  EXPECT_EQ(monitor.meanCounts(), (Vec{0, 1}));
  EXPECT_DOUBLE_EQ(monitor.expertLoad()[0], 1.0);
}

TEST(SchedMonitor, ExpertLoadSumsSources) {
  RoutingMonitor monitor(2, 2, 1);
  ASSERT_TRUE(monitor.record(1, Vec{1, 2, 30, 40}));
  EXPECT_EQ(monitor.expertLoad(), (std::vector<double>{31, 42}));
  ASSERT_TRUE(monitor.record(2, Vec{0, 0, 0, 5}));
  EXPECT_EQ(monitor.samples(), 1);
  EXPECT_EQ(monitor.expertLoad(), (std::vector<double>{0, 5}));
}

TEST(SchedMonitor, ErrorsLeaveTheWindowUnchanged) {
  RoutingMonitor monitor(2, 2, 2);
  ASSERT_TRUE(monitor.record(5, Vec{1, 2, 3, 4}));
  EXPECT_EQ(recordError(monitor, 6, Vec{1, 2, 3}),
            "routing counts of step 6 have 3 entries but 2 ranks x 2 experts "
            "need 4");
  EXPECT_EQ(recordError(monitor, 6, Vec{1, 2, -3, 4}),
            "rank 1 routed -3 tokens to expert 0 at step 6");
  EXPECT_EQ(recordError(monitor, 5, Vec{1, 2, 3, 4}),
            "routing counts of step 5 recorded after those of step 5: steps "
            "must increase");
  const int64_t big = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(recordError(monitor, 6, Vec{0, big, 0, 0}),
            "routing counts of expert 1 from rank 0 overflow a 64-bit sum "
            "over the window at step 6");
  EXPECT_EQ(monitor.samples(), 1);
  EXPECT_EQ(monitor.latestStep(), 5);
  EXPECT_EQ(monitor.meanCounts(), (Vec{1, 2, 3, 4}));
}

TEST(SchedMonitor, OverflowCheckAccountsForTheEvictedStep) {
  // With a full window the oldest step leaves before the new one enters.
  RoutingMonitor monitor(1, 1, 1);
  const int64_t big = std::numeric_limits<int64_t>::max();
  ASSERT_TRUE(monitor.record(1, Vec{big}));
  ASSERT_TRUE(monitor.record(2, Vec{big}));
  EXPECT_EQ(monitor.meanCounts(), Vec{big});
}

TEST(SchedMonitor, ShapesBelowOneAreTakenAsOne) {
  RoutingMonitor monitor(0, -1, 0);
  EXPECT_EQ(monitor.worldSize(), 1);
  EXPECT_EQ(monitor.numExperts(), 1);
  EXPECT_EQ(monitor.window(), 1);
  EXPECT_TRUE(monitor.record(1, Vec{3}));
}

// Two devices; expert 2 replicated on both. Hand-computed with the split
// rule: e0's 4 rows stay on device 0; e1's 5 rows go to device 1 (2 from
// device 0); e2's 8 rows split 4/4: device 0 keeps 4 of its 6, device 1
// keeps its 2 and takes device 0's other 2.
TEST(SchedTraffic, SummarizeHandComputed) {
  plan::Placement placement = makePlacement(2, 2, {{0}, {1}, {0, 1}});
  Vec counts = {4, 2, 6, /*device 1*/ 0, 3, 2};
  StatusOr<TrafficSummary> summary = summarizeTraffic(placement, counts);
  ASSERT_TRUE(summary) << summary.status().message();
  EXPECT_EQ(summary->load, (Vec{8, 9}));
  EXPECT_DOUBLE_EQ(summary->balanceRatio, 9.0 * 2 / 17);
  EXPECT_EQ(summary->crossDeviceRows, 4);
  EXPECT_EQ(summary->maxDeviceCrossRows, 4);
}

TEST(SchedTraffic, BusiestDeviceBoundsTheExchange) {
  // Everything on device 0: devices 1..3 each send their 3 rows there, so
  // device 0 receives 9 cross-device rows and each other device sends 3.
  plan::Placement placement = makePlacement(4, 2, {{0}, {0}});
  Vec counts = {1, 1, 2, 1, 0, 3, 3, 0};
  StatusOr<TrafficSummary> summary = summarizeTraffic(placement, counts);
  ASSERT_TRUE(summary) << summary.status().message();
  EXPECT_EQ(summary->load, (Vec{11, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(summary->balanceRatio, 4.0);
  EXPECT_EQ(summary->crossDeviceRows, 9);
  EXPECT_EQ(summary->maxDeviceCrossRows, 9);
}

TEST(SchedTraffic, ZeroCountsAreBalanced) {
  plan::Placement placement = plan::roundRobinPlacement(4, 2);
  StatusOr<TrafficSummary> summary = summarizeTraffic(placement, Vec(8, 0));
  ASSERT_TRUE(summary);
  EXPECT_EQ(summary->balanceRatio, 1.0);
  EXPECT_EQ(summary->crossDeviceRows, 0);
}

TEST(SchedTraffic, Errors) {
  plan::Placement placement = makePlacement(2, 1, {{0}, {}});
  StatusOr<TrafficSummary> summary = summarizeTraffic(placement, Vec(4, 0));
  ASSERT_FALSE(summary);
  EXPECT_EQ(summary.status().message(),
            "expert 1 of layer 'unnamed' has no replica");
  summary = summarizeTraffic(plan::roundRobinPlacement(2, 2), Vec(3, 0));
  ASSERT_FALSE(summary);
  EXPECT_EQ(summary.status().message(),
            "counts of layer 'unnamed' have 3 entries but 2 devices x 2 "
            "experts need 4");
}

} // namespace
