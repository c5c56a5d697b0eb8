//===- Monitor.cpp - routing traffic of MoE layers over a window ----------===//
#include "runtime/sched/Monitor.h"

#include "runtime/plan/DispatchPlan.h"

#include <algorithm>

using namespace flexmoe;
using namespace flexmoe::sched;

StatusOr<TrafficSummary>
flexmoe::sched::summarizeTraffic(const plan::Placement &placement,
                                 std::span<const int64_t> counts) {
  // Policies summarise many candidates: reuse one plan per thread.
  thread_local plan::DispatchPlan dispatch;
  FLEXMOE_RETURN_IF_ERROR(plan::computeDispatchPlan(
      placement, counts, dispatch, "unnamed", plan::kNoDevice));
  TrafficSummary summary;
  summary.load = dispatch.load;
  summary.balanceRatio = dispatch.balanceRatio;
  summary.crossDeviceRows = dispatch.crossDeviceRows;
  for (int64_t d = 0; d < dispatch.worldSize; ++d) {
    const plan::DevicePlan &device = dispatch.devices[d];
    int64_t sent = device.sendRows - device.sendCounts[d];
    int64_t received = device.recvRows - device.recvCounts[d];
    summary.maxDeviceCrossRows =
        std::max({summary.maxDeviceCrossRows, sent, received});
  }
  return summary;
}

RoutingMonitor::RoutingMonitor(int64_t worldSize, int64_t numExperts,
                               int64_t window)
    // Out-of-range shapes are a caller bug; clamping keeps every method
    // well-defined instead of indexing out of bounds.
    : worldSize_(std::max<int64_t>(1, worldSize)),
      numExperts_(std::max<int64_t>(1, numExperts)),
      window_(std::max<int64_t>(1, window)),
      sum_(static_cast<size_t>(worldSize_ * numExperts_), 0) {}

Status RoutingMonitor::record(int64_t step, std::span<const int64_t> counts) {
  const int64_t size = worldSize_ * numExperts_;
  if (static_cast<int64_t>(counts.size()) != size)
    return errorf("routing counts of step ", step, " have ", counts.size(),
                  " entries but ", worldSize_, " ranks x ", numExperts_,
                  " experts need ", size);
  if (!steps_.empty() && step <= steps_.back())
    return errorf("routing counts of step ", step,
                  " recorded after those of step ", steps_.back(),
                  ": steps must increase");
  // The window's sum must stay exact: check the value and the overflow of
  // every entry before touching anything.
  const bool evicts = samples() == window_;
  for (int64_t i = 0; i < size; ++i) {
    int64_t c = counts[i];
    if (c < 0)
      return errorf("rank ", i / numExperts_, " routed ", c,
                    " tokens to expert ", i % numExperts_, " at step ", step);
    int64_t kept = sum_[i] - (evicts ? counts_.front()[i] : 0);
    int64_t total;
    if (__builtin_add_overflow(kept, c, &total))
      return errorf("routing counts of expert ", i % numExperts_, " from rank ",
                    i / numExperts_,
                    " overflow a 64-bit sum over the window at step ", step);
  }
  if (evicts) {
    for (int64_t i = 0; i < size; ++i)
      sum_[i] -= counts_.front()[i];
    counts_.pop_front();
    steps_.pop_front();
  }
  for (int64_t i = 0; i < size; ++i)
    sum_[i] += counts[i];
  counts_.emplace_back(counts.begin(), counts.end());
  steps_.push_back(step);
  return Status::ok();
}

int64_t RoutingMonitor::latestStep() const {
  return steps_.empty() ? -1 : steps_.back();
}

std::span<const int64_t> RoutingMonitor::latest() const {
  if (counts_.empty())
    return {};
  return counts_.back();
}

std::vector<int64_t> RoutingMonitor::meanCounts() const {
  std::vector<int64_t> mean(sum_.size(), 0);
  const int64_t n = samples();
  if (n == 0)
    return mean;
  // Round half up; sum / n + (remainder >= n - remainder) avoids the
  // overflow of (sum + n / 2).
  for (size_t i = 0; i < sum_.size(); ++i) {
    int64_t q = sum_[i] / n, r = sum_[i] % n;
    mean[i] = q + (2 * r >= n ? 1 : 0);
  }
  return mean;
}

std::vector<double> RoutingMonitor::expertLoad() const {
  std::vector<double> load(numExperts_, 0.0);
  const int64_t n = samples();
  if (n == 0)
    return load;
  for (int64_t src = 0; src < worldSize_; ++src)
    for (int64_t e = 0; e < numExperts_; ++e)
      load[e] += static_cast<double>(sum_[src * numExperts_ + e]);
  for (double &l : load)
    l /= static_cast<double>(n);
  return load;
}
