//===- Placement.h - expert placements --------------------------*- C++ -*-===//
//
// An expert placement says which devices hold a replica of which expert of one
// MoE layer. It is plain data (DESIGN.md, principle 2): the compiler writes the
// initial one into the program, the runtime's policies produce new ones, and
// everything derived from it (slot tables, replica groups, dispatch plans) is
// computed by this library. See docs/dispatch-plan.md.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PLAN_PLACEMENT_H
#define FLEXMOE_RUNTIME_PLAN_PLACEMENT_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <string_view>
#include <vector>

namespace flexmoe::plan {

/// Which devices hold a replica of which expert, for one MoE layer; the data
/// of `#moe.placement<world_size = ..., slots_per_device = ..., replicas =
/// ...>`.
struct Placement {
  int64_t worldSize = 1;
  /// How many experts one device can hold (its expert parameters are stored
  /// as `[slotsPerDevice, ...]`).
  int64_t slotsPerDevice = 1;
  /// replicas[e] lists the devices that hold a replica of expert e, in any
  /// order: everything derived from a placement depends only on these sets.
  std::vector<std::vector<int64_t>> replicas;

  int64_t numExperts() const { return static_cast<int64_t>(replicas.size()); }

  bool operator==(const Placement &) const = default;
};

/// Bounds on a placement's shape. They keep every table derived from it
/// (slot tables are W x S, a dispatch plan's all-to-all matrix W x W)
/// allocatable and every index product far from overflow, whatever a
/// malformed program file says; real expert-parallel groups are far smaller.
inline constexpr int64_t kMaxWorldSize = 4096;
inline constexpr int64_t kMaxSlotsPerDevice = 4096;

/// Checks what docs/IR.md requires of `#moe.placement`: world size and slots
/// per device at least 1 (and at most the bounds above); at least one expert;
/// every expert with at least one replica; device ids in [0, worldSize) and
/// none listed twice for one expert; no device holding more than slotsPerDevice
/// experts. Reports the first problem in the user's terms, e.g. "expert 3 of
/// layer 'moe1' has no replica".
Status validatePlacement(const Placement &placement,
                         std::string_view layerName);

/// Plain expert parallelism: expert e on device e mod worldSize, one replica
/// each. slotsPerDevice = 0 picks the fewest slots that fit,
/// ceil(numExperts / worldSize) (at least 1). The result is not validated: a
/// too small slotsPerDevice or a worldSize < 1 yields a placement that
/// validatePlacement rejects.
Placement roundRobinPlacement(int64_t numExperts, int64_t worldSize,
                              int64_t slotsPerDevice = 0);

} // namespace flexmoe::plan

#endif // FLEXMOE_RUNTIME_PLAN_PLACEMENT_H
