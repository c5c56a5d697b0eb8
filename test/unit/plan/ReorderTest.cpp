//===- ReorderTest.cpp - host copies around the all-to-all ----------------===//
#include "runtime/plan/Reorder.h"
#include "runtime/plan/SlotTable.h"
#include "test/unit/plan/RandomPlacement.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace flexmoe;
using namespace flexmoe::plan;
using namespace flexmoe::plan::test;

namespace {

/// A row: three int32 words, (source, expert, index within the group).
struct Row {
  int32_t src, expert, index;
  bool operator==(const Row &) const = default;
};
constexpr size_t kRowBytes = sizeof(Row);

std::span<const std::byte> bytes(const std::vector<Row> &rows) {
  return std::as_bytes(std::span(rows));
}
std::span<std::byte> bytes(std::vector<Row> &rows) {
  return std::as_writable_bytes(std::span(rows));
}

/// The in-memory all-to-all: block (a -> b) from in[a] at a's offsets for b
/// to out[b] at b's offsets for a, with the dispatch tables or, for combine,
/// the same tables read from the other end.
void allToAll(const DispatchPlan &plan, const std::vector<std::vector<Row>> &in,
              std::vector<std::vector<Row>> &out, bool combine) {
  for (int64_t a = 0; a < plan.worldSize; ++a)
    for (int64_t b = 0; b < plan.worldSize; ++b) {
      const DevicePlan &pa = plan.devices[a], &pb = plan.devices[b];
      if (!combine)
        std::copy_n(in[a].begin() + pa.sendOffsets[b], pa.sendCounts[b],
                    out[b].begin() + pb.recvOffsets[a]);
      else
        std::copy_n(in[a].begin() + pa.recvOffsets[b], pa.recvCounts[b],
                    out[b].begin() + pb.sendOffsets[a]);
    }
}

/// Dispatch and combine through the four copies; checks the slot-major
/// layout and that combine restores every source's buffer.
void roundTrip(const Placement &placement, const Rows &counts) {
  StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  const int64_t W = placement.worldSize, E = placement.numExperts();
  SlotTable slots = buildSlotTable(placement);
  std::vector<std::vector<Row>> routed(W), send(W), recv(W), slotMajor(W),
      recvBack(W), sendBack(W), routedBack(W);
  for (int64_t d = 0; d < W; ++d) {
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < counts[d][e]; ++i)
        routed[d].push_back({int32_t(d), int32_t(e), int32_t(i)});
    const DevicePlan &p = plan->devices[d];
    send[d].assign(p.sendRows, Row{-1, -1, -1});
    sendBack[d] = send[d];
    routedBack[d] = send[d];
    recv[d].assign(p.recvRows, Row{-1, -1, -1});
    slotMajor[d] = recv[d];
    recvBack[d] = recv[d];
  }
  for (int64_t d = 0; d < W; ++d) {
    Status s = packDispatch(plan->devices[d], kRowBytes, bytes(routed[d]),
                            bytes(send[d]));
    ASSERT_TRUE(s.isOk()) << s.message();
  }
  allToAll(*plan, send, recv, /*combine=*/false);
  for (int64_t d = 0; d < W; ++d) {
    Status s = unpackDispatch(plan->devices[d], kRowBytes, bytes(recv[d]),
                              bytes(slotMajor[d]));
    ASSERT_TRUE(s.isOk()) << s.message();
    const DevicePlan &p = plan->devices[d];
    for (int64_t slot = 0; slot < placement.slotsPerDevice; ++slot)
      for (int64_t r = p.slotOffsets[slot];
           r < p.slotOffsets[slot] + p.slotCounts[slot]; ++r)
        ASSERT_EQ(slotMajor[d][r].expert, slots.slotExpert[d][slot])
            << "row " << r << " of device " << d;
  }
  for (int64_t d = 0; d < W; ++d) {
    Status s = packCombine(plan->devices[d], kRowBytes, bytes(slotMajor[d]),
                           bytes(recvBack[d]));
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(recvBack[d], recv[d]);
  }
  allToAll(*plan, recvBack, sendBack, /*combine=*/true);
  for (int64_t d = 0; d < W; ++d) {
    EXPECT_EQ(sendBack[d], send[d]);
    Status s = unpackCombine(plan->devices[d], kRowBytes, bytes(sendBack[d]),
                             bytes(routedBack[d]));
    ASSERT_TRUE(s.isOk()) << s.message();
    EXPECT_EQ(routedBack[d], routed[d]) << "device " << d;
  }
}

