//===- CostModel.cpp - predicted MoE step time of a placement -------------===//
#include "runtime/sched/CostModel.h"

#include "runtime/plan/DispatchPlan.h"

#include <algorithm>
#include <cmath>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

Status checkCoefficient(const char *name, double value, bool positive) {
  if (!std::isfinite(value) || value < 0 || (positive && value == 0))
    return errorf("cost model coefficient ", name, " is ", value,
                  positive ? " but must be positive and finite"
                           : " but must be non-negative and finite");
  return Status::ok();
}

/// Working storage of predictInto, per thread so that a policy evaluating
/// many candidates does not allocate.
struct Scratch {
  plan::DispatchPlan dispatch;
  std::vector<double> syncSeconds;
  std::vector<int64_t> mark;
  PlacementDelta delta;
};

Scratch &scratch() {
  thread_local Scratch s;
  return s;
}

/// placementDelta into `delta`, reusing its storage; `mark` is scratch.
void computeDelta(const plan::Placement &from, const plan::Placement &to,
                  PlacementDelta &delta, std::vector<int64_t> &mark) {
  const int64_t toW = std::max<int64_t>(0, to.worldSize);
  const int64_t fromW = std::max<int64_t>(0, from.worldSize);
  const int64_t W = std::max(toW, fromW);
  const int64_t E = std::max(from.numExperts(), to.numExperts());
  delta.gainedPerDevice.assign(toW, 0);
  delta.added = delta.removed = 0;
  // mark[d] = e while expert e is being compared: d holds e in `from`
  // (first half) or in `to` (second half).
  mark.assign(2 * W, -1);
  for (int64_t e = 0; e < E; ++e) {
    if (e < from.numExperts())
      for (int64_t d : from.replicas[e])
        if (d >= 0 && d < fromW)
          mark[d] = e;
    if (e < to.numExperts())
      for (int64_t d : to.replicas[e])
        if (d >= 0 && d < toW) {
          mark[W + d] = e;
          if (mark[d] != e) {
            ++delta.gainedPerDevice[d];
            ++delta.added;
          }
        }
    if (e < from.numExperts())
      for (int64_t d : from.replicas[e])
        if (d >= 0 && d < fromW && mark[W + d] != e)
          ++delta.removed;
  }
}

} // namespace

PlacementDelta flexmoe::sched::placementDelta(const plan::Placement &from,
                                              const plan::Placement &to) {
  PlacementDelta delta;
  std::vector<int64_t> mark;
  computeDelta(from, to, delta, mark);
  return delta;
}

Status CostModel::validate() const {
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("secondsPerRow", secondsPerRow, false));
  FLEXMOE_RETURN_IF_ERROR(checkCoefficient("rowBytes", rowBytes, false));
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("allToAllsPerStep", allToAllsPerStep, false));
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("bytesPerSecond", bytesPerSecond, true));
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("latencySeconds", latencySeconds, false));
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("expertParamBytes", expertParamBytes, false));
  FLEXMOE_RETURN_IF_ERROR(
      checkCoefficient("expertStateBytes", expertStateBytes, false));
  return Status::ok();
}

StatusOr<CostModel::Prediction>
CostModel::predict(const plan::Placement &placement,
                   std::span<const int64_t> counts, const plan::Placement *from,
                   double amortiseSteps) const {
  Prediction prediction;
  FLEXMOE_RETURN_IF_ERROR(
      predictInto(placement, counts, prediction, from, amortiseSteps));
  return prediction;
}

Status CostModel::predictInto(const plan::Placement &placement,
                              std::span<const int64_t> counts, Prediction &out,
                              const plan::Placement *from,
                              double amortiseSteps) const {
  FLEXMOE_RETURN_IF_ERROR(validate());
  if (!(amortiseSteps >= 1) || !std::isfinite(amortiseSteps))
    return errorf("migration amortised over ", amortiseSteps,
                  " steps, but it must be at least 1 step");
  Scratch &s = scratch();
  FLEXMOE_RETURN_IF_ERROR(plan::computeDispatchPlan(
      placement, counts, s.dispatch, "unnamed", plan::kNoDevice));
  const int64_t W = placement.worldSize, E = placement.numExperts();
  if (from) {
    FLEXMOE_RETURN_IF_ERROR(plan::validatePlacement(*from, "unnamed"));
    if (from->worldSize != W || from->numExperts() != E)
      return errorf("cannot migrate from a placement of ", from->worldSize,
                    " devices x ", from->numExperts(), " experts to one of ", W,
                    " devices x ", E, " experts");
  }

  const plan::DispatchPlan &dispatch = s.dispatch;
  out.load.assign(dispatch.load.begin(), dispatch.load.end());
  out.balanceRatio = dispatch.balanceRatio;
  int64_t maxLoad = 0, maxCrossRows = 0;
  for (int64_t d = 0; d < W; ++d) {
    const plan::DevicePlan &device = dispatch.devices[d];
    maxLoad = std::max(maxLoad, dispatch.load[d]);
    maxCrossRows =
        std::max({maxCrossRows, device.sendRows - device.sendCounts[d],
                  device.recvRows - device.recvCounts[d]});
  }
  out.compute = secondsPerRow * static_cast<double>(maxLoad);
  out.allToAll = W == 1
                     ? 0.0
                     : allToAllsPerStep *
                           (latencySeconds + static_cast<double>(maxCrossRows) *
                                                 rowBytes / bytesPerSecond);

  // A ring all-reduce of R replicas moves 2 (R - 1) / R of the buffer
  // through every member; a device syncs its replicated experts in turn.
  s.syncSeconds.assign(W, 0.0);
  for (int64_t e = 0; e < E; ++e) {
    const auto R = static_cast<int64_t>(placement.replicas[e].size());
    if (R < 2)
      continue;
    double seconds = latencySeconds + 2.0 * static_cast<double>(R - 1) /
                                          static_cast<double>(R) *
                                          expertParamBytes / bytesPerSecond;
    for (int64_t d : placement.replicas[e])
      s.syncSeconds[d] += seconds;
  }
  out.replicaSync =
      W == 0 ? 0.0
             : *std::max_element(s.syncSeconds.begin(), s.syncSeconds.end());

  out.migration = 0;
  if (from) {
    computeDelta(*from, placement, s.delta, s.mark);
    int64_t maxGained = 0;
    for (int64_t gained : s.delta.gainedPerDevice)
      maxGained = std::max(maxGained, gained);
    out.migration = static_cast<double>(maxGained) *
                    (latencySeconds + expertStateBytes / bytesPerSecond) /
                    amortiseSteps;
  }
  out.total = out.compute + out.allToAll + out.replicaSync + out.migration;
  return Status::ok();
}
