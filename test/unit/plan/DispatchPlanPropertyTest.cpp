//===- DispatchPlanPropertyTest.cpp - dispatch plan invariants ------------===//
//
// Checks the invariants of docs/dispatch-plan.md on many seeded random
// placements and counts, and runs the plan end to end on simulated buffers:
// pack, all-to-all, unpack to slot-major, then the combine direction back.
//
//===----------------------------------------------------------------------===//
#include "runtime/plan/DispatchPlan.h"
#include "runtime/plan/SlotTable.h"
#include "test/unit/plan/RandomPlacement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <tuple>

using namespace flexmoe;
using namespace flexmoe::plan;
using namespace flexmoe::plan::test;

namespace {

bool holdsReplica(const Placement &placement, int64_t device, int64_t expert) {
  const Vec &devices = placement.replicas[expert];
  return std::find(devices.begin(), devices.end(), device) != devices.end();
}

void expectPrefixSums(const Vec &counts, const Vec &offsets,
                      const std::string &what) {
  ASSERT_EQ(counts.size(), offsets.size()) << what;
  int64_t sum = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    EXPECT_EQ(offsets[i], sum) << what << " [" << i << "]";
    sum += counts[i];
  }
}

/// Every invariant of the plan, checked against the inputs alone.
void checkInvariants(const Placement &placement, const Rows &counts,
                     const DispatchPlan &plan) {
  const int64_t W = placement.worldSize, S = placement.slotsPerDevice,
                E = placement.numExperts();
  SlotTable slots = buildSlotTable(placement);
  ASSERT_EQ(plan.worldSize, W);
  ASSERT_EQ(plan.slotsPerDevice, S);
  ASSERT_EQ(plan.numExperts, E);
  ASSERT_EQ(static_cast<int64_t>(plan.devices.size()), W);

  // rowsTo[src][e][dst]: what the plan sends, summed from the segments.
  std::vector<Rows> rowsTo(W, Rows(E, Vec(W, 0)));
  int64_t total = 0, cross = 0;
  for (int64_t src = 0; src < W; ++src) {
    const DevicePlan &from = plan.devices[src];
    ASSERT_EQ(static_cast<int64_t>(from.sendCounts.size()), W);
    expectPrefixSums(from.sendCounts, from.sendOffsets, "sendOffsets");
    Vec groupStart(E + 1, 0);
    for (int64_t e = 0; e < E; ++e)
      groupStart[e + 1] = groupStart[e] + counts[src][e];
    EXPECT_EQ(from.sendRows, groupStart[E]);

    // Segments in (dst, slot) order tile the send buffer, and for each
    // expert, in ascending dst, tile the expert's group of the source
    // buffer.
    int64_t sendPos = 0;
    Vec groupPos(groupStart.begin(), groupStart.end() - 1);
    Vec sentTo(W, 0);
    for (size_t i = 0; i < from.sends.size(); ++i) {
      const Segment &seg = from.sends[i];
      EXPECT_EQ(seg.src, src);
      EXPECT_GT(seg.rows, 0);
      ASSERT_TRUE(seg.dst >= 0 && seg.dst < W && seg.slot >= 0 && seg.slot < S);
      EXPECT_EQ(slots.slotExpert[seg.dst][seg.slot], seg.expert);
      if (i > 0) {
        const Segment &prev = from.sends[i - 1];
        EXPECT_LT(std::tie(prev.dst, prev.slot), std::tie(seg.dst, seg.slot));
      }
      EXPECT_EQ(seg.sendOffset, sendPos);
      if (sentTo[seg.dst] == 0) {
        EXPECT_EQ(seg.sendOffset, from.sendOffsets[seg.dst]);
      }
      EXPECT_EQ(seg.srcOffset, groupPos[seg.expert]);
      sendPos += seg.rows;
      groupPos[seg.expert] += seg.rows;
      sentTo[seg.dst] += seg.rows;
      rowsTo[src][seg.expert][seg.dst] += seg.rows;
      total += seg.rows;
      if (seg.dst != src)
        cross += seg.rows;
    }
    EXPECT_EQ(sendPos, from.sendRows);
    EXPECT_EQ(sentTo, from.sendCounts);
    // Conservation per source: every row of every group placed once.
    for (int64_t e = 0; e < E; ++e)
      EXPECT_EQ(groupPos[e], groupStart[e + 1])
          << "source " << src << " expert " << e;
  }
  EXPECT_EQ(plan.totalRows, total);
  EXPECT_EQ(plan.crossDeviceRows, cross);

  // The split rule: quotas, local first, and only to replicas.
  for (int64_t e = 0; e < E; ++e) {
    Vec devices = placement.replicas[e];
    std::sort(devices.begin(), devices.end());
    int64_t R = static_cast<int64_t>(devices.size());
    int64_t T = 0;
    for (int64_t src = 0; src < W; ++src)
      T += counts[src][e];
    int64_t minLoad = T, maxLoad = 0;
    for (int64_t r = 0; r < R; ++r) {
      int64_t d = devices[r];
      int64_t quota = T / R + (r < T % R ? 1 : 0);
      int64_t got = 0;
      for (int64_t src = 0; src < W; ++src)
        got += rowsTo[src][e][d];
      EXPECT_EQ(got, quota) << "expert " << e << " replica on device " << d;
      EXPECT_EQ(plan.devices[d].slotCounts[slots.slotOf(d, e)], got);
      minLoad = std::min(minLoad, got);
      maxLoad = std::max(maxLoad, got);
      EXPECT_EQ(rowsTo[d][e][d], std::min(counts[d][e], quota))
          << "local first, expert " << e << " device " << d;
    }
    EXPECT_LE(maxLoad - minLoad, 1) << "expert " << e;
    for (int64_t src = 0; src < W; ++src)
      for (int64_t dst = 0; dst < W; ++dst)
        if (!holdsReplica(placement, dst, e)) {
          EXPECT_EQ(rowsTo[src][e][dst], 0);
        }
  }

  // Receive side.
  std::vector<Segment> sent, received;
  double maxLoad = 0;
  for (int64_t dst = 0; dst < W; ++dst) {
    const DevicePlan &to = plan.devices[dst];
    ASSERT_EQ(static_cast<int64_t>(to.recvCounts.size()), W);
    ASSERT_EQ(static_cast<int64_t>(to.slotCounts.size()), S);
    expectPrefixSums(to.recvCounts, to.recvOffsets, "recvOffsets");
    expectPrefixSums(to.slotCounts, to.slotOffsets, "slotOffsets");
    for (int64_t src = 0; src < W; ++src)
      EXPECT_EQ(to.recvCounts[src], plan.devices[src].sendCounts[dst])
          << "transpose, " << src << " -> " << dst;
    // Slot-major: segments in (slot, src) order tile [0, recvRows); the
    // receive offsets tile each source's block in slot order.
    int64_t slotPos = 0;
    Vec slotRows(S, 0), recvPos(to.recvOffsets);
    for (size_t i = 0; i < to.recvs.size(); ++i) {
      const Segment &seg = to.recvs[i];
      EXPECT_EQ(seg.dst, dst);
      EXPECT_GT(seg.rows, 0);
      if (i > 0) {
        const Segment &prev = to.recvs[i - 1];
        EXPECT_LT(std::tie(prev.slot, prev.src), std::tie(seg.slot, seg.src));
      }
      EXPECT_EQ(seg.slotOffset, slotPos);
      EXPECT_EQ(seg.recvOffset, recvPos[seg.src]);
      slotPos += seg.rows;
      recvPos[seg.src] += seg.rows;
      slotRows[seg.slot] += seg.rows;
    }
    EXPECT_EQ(slotPos, to.recvRows);
    EXPECT_EQ(slotRows, to.slotCounts);
    for (int64_t src = 0; src < W; ++src)
      EXPECT_EQ(recvPos[src], to.recvOffsets[src] + to.recvCounts[src]);
    for (int64_t s = 0; s < S; ++s)
      if (slots.slotExpert[dst][s] < 0) {
        EXPECT_EQ(to.slotCounts[s], 0);
      }
    EXPECT_EQ(plan.load[dst], to.recvRows);
    maxLoad = std::max(maxLoad, static_cast<double>(to.recvRows));
    received.insert(received.end(), to.recvs.begin(), to.recvs.end());
    sent.insert(sent.end(), plan.devices[dst].sends.begin(),
                plan.devices[dst].sends.end());
  }
  // Both sides see the very same segments.
  auto key = [](const Segment &s) { return std::tie(s.src, s.dst, s.slot); };
  auto byKey = [&](const Segment &a, const Segment &b) {
    return key(a) < key(b);
  };
  std::sort(sent.begin(), sent.end(), byKey);
  std::sort(received.begin(), received.end(), byKey);
  EXPECT_EQ(sent, received);

  double expected = total == 0 ? 1.0 : maxLoad * W / static_cast<double>(total);
  EXPECT_DOUBLE_EQ(plan.balanceRatio, expected);
}

