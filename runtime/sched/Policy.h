//===- Policy.h - placement policies: static, shadow, flexmoe ---*- C++ -*-===//
//
// A policy looks at one MoE layer's routing window at a step boundary and
// may return a new placement for it (DESIGN.md's scheduling module;
// docs/scheduling.md has the algorithms in full):
//   static   never changes the placement (plain expert parallelism; with a
//            program compiled with a capacity factor it drops overflow
//            tokens, as DeepSpeed-MoE does);
//   shadow   FasterMoE's shadowing: from the base placement, replicate the
//            hottest experts of the latest step onto every device with a
//            free slot while the cost model says the saved compute and
//            traffic pay for broadcasting their parameters (amortised over
//            one step) and reducing their gradients; shadows are dropped
//            again when they stop paying. Adding shadows must pay by
//            minGain; dropping them only has to be no slower;
//   flexmoe  FlexMoE's heuristic: when the window's balance ratio exceeds
//            the threshold, greedily add a replica (vExpert) to the expert
//            with the highest per-replica load (with every slot taken, in
//            exchange for one of the least-loaded replicated expert), lay
//            the replicas out so per-device load evens out within the slot
//            limit, keeping replicas where they already are when that costs
//            no balance, and accept each change only while the cost model
//            (with the migration amortised over the expected interval)
//            predicts a step shorter by minGain; a re-layout of the same
//            replicas is tried first and whenever no new replica pays.
// A current (or base) placement with a device over the policy's slot limit
// is an error for shadow and flexmoe.
// Policies are deterministic: every rank computes the same decision from
// the same (all-gathered) counts, so no rank has to broadcast it.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SCHED_POLICY_H
#define FLEXMOE_RUNTIME_SCHED_POLICY_H

#include "runtime/sched/CostModel.h"
#include "runtime/sched/Monitor.h"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace flexmoe::sched {

enum class PolicyKind { Static, Shadow, FlexMoE };

/// "static", "shadow" or "flexmoe"; an error naming the choices otherwise.
StatusOr<PolicyKind> parsePolicyKind(std::string_view name);
std::string_view policyName(PolicyKind kind);

struct PolicyOptions {
  PolicyKind kind = PolicyKind::Static;
  /// flexmoe: re-plan when the window's balance ratio exceeds this (> 1).
  double rebalanceThreshold = 1.25;
  /// Slots a device may fill, <= the program's slots per device (its
  /// memory limit); 0 = all of them.
  int64_t maxSlotsPerDevice = 0;
  /// flexmoe: steps a new placement is expected to last; the migration
  /// cost is divided by it.
  double expectedInterval = 50;
  /// A change must shorten the predicted step by at least this fraction of
  /// the current prediction (hysteresis against flapping on noise).
  double minGain = 0.02;
};

/// What a policy decided for one layer at one step boundary.
struct Decision {
  bool changed = false;
  /// The placement to run next (== the current one when !changed).
  plan::Placement next;
  /// Replicas per expert before and after.
  std::vector<int64_t> replicasBefore, replicasAfter;
  /// Predicted step times under the counts the decision used (flexmoe and
  /// static: the window's mean; shadow: the latest step): the current
  /// placement, and `next` including its migration from the current one,
  /// amortised (flexmoe: over expectedInterval; shadow: over 1 step).
  CostModel::Prediction before, after;
  /// Balance ratio of the counts the decision used under the current
  /// placement (the trigger).
  double observedBalance = 1.0;
  /// One line for the decision log, e.g. "balance 1.83 > 1.25: expert 3 +1
  /// replica, expert 5 -1 replica, 1 replica copied, 1 dropped; predicted
  /// balance 1.05, step 2.31 ms -> 1.72 ms".
  std::string reason;
};

/// What a policy sees at a step boundary.
struct PolicyInput {
  int64_t step = 0; ///< steps completed
  const plan::Placement *current = nullptr;
  /// The program's compiled placement (shadow adds to and drops back to it).
  const plan::Placement *base = nullptr;
  const RoutingMonitor *monitor = nullptr;
  const CostModel *cost = nullptr;
  /// Names the layer in error messages.
  std::string_view layerName = "unnamed";
};

class Policy {
public:
  virtual ~Policy() = default;
  virtual PolicyKind kind() const = 0;
  /// Decides for one layer. Errors only for malformed input (a placement
  /// the plan library rejects, a monitor of another shape); `next` is
  /// always a placement validatePlacement accepts, with every device
  /// holding at most the slot limit.
  virtual StatusOr<Decision> decide(const PolicyInput &input) = 0;
};

/// An error for options out of range (threshold <= 1, interval < 1,
/// negative slot limit or gain).
StatusOr<std::unique_ptr<Policy>> makePolicy(const PolicyOptions &options);

} // namespace flexmoe::sched

#endif // FLEXMOE_RUNTIME_SCHED_POLICY_H
