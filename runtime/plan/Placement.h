//===- Placement.h - expert placements --------------------------*- C++ -*-===//
#ifndef FLEXMOE_RUNTIME_PLAN_PLACEMENT_H
#define FLEXMOE_RUNTIME_PLAN_PLACEMENT_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <vector>

namespace flexmoe::plan {

/// Which devices hold a replica of which expert, for one MoE layer.
struct Placement {
  int64_t worldSize = 1;
  int64_t slotsPerDevice = 1;
  /// replicas[e] lists the devices that hold a replica of expert e.
  std::vector<std::vector<int64_t>> replicas;

  int64_t numExperts() const { return static_cast<int64_t>(replicas.size()); }
};

} // namespace flexmoe::plan

#endif // FLEXMOE_RUNTIME_PLAN_PLACEMENT_H