Vec flatten(const Rows &counts) {
  Vec flat;
  for (const Vec &row : counts)
    flat.insert(flat.end(), row.begin(), row.end());
  return flat;
}

TEST(DispatchPlanProperties, RandomPlacementsAndCounts) {
  DispatchPlan reused;
  for (uint64_t seed = 0; seed < 600; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Placement placement = randomPlacement(rng);
    ASSERT_TRUE(validatePlacement(placement, "moe1").isOk());
    Rows counts = randomCounts(rng, placement);
    StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts);
    ASSERT_TRUE(plan.isOk()) << plan.status().message();
    checkInvariants(placement, counts, *plan);
    if (::testing::Test::HasFailure())
      return; // one failing seed says enough

    // Determinism: the same input, another listing order of the replicas,
    // flat counts, and a reused plan all give the identical plan.
    EXPECT_EQ(*computeDispatchPlan(placement, counts), *plan);
    Placement reordered = placement;
    for (Vec &devices : reordered.replicas)
      shuffle(rng, devices);
    EXPECT_EQ(*computeDispatchPlan(reordered, counts), *plan);

    // One rank's plan: the same, less the other devices' segments. Computed
    // into the reused plan first, so the full plan after it must clear them.
    int64_t only = uniform(rng, 0, placement.worldSize - 1);
    ASSERT_TRUE(
        computeDispatchPlan(placement, flatten(counts), reused, "moe1", only)
            .isOk());
    DispatchPlan expected = *plan;
    for (int64_t d = 0; d < placement.worldSize; ++d) {
      if (d == only)
        continue;
      expected.devices[d].sends.clear();
      expected.devices[d].recvs.clear();
    }
    EXPECT_EQ(reused, expected);
    ASSERT_TRUE(computeDispatchPlan(placement, flatten(counts), reused, "moe1",
                                    kNoDevice)
                    .isOk());
    for (DevicePlan &device : expected.devices) {
      device.sends.clear();
      device.recvs.clear();
    }
    EXPECT_EQ(reused, expected);
    ASSERT_TRUE(computeDispatchPlan(placement, flatten(counts), reused).isOk());
    EXPECT_EQ(reused, *plan);
  }
}

