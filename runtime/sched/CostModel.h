//===- CostModel.h - predicted MoE step time of a placement -----*- C++ -*-===//
//
// The cost model the shadow and flexmoe policies compare placements with
// (FlexMoE §4): a step's placement-dependent time is the slowest device's
// expert compute, the all-to-all exchanges, the replicas' gradient
// all-reduce, and the migration that reaches the placement, amortised over
// the steps it is expected to last. Every term is a plain linear model whose
// coefficients are measured at run time (flexmoe-run calibrates them from
// the executor's timings) or set by tests.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SCHED_COSTMODEL_H
#define FLEXMOE_RUNTIME_SCHED_COSTMODEL_H

#include "runtime/plan/Placement.h"
#include "runtime/support/Status.h"

#include <cstdint>
#include <span>
#include <vector>

namespace flexmoe::sched {

struct CostModel {
  /// Expert compute, forward and backward, per routed row on one device.
  double secondsPerRow = 1e-6;
  /// Bytes of one row in an all-to-all (d_model x element size).
  double rowBytes = 0;
  /// All-to-all exchanges per step with the dispatch's row counts: dispatch
  /// and combine forward, and both again backward.
  double allToAllsPerStep = 4;
  /// Point-to-point / all-to-all bandwidth of one device, bytes per second.
  double bytesPerSecond = 1e9;
  /// Fixed cost of one collective call or message.
  double latencySeconds = 10e-6;
  /// One expert's parameter bytes (all its tensors): what a replica's
  /// gradient all-reduce moves.
  double expertParamBytes = 0;
  /// One expert's parameters plus optimizer state (AdamW: 3x the
  /// parameters): what migrating a replica moves.
  double expertStateBytes = 0;

  /// The predicted placement-dependent step time and its terms, seconds.
  struct Prediction {
    double compute = 0;     ///< secondsPerRow x the largest device load
    double allToAll = 0;    ///< the busiest device's cross-device bytes
    double replicaSync = 0; ///< the busiest device's replica all-reduces
    double migration = 0;   ///< the move from `from`, amortised
    double total = 0;       ///< the sum of the above
    double balanceRatio = 1.0;
    std::vector<int64_t> load; ///< rows per device
  };

  /// Predicts one step of `placement` (validated) under `counts`
  /// (counts[src * E + e]). With `from`, adds the migration from that
  /// placement (replicas a device gains move expertStateBytes each; the
  /// busiest receiving device bounds it), divided by amortiseSteps (>= 1).
  ///
  /// The terms, with W devices, rows = maxDeviceCrossRows of
  /// summarizeTraffic, and B = bytesPerSecond:
  ///   compute     = secondsPerRow * max(load)
  ///   allToAll    = allToAllsPerStep * (latency + rows * rowBytes / B),
  ///                 0 when W == 1
  ///   replicaSync = max over devices d of the sum, over the experts e with
  ///                 R_e >= 2 replicas that d holds, of a ring all-reduce:
  ///                 latency + 2 (R_e - 1) / R_e * expertParamBytes / B
  ///   migration   = max over devices d of gained_d *
  ///                 (latency + expertStateBytes / B) / amortiseSteps
  /// An error for a placement or counts the plan library rejects, a `from`
  /// of another shape, amortiseSteps < 1, or a coefficient out of range
  /// (negative, not finite, bytesPerSecond <= 0).
  StatusOr<Prediction> predict(const plan::Placement &placement,
                               std::span<const int64_t> counts,
                               const plan::Placement *from = nullptr,
                               double amortiseSteps = 1) const;

  /// The same into `out`, reusing its storage: what a policy calls for every
  /// candidate placement. On error `out` is unspecified.
  Status predictInto(const plan::Placement &placement,
                     std::span<const int64_t> counts, Prediction &out,
                     const plan::Placement *from = nullptr,
                     double amortiseSteps = 1) const;

  /// An error naming the first coefficient out of range.
  Status validate() const;
};

/// Replicas each device gains going from `from` to `to` (same shape), and
/// the replicas (expert, device) added and removed overall.
/// gainedPerDevice has to.worldSize entries. Meant for placements that pass
/// validatePlacement; otherwise device ids outside a placement's
/// [0, worldSize) are ignored and experts only one placement has count as
/// added or removed.
struct PlacementDelta {
  std::vector<int64_t> gainedPerDevice;
  int64_t added = 0, removed = 0;
};
PlacementDelta placementDelta(const plan::Placement &from,
                              const plan::Placement &to);

} // namespace flexmoe::sched

#endif // FLEXMOE_RUNTIME_SCHED_COSTMODEL_H
