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
  StatusOr<Prediction> predict(const plan::Placement &placement,
                               std::span<const int64_t> counts,
                               const plan::Placement *from = nullptr,
                               double amortiseSteps = 1) const;
};

/// Replicas each device gains going from `from` to `to` (same shape), and
/// the replicas (expert, device) added and removed overall.
struct PlacementDelta {
  std::vector<int64_t> gainedPerDevice;
  int64_t added = 0, removed = 0;
};
PlacementDelta placementDelta(const plan::Placement &from,
                              const plan::Placement &to);

} // namespace flexmoe::sched

#endif // FLEXMOE_RUNTIME_SCHED_COSTMODEL_H