TEST(DispatchPlanProperties, TheExtremes) {
  // Largest world, every device full of replicas of every expert.
  Placement everywhere;
  everywhere.worldSize = 16;
  everywhere.slotsPerDevice = 64;
  everywhere.replicas.assign(64, Vec(16));
  for (Vec &devices : everywhere.replicas)
    std::iota(devices.begin(), devices.end(), 0);
  std::mt19937_64 rng(7);
  Rows counts(16, Vec(64));
  for (Vec &row : counts)
    for (int64_t &c : row)
      c = uniform(rng, 0, 1000);
  StatusOr<DispatchPlan> plan = computeDispatchPlan(everywhere, counts);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  checkInvariants(everywhere, counts, *plan);
  EXPECT_LE(plan->balanceRatio, 1.01);

  // One expert, one device, a huge count.
  Placement single;
  single.replicas = {{0}};
  Rows huge = {{int64_t{1} << 40}};
  StatusOr<DispatchPlan> hugePlan = computeDispatchPlan(single, huge);
  ASSERT_TRUE(hugePlan.isOk());
  checkInvariants(single, huge, *hugePlan);
}

/// A routed row, identified by where it started.
struct Token {
  int64_t src = -1, expert = -1, index = -1;
  /// Set by the simulated expert computation: who computed it.
  int64_t computedOn = -1;
  bool operator==(const Token &) const = default;
};

