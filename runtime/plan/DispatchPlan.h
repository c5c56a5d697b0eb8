//===- DispatchPlan.h - token dispatch for one step of a layer --*- C++ -*-===//
//
// Given a placement and how many tokens each device routes to each expert in
// this step, the dispatch plan says where every token goes: how a source's
// tokens of an expert split among the expert's replicas, how each source packs
// its send buffer, the all-to-all counts and offsets, and how each destination
// reorders what it receives into the slot-major layout moe.experts reads.
// Every rank computes the same plan from the same all-gathered counts. See
// docs/dispatch-plan.md for the rules and a worked example.
//
// Thread-safe: calls on different threads share no state (the working tables
// are per thread).
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PLAN_DISPATCHPLAN_H
#define FLEXMOE_RUNTIME_PLAN_DISPATCHPLAN_H

#include "runtime/plan/Placement.h"

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace flexmoe::plan {

/// A contiguous run of rows that device `src` sends to local slot `slot` of
/// device `dst`; all are tokens of `expert`. The run stays contiguous in all
/// four buffers it passes through, so one segment is one copy in each
/// direction. Row offsets count rows (multiply by the row size for bytes).
struct Segment {
  int64_t expert = 0;
  int64_t src = 0;
  int64_t dst = 0;
  int64_t slot = 0;
  int64_t rows = 0; ///< always > 0: empty runs get no segment
  /// First row in src's expert-grouped buffer (moe.dispatch's `routed`:
  /// experts in ascending id, counts[src][e] rows each).
  int64_t srcOffset = 0;
  /// First row in src's send buffer (rows ordered by dst, then slot).
  int64_t sendOffset = 0;
  /// First row in dst's receive buffer (rows ordered by src, then slot).
  int64_t recvOffset = 0;
  /// First row in dst's slot-major buffer (rows ordered by slot, then src).
  int64_t slotOffset = 0;

  bool operator==(const Segment &) const = default;
};

/// One device's part of the plan: its send side as a source and its receive
/// side as a destination. Vectors indexed by device have worldSize entries,
/// those indexed by slot slotsPerDevice.
struct DevicePlan {
  /// This device's segments as a source, ordered by (dst, slot): the order in
  /// which they are packed into the send buffer.
  std::vector<Segment> sends;
  /// sendCounts[dst]: rows sent to dst (including to itself);
  /// sendOffsets[dst]: where they start in the send buffer (exclusive prefix
  /// sums of sendCounts).
  std::vector<int64_t> sendCounts, sendOffsets;

  /// This device's segments as a destination, ordered by (slot, src): the
  /// slot-major order. One entry per (slot, src) pair that carries rows.
  std::vector<Segment> recvs;
  /// recvCounts[src]: rows received from src; recvOffsets[src]: where they
  /// start in the receive buffer (exclusive prefix sums of recvCounts).
  std::vector<int64_t> recvCounts, recvOffsets;
  /// slotCounts[s]: rows local slot s computes (moe.all_to_all's out_counts;
  /// 0 for an empty slot); slotOffsets[s]: where they start in the
  /// slot-major buffer (exclusive prefix sums of slotCounts).
  std::vector<int64_t> slotCounts, slotOffsets;

  /// Rows this device sends (its routed rows, Σ_e counts[d][e]) and receives
  /// (its expert compute load).
  int64_t sendRows = 0, recvRows = 0;

  bool operator==(const DevicePlan &) const = default;
};

/// The dispatch plan of one step of one MoE layer.
///
/// Device d runs the dispatch direction as:
///   1. pack: for each g in devices[d].sends, copy g.rows rows from the
///      expert-grouped buffer at g.srcOffset to the send buffer at
///      g.sendOffset;
///   2. all-to-all: send with sendCounts/sendOffsets, receive with
///      recvCounts/recvOffsets (MPI_Alltoallv, or NCCL send/recv pairs);
///   3. unpack: for each g in devices[d].recvs, copy g.rows rows from the
///      receive buffer at g.recvOffset to the slot-major buffer at
///      g.slotOffset;
///   4. compute: moe.experts on the slot-major buffer with slotCounts.
/// The combine direction is the same three moves backwards: each copy with
/// source and target swapped, the all-to-all with the send and receive
/// tables swapped.
struct DispatchPlan {
  int64_t worldSize = 0;
  int64_t slotsPerDevice = 0;
  int64_t numExperts = 0;
  /// devices[d]: device d's tables. How source src's tokens of expert e split
  /// among e's replicas is the subsequence of devices[src].sends with that
  /// expert: in ascending dst, they cut src's expert-e rows in order.
  std::vector<DevicePlan> devices;
  /// load[d] = devices[d].recvRows: rows device d's experts compute.
  std::vector<int64_t> load;
  /// Σ counts: every routed row, placed exactly once.
  int64_t totalRows = 0;
  /// Rows whose source and destination differ (what the all-to-all moves
  /// over the network; the rest are local copies).
  int64_t crossDeviceRows = 0;
  /// max(load) / mean(load); 1.0 when every load is zero.
  double balanceRatio = 1.0;

  bool operator==(const DispatchPlan &) const = default;
};

/// Computes the dispatch plan for `placement` (checked with
/// validatePlacement) and `counts`, where counts[src][e] >= 0 is the number of
/// tokens device src routes to expert e this step: worldSize rows of
/// numExperts entries. `layerName` names the layer in error messages.
StatusOr<DispatchPlan>
computeDispatchPlan(const Placement &placement,
                    const std::vector<std::vector<int64_t>> &counts,
                    std::string_view layerName = "unnamed");

/// The same with counts flattened row-major, counts[src * numExperts + e]: the
/// layout of an all-gather of every device's moe.dispatch counts.
StatusOr<DispatchPlan>
computeDispatchPlan(const Placement &placement, std::span<const int64_t> counts,
                    std::string_view layerName = "unnamed");

/// Values of computeDispatchPlan's `segmentsFor` besides a device id.
inline constexpr int64_t kAllDevices = -1; ///< every device's segments
inline constexpr int64_t kNoDevice = -2;   ///< the numbers without segments

/// The same, writing into `plan` and reusing its storage: a runtime that
/// plans every step keeps one plan per layer, whose vectors then only grow
/// when a step needs more room than every step before.
///
/// `segmentsFor` = d fills only devices[d]'s `sends` and `recvs` (every
/// other device's stay empty; all counts, offsets and summary numbers are
/// complete): what rank d needs, with W times fewer segments to write.
/// kNoDevice fills no segment lists: what a policy needs to compare candidate
/// placements by load, balance and traffic. On error `plan` is unspecified.
Status computeDispatchPlan(const Placement &placement,
                           std::span<const int64_t> counts, DispatchPlan &plan,
                           std::string_view layerName = "unnamed",
                           int64_t segmentsFor = kAllDevices);

} // namespace flexmoe::plan

#endif // FLEXMOE_RUNTIME_PLAN_DISPATCHPLAN_H
