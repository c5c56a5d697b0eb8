//===- Monitor.h - routing traffic of MoE layers over a window --*- C++ -*-===//
//
// The monitor of DESIGN.md's scheduling module: every step, every MoE layer,
// how many tokens each rank routed to each expert (the all-gathered
// moe.dispatch counts the executor plans from), kept over a sliding window.
// Policies read the window's mean; the balance ratio and all-to-all traffic
// of any placement under those counts come from the plan library.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SCHED_MONITOR_H
#define FLEXMOE_RUNTIME_SCHED_MONITOR_H

#include "runtime/plan/Placement.h"
#include "runtime/support/Status.h"

#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace flexmoe::sched {

/// What the plan library says of one placement under some counts.
struct TrafficSummary {
  /// Rows each device's experts compute.
  std::vector<int64_t> load;
  /// max(load) / mean(load); 1 when every load is zero.
  double balanceRatio = 1.0;
  /// Rows that cross devices in one all-to-all (one direction).
  int64_t crossDeviceRows = 0;
  /// max over devices of the rows it sends to or receives from other
  /// devices in one all-to-all: what bounds the exchange's time.
  int64_t maxDeviceCrossRows = 0;
};

/// Summarises `placement` (validated) under `counts` (counts[src * E + e]).
StatusOr<TrafficSummary> summarizeTraffic(const plan::Placement &placement,
                                          std::span<const int64_t> counts);

/// One MoE layer's routing over the last `window` steps.
class RoutingMonitor {
public:
  /// window >= 1 steps; worldSize and numExperts >= 1 (smaller values are
  /// taken as 1).
  RoutingMonitor(int64_t worldSize, int64_t numExperts, int64_t window);

  /// Records one step: counts[src * numExperts + e] tokens (>= 0) that rank
  /// src routed to expert e. An error if the size or a value is wrong, if
  /// `step` is not greater than the latest recorded step, or if the window's
  /// sum would overflow; the window is then unchanged. The oldest step
  /// leaves a full window.
  Status record(int64_t step, std::span<const int64_t> counts);

  int64_t worldSize() const { return worldSize_; }
  int64_t numExperts() const { return numExperts_; }
  int64_t window() const { return window_; }
  /// Steps in the window (0 before the first record, at most window()).
  int64_t samples() const { return static_cast<int64_t>(steps_.size()); }
  /// Step of the latest record (-1 before the first).
  int64_t latestStep() const;
  /// The latest step's counts (empty before the first record).
  std::span<const int64_t> latest() const;
  /// The window's mean counts, rounded to the nearest integer per entry
  /// (worldSize x numExperts; zeros before the first record): what
  /// policies plan for.
  std::vector<int64_t> meanCounts() const;
  /// Tokens per expert (summed over sources), the window's mean.
  std::vector<double> expertLoad() const;

private:
  int64_t worldSize_, numExperts_, window_;
  std::deque<int64_t> steps_;
  std::deque<std::vector<int64_t>> counts_;
  /// Sum of counts_ entry-wise (kept incrementally).
  std::vector<int64_t> sum_;
};

} // namespace flexmoe::sched

#endif // FLEXMOE_RUNTIME_SCHED_MONITOR_H