Placement workedExample() {
  Placement placement;
  placement.worldSize = 4;
  placement.slotsPerDevice = 2;
  placement.replicas = {{0}, {1}, {2, 3}, {3}};
  return placement;
}

TEST(Reorder, WorkedExampleRoundTrip) {
  roundTrip(workedExample(),
            {{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}});
}

TEST(Reorder, UnpackDispatchRegroupsBySlot) {
  // Device 3 of the worked example: source 0's slot-1 row moves behind source
  // 1's slot-0 rows.
  StatusOr<DispatchPlan> plan = computeDispatchPlan(
      workedExample(),
      Rows{{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}});
  ASSERT_TRUE(plan.isOk());
  std::vector<Row> recv, slotMajor(13);
  for (int32_t i = 0; i < 13; ++i)
    recv.push_back({i, 0, 0});
  ASSERT_TRUE(
      unpackDispatch(plan->devices[3], kRowBytes, bytes(recv), bytes(slotMajor))
          .isOk());
  std::vector<int32_t> order;
  for (const Row &row : slotMajor)
    order.push_back(row.src);
  EXPECT_EQ(order,
            (std::vector<int32_t>{0, 2, 3, 4, 5, 6, 1, 7, 8, 9, 10, 11, 12}));
}

TEST(Reorder, RandomRoundTrips) {
  for (uint64_t seed = 2000; seed < 2200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Placement placement = randomPlacement(rng);
    roundTrip(placement, randomCounts(rng, placement));
    if (::testing::Test::HasFailure())
      return;
  }
}

TEST(Reorder, RejectsWrongBufferSizes) {
  StatusOr<DispatchPlan> plan = computeDispatchPlan(
      workedExample(),
      Rows{{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}});
  ASSERT_TRUE(plan.isOk());
  std::vector<Row> routed(11), send(10);
  Status status =
      packDispatch(plan->devices[0], kRowBytes, bytes(routed), bytes(send));
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(), "packing for dispatch: buffers of 132 and 120 "
                              "bytes for 11 rows of 12 bytes");
}

TEST(Reorder, RejectsAPlanWithoutThisDevicesSegments) {
  Placement placement = workedExample();
  std::vector<int64_t> counts = {3, 1, 6, 1, 0, 2, 5, 1,
                                 1, 0, 2, 2, 2, 1, 0, 3};
  DispatchPlan plan;
  ASSERT_TRUE(computeDispatchPlan(placement, counts, plan, "moe1", 3).isOk());
  std::vector<Row> routed(11), send(11);
  Status status =
      packDispatch(plan.devices[0], kRowBytes, bytes(routed), bytes(send));
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "packing for dispatch: the plan has no segments for this device "
            "(was it computed for another device only?)");
}

TEST(Reorder, RejectsSegmentsOutsideTheBuffer) {
  StatusOr<DispatchPlan> plan = computeDispatchPlan(
      workedExample(),
      Rows{{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}});
  ASSERT_TRUE(plan.isOk());
  DevicePlan edited = plan->devices[2];
  edited.recvs.back().slotOffset = 6; // 2 rows from 6 in a 7-row buffer
  std::vector<Row> recv(7), slotMajor(7);
  Status status =
      unpackDispatch(edited, kRowBytes, bytes(recv), bytes(slotMajor));
  ASSERT_FALSE(status.isOk());
  EXPECT_EQ(status.message(),
            "unpacking after dispatch: segment of expert 2 from device 2 to "
            "device 2 lies outside the 7 rows");
  edited.recvs.back().slotOffset = -1;
  EXPECT_FALSE(
      unpackDispatch(edited, kRowBytes, bytes(recv), bytes(slotMajor)).isOk());
}

TEST(Reorder, EmptyDeviceIsFine) {
  // Device 1 routes nothing and computes nothing: empty buffers are valid.
  StatusOr<DispatchPlan> plan = computeDispatchPlan(
      workedExample(),
      Rows{{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}});
  ASSERT_TRUE(plan.isOk());
  std::vector<Row> none;
  EXPECT_TRUE(
      packDispatch(plan->devices[1], kRowBytes, bytes(none), bytes(none))
          .isOk());
  EXPECT_TRUE(
      unpackDispatch(plan->devices[1], kRowBytes, bytes(none), bytes(none))
          .isOk());
}

} // namespace