/// Runs the plan the way the runtime will: pack, all-to-all, unpack; a fake
/// expert computation; then the combine direction back to the sources.
void simulate(const Placement &placement, const Rows &counts,
              const DispatchPlan &plan) {
  const int64_t W = placement.worldSize, S = placement.slotsPerDevice,
                E = placement.numExperts();
  SlotTable slots = buildSlotTable(placement);
  using Buffer = std::vector<Token>;
  auto copy = [](const Buffer &from, int64_t fromOffset, Buffer &to,
                 int64_t toOffset, int64_t rows) {
    ASSERT_LE(fromOffset + rows, static_cast<int64_t>(from.size()));
    ASSERT_LE(toOffset + rows, static_cast<int64_t>(to.size()));
    std::copy_n(from.begin() + fromOffset, rows, to.begin() + toOffset);
  };
  // The all-to-all: block (src -> dst) moves from send[src] at
  // sendOffsets[dst] to recv[dst] at recvOffsets[src].
  auto allToAll = [&](const std::vector<Buffer> &in, std::vector<Buffer> &out,
                      bool combine) {
    for (int64_t a = 0; a < W; ++a)
      for (int64_t b = 0; b < W; ++b) {
        // Dispatch: a is the source, b the destination; combine reverses.
        const DevicePlan &src = plan.devices[a], &dst = plan.devices[b];
        if (!combine) {
          ASSERT_EQ(src.sendCounts[b], dst.recvCounts[a]);
          copy(in[a], src.sendOffsets[b], out[b], dst.recvOffsets[a],
               src.sendCounts[b]);
        } else {
          copy(in[b], dst.recvOffsets[a], out[a], src.sendOffsets[b],
               dst.recvCounts[a]);
        }
      }
  };

  std::vector<Buffer> routed(W), send(W), recv(W), slotMajor(W);
  for (int64_t src = 0; src < W; ++src) {
    for (int64_t e = 0; e < E; ++e)
      for (int64_t i = 0; i < counts[src][e]; ++i)
        routed[src].push_back({src, e, i, -1});
    send[src].resize(plan.devices[src].sendRows);
    recv[src].resize(plan.devices[src].recvRows);
    slotMajor[src].resize(plan.devices[src].recvRows);
  }

  // Dispatch.
  for (int64_t src = 0; src < W; ++src)
    for (const Segment &seg : plan.devices[src].sends)
      copy(routed[src], seg.srcOffset, send[src], seg.sendOffset, seg.rows);
  allToAll(send, recv, /*combine=*/false);
  for (int64_t dst = 0; dst < W; ++dst)
    for (const Segment &seg : plan.devices[dst].recvs)
      copy(recv[dst], seg.recvOffset, slotMajor[dst], seg.slotOffset, seg.rows);

  // Every row sits in a slot that holds its expert, sources ascending within
  // a slot, and every token arrived exactly once.
  std::vector<Rows> seen(W, Rows(E));
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e)
      seen[src][e].assign(counts[src][e], 0);
  for (int64_t dst = 0; dst < W; ++dst) {
    const DevicePlan &to = plan.devices[dst];
    for (int64_t s = 0; s < S; ++s) {
      int64_t lastSrc = -1;
      for (int64_t row = to.slotOffsets[s];
           row < to.slotOffsets[s] + to.slotCounts[s]; ++row) {
        Token &token = slotMajor[dst][row];
        ASSERT_GE(token.src, 0)
            << "row " << row << " of device " << dst << " was never written";
        EXPECT_EQ(token.expert, slots.slotExpert[dst][s]);
        EXPECT_GE(token.src, lastSrc);
        lastSrc = token.src;
        ++seen[token.src][token.expert][token.index];
        token.computedOn = dst;
      }
    }
  }
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e)
      for (int64_t n : seen[src][e])
        ASSERT_EQ(n, 1) << "a token of expert " << e << " from device " << src;

  // Combine: the exact inverse, every copy reversed.
  std::vector<Buffer> recvBack(W), sendBack(W), routedBack(W);
  for (int64_t d = 0; d < W; ++d) {
    recvBack[d].resize(recv[d].size());
    sendBack[d].resize(send[d].size());
    routedBack[d].resize(routed[d].size());
  }
  for (int64_t dst = 0; dst < W; ++dst)
    for (const Segment &seg : plan.devices[dst].recvs)
      copy(slotMajor[dst], seg.slotOffset, recvBack[dst], seg.recvOffset,
           seg.rows);
  allToAll(recvBack, sendBack, /*combine=*/true);
  for (int64_t src = 0; src < W; ++src)
    for (const Segment &seg : plan.devices[src].sends)
      copy(sendBack[src], seg.sendOffset, routedBack[src], seg.srcOffset,
           seg.rows);

  for (int64_t src = 0; src < W; ++src) {
    ASSERT_EQ(routedBack[src].size(), routed[src].size());
    for (size_t row = 0; row < routed[src].size(); ++row) {
      Token token = routedBack[src][row];
      EXPECT_TRUE(holdsReplica(placement, token.computedOn, token.expert));
      token.computedOn = -1;
      ASSERT_EQ(token, routed[src][row]) << "row " << row << " of " << src;
    }
  }
}

TEST(DispatchPlanProperties, EndToEndOnSimulatedBuffers) {
  for (uint64_t seed = 1000; seed < 1300; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Placement placement = randomPlacement(rng);
    Rows counts = randomCounts(rng, placement);
    StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts);
    ASSERT_TRUE(plan.isOk()) << plan.status().message();
    simulate(placement, counts, *plan);
    if (::testing::Test::HasFailure())
      return;
  }
}

TEST(DispatchPlanProperties, EndToEndOnTheWorkedExample) {
  Placement placement;
  placement.worldSize = 4;
  placement.slotsPerDevice = 2;
  placement.replicas = {{0}, {1}, {2, 3}, {3}};
  Rows counts = {{3, 1, 6, 1}, {0, 2, 5, 1}, {1, 0, 2, 2}, {2, 1, 0, 3}};
  StatusOr<DispatchPlan> plan = computeDispatchPlan(placement, counts);
  ASSERT_TRUE(plan.isOk());
  simulate(placement, counts, *plan);
}

} // namespace
