//===- PolicyTest.cpp - static, shadow and flexmoe placement policies -----===//
#include "runtime/sched/Policy.h"

#include "runtime/plan/Placement.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <random>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

using Vec = std::vector<int64_t>;

/// Experts compute everything; the network is fast. Rows cost 1 µs.
CostModel computeBound() {
  CostModel model;
  model.secondsPerRow = 1e-6;
  model.rowBytes = 64;
  model.bytesPerSecond = 1e12;
  model.latencySeconds = 1e-6;
  model.expertParamBytes = 1e4;
  model.expertStateBytes = 4e4;
  return model;
}

/// Large experts (64 MB of parameters, 256 MB with their optimizer state)
/// against 2 kB rows, 10 µs of compute per row, on a fast network: shadowing
/// a hot expert pays for its broadcast with the compute it spreads, unless
/// the network is slow (then moving the parameters costs more than moving
/// the tokens).
CostModel largeExperts() {
  CostModel model;
  model.secondsPerRow = 1e-5;
  model.rowBytes = 2048;
  model.bytesPerSecond = 1e12;
  model.latencySeconds = 1e-5;
  model.expertParamBytes = 6.4e7;
  model.expertStateBytes = 2.56e8;
  return model;
}

/// Every rank routes the same Zipf(s) split of `tokens` tokens.
Vec zipfCounts(int64_t W, int64_t E, int64_t tokens, double s) {
  std::vector<double> weight(E);
  double sum = 0;
  for (int64_t e = 0; e < E; ++e)
    sum += weight[e] = 1.0 / std::pow(static_cast<double>(e + 1), s);
  Vec counts(W * E);
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e)
      counts[src * E + e] = std::llround(tokens * weight[e] / sum);
  return counts;
}

/// Every rank routes `hot` tokens to expert `which` and `cold` to the rest.
Vec hotCounts(int64_t W, int64_t E, int64_t which, int64_t hot, int64_t cold) {
  Vec counts(W * E, cold);
  for (int64_t src = 0; src < W; ++src)
    counts[src * E + which] = hot;
  return counts;
}

RoutingMonitor monitorWith(int64_t W, int64_t E, const Vec &counts,
                           int64_t steps = 3) {
  RoutingMonitor monitor(W, E, 4);
  for (int64_t step = 1; step <= steps; ++step)
    EXPECT_TRUE(monitor.record(step, counts));
  return monitor;
}

std::unique_ptr<Policy> policyOrDie(PolicyOptions options) {
  StatusOr<std::unique_ptr<Policy>> policy = makePolicy(options);
  EXPECT_TRUE(policy) << policy.status().message();
  return policy ? std::move(policy).value() : nullptr;
}

int64_t maxHeld(const plan::Placement &placement) {
  Vec held(placement.worldSize, 0);
  for (const Vec &devices : placement.replicas)
    for (int64_t d : devices)
      ++held[d];
  return *std::max_element(held.begin(), held.end());
}

/// What every decision must satisfy, whatever the policy.
void checkDecision(const Decision &decision, const plan::Placement &current,
                   int64_t slotLimit, std::span<const int64_t> counts) {
  ASSERT_TRUE(plan::validatePlacement(decision.next, "moe"));
  EXPECT_EQ(decision.next.worldSize, current.worldSize);
  EXPECT_EQ(decision.next.slotsPerDevice, current.slotsPerDevice);
  EXPECT_LE(maxHeld(decision.next), slotLimit);
  ASSERT_EQ(decision.replicasAfter.size(), decision.next.replicas.size());
  for (size_t e = 0; e < decision.next.replicas.size(); ++e)
    EXPECT_EQ(decision.replicasAfter[e],
              static_cast<int64_t>(decision.next.replicas[e].size()));
  ASSERT_EQ(decision.replicasBefore.size(), current.replicas.size());
  for (size_t e = 0; e < current.replicas.size(); ++e)
    EXPECT_EQ(decision.replicasBefore[e],
              static_cast<int64_t>(current.replicas[e].size()));
  EXPECT_FALSE(decision.reason.empty());
  if (!decision.changed) {
    EXPECT_EQ(decision.next, current);
    return;
  }
  EXPECT_NE(decision.next, current);
  EXPECT_LT(decision.after.total, decision.before.total);
  // The reported balance is the plan library's for the new placement.
  StatusOr<TrafficSummary> summary = summarizeTraffic(decision.next, counts);
  ASSERT_TRUE(summary) << summary.status().message();
  EXPECT_DOUBLE_EQ(decision.after.balanceRatio, summary->balanceRatio);
  EXPECT_EQ(decision.after.load, summary->load);
}

struct Scenario {
  int64_t W, E, S;
  Vec counts;
};

// Readable, stable test names (ctest lists the parameter): W ranks, E
// experts, S slots, and the hottest expert's tokens.
void PrintTo(const Scenario &s, std::ostream *os) {
  int64_t hottest = 0;
  for (int64_t e = 0; e < s.E; ++e) {
    int64_t tokens = 0;
    for (int64_t r = 0; r < s.W; ++r)
      tokens += s.counts[r * s.E + e];
    hottest = std::max(hottest, tokens);
  }
  *os << "W" << s.W << "_E" << s.E << "_S" << s.S << "_hottest" << hottest;
}

//===----------------------------------------------------------------------===//
// Options and names
//===----------------------------------------------------------------------===//

TEST(SchedPolicy, ParseKind) {
  EXPECT_EQ(*parsePolicyKind("static"), PolicyKind::Static);
  EXPECT_EQ(*parsePolicyKind("shadow"), PolicyKind::Shadow);
  EXPECT_EQ(*parsePolicyKind("flexmoe"), PolicyKind::FlexMoE);
  StatusOr<PolicyKind> bad = parsePolicyKind("FlexMoE");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().message(),
            "unknown placement policy 'FlexMoE': choose static, shadow or "
            "flexmoe");
  for (PolicyKind kind :
       {PolicyKind::Static, PolicyKind::Shadow, PolicyKind::FlexMoE})
    EXPECT_EQ(*parsePolicyKind(policyName(kind)), kind);
}

TEST(SchedPolicy, MakePolicyErrors) {
  auto errorOf = [](PolicyOptions options) {
    StatusOr<std::unique_ptr<Policy>> policy = makePolicy(options);
    return policy ? std::string("ok") : policy.status().message();
  };
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  EXPECT_EQ(errorOf(options), "ok");
  PolicyOptions o = options;
  o.rebalanceThreshold = 1.0;
  EXPECT_EQ(errorOf(o),
            "rebalance threshold 1 must be a finite number greater than 1");
  o = options;
  o.expectedInterval = 0.5;
  EXPECT_EQ(errorOf(o), "expected re-plan interval 0.5 must be at least 1 "
                        "step");
  o = options;
  o.maxSlotsPerDevice = -1;
  EXPECT_EQ(errorOf(o),
            "max slots per device -1 must be 0 (all slots) or positive");
  o = options;
  o.minGain = -0.1;
  EXPECT_EQ(errorOf(o), "minimum gain -0.1 must be a fraction in [0, 1)");
  o = options;
  o.kind = static_cast<PolicyKind>(7);
  EXPECT_EQ(errorOf(o), "unknown placement policy kind 7");
  for (PolicyKind kind :
       {PolicyKind::Static, PolicyKind::Shadow, PolicyKind::FlexMoE}) {
    o = options;
    o.kind = kind;
    EXPECT_EQ(policyOrDie(o)->kind(), kind);
  }
}

TEST(SchedPolicy, MalformedInput) {
  plan::Placement current = plan::roundRobinPlacement(4, 2, 3);
  RoutingMonitor monitor(2, 4, 2);
  RoutingMonitor wrongShape(2, 5, 2);
  CostModel cost = computeBound();
  auto errorOf = [&](PolicyKind kind, PolicyInput input, int64_t maxSlots = 0) {
    PolicyOptions options;
    options.kind = kind;
    options.maxSlotsPerDevice = maxSlots;
    StatusOr<Decision> d = policyOrDie(options)->decide(input);
    return d ? std::string("ok") : d.status().message();
  };
  PolicyInput input{0, &current, &current, &monitor, &cost, "moe1"};
  EXPECT_EQ(errorOf(PolicyKind::FlexMoE, input), "ok");
  PolicyInput i = input;
  i.current = nullptr;
  EXPECT_EQ(errorOf(PolicyKind::Static, i),
            "policy input for layer 'moe1' lacks its current placement");
  i = input;
  i.base = nullptr;
  EXPECT_EQ(errorOf(PolicyKind::FlexMoE, i), "ok");
  EXPECT_EQ(errorOf(PolicyKind::Shadow, i),
            "policy input for layer 'moe1' lacks its base placement");
  i = input;
  i.monitor = &wrongShape;
  EXPECT_EQ(errorOf(PolicyKind::FlexMoE, i),
            "the monitor of layer 'moe1' counts 2 ranks x 5 experts but the "
            "placement has 2 devices x 4 experts");
  plan::Placement invalid = current;
  invalid.replicas[3].clear();
  i = input;
  i.current = &invalid;
  EXPECT_EQ(errorOf(PolicyKind::Static, i),
            "expert 3 of layer 'moe1' has no replica");
  EXPECT_EQ(errorOf(PolicyKind::FlexMoE, input, 1),
            "device 0 holds 2 experts of layer 'moe1' in the current "
            "placement, more than the 1 slots the policy may fill");
  plan::Placement otherBase = plan::roundRobinPlacement(4, 2, 4);
  i = input;
  i.base = &otherBase;
  EXPECT_EQ(errorOf(PolicyKind::Shadow, i),
            "the base placement of layer 'moe1' has another shape than the "
            "current one");
  plan::Placement fullBase = plan::roundRobinPlacement(4, 2, 3);
  fullBase.replicas[1] = {1, 0};
  i = input;
  i.base = &fullBase;
  EXPECT_EQ(errorOf(PolicyKind::Shadow, i, 2),
            "device 0 holds 3 experts of layer 'moe1' in the base placement, "
            "more than the 2 slots the policy may fill");
  CostModel broken = cost;
  broken.secondsPerRow = -1;
  i = input;
  i.cost = &broken;
  EXPECT_EQ(errorOf(PolicyKind::FlexMoE, i),
            "cost model coefficient secondsPerRow is -1 but must be "
            "non-negative and finite");
}

//===----------------------------------------------------------------------===//
// static
//===----------------------------------------------------------------------===//

TEST(SchedPolicyStatic, NeverChanges) {
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 4);
  Vec counts = hotCounts(W, E, 0, 1000, 1);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  std::unique_ptr<Policy> policy = policyOrDie({});
  StatusOr<Decision> d =
      policy->decide({3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed);
  checkDecision(*d, current, 4, counts);
  EXPECT_GT(d->observedBalance, 3.0);
  EXPECT_EQ(d->before.total, d->after.total);
}

//===----------------------------------------------------------------------===//
// flexmoe
//===----------------------------------------------------------------------===//

class SchedPolicyFlexMoE : public ::testing::TestWithParam<Scenario> {};

// Skewed traffic with spare slots: the decision brings the predicted
// balance under the threshold, and a second decision on the same counts
// leaves the new placement alone.
TEST_P(SchedPolicyFlexMoE, RebalancesUnderThreshold) {
  const Scenario &sc = GetParam();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  std::unique_ptr<Policy> policy = policyOrDie(options);
  plan::Placement current = plan::roundRobinPlacement(sc.E, sc.W, sc.S);
  RoutingMonitor monitor = monitorWith(sc.W, sc.E, sc.counts);
  CostModel cost = computeBound();
  StatusOr<Decision> d =
      policy->decide({3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  SCOPED_TRACE(d->reason);
  ASSERT_TRUE(d->changed);
  EXPECT_GT(d->observedBalance, options.rebalanceThreshold);
  EXPECT_LE(d->after.balanceRatio, options.rebalanceThreshold);
  checkDecision(*d, current, sc.S, monitor.meanCounts());
  EXPECT_GE(d->before.total - d->after.total,
            options.minGain * d->before.total);
  EXPECT_NE(d->reason.find("balance"), std::string::npos);

  // No flapping: the same counts, the new placement.
  plan::Placement next = d->next;
  StatusOr<Decision> again =
      policy->decide({4, &next, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_FALSE(again->changed) << again->reason;
  EXPECT_EQ(again->next, next);
}

INSTANTIATE_TEST_SUITE_P(
    Skews, SchedPolicyFlexMoE,
    ::testing::Values(Scenario{2, 8, 8, zipfCounts(2, 8, 4096, 1.2)},
                      Scenario{4, 8, 4, zipfCounts(4, 8, 4096, 1.2)},
                      Scenario{4, 16, 8, zipfCounts(4, 16, 4096, 1.0)},
                      Scenario{2, 8, 8, hotCounts(2, 8, 5, 1000, 20)},
                      Scenario{4, 8, 4, hotCounts(4, 8, 2, 1000, 20)},
                      Scenario{4, 16, 8, hotCounts(4, 16, 9, 4000, 10)},
                      Scenario{16, 64, 8, zipfCounts(16, 64, 8192, 1.1)}));

TEST(SchedPolicyFlexMoECases, BalancedTrafficNeverChanges) {
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 4);
  Vec counts(W * E, 100);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed);
  EXPECT_EQ(d->observedBalance, 1.0);
  EXPECT_EQ(d->reason, "balance 1.00 <= 1.25: no change");
  checkDecision(*d, current, 4, counts);
}

TEST(SchedPolicyFlexMoECases, NoRoutingYetNeverChanges) {
  plan::Placement current = plan::roundRobinPlacement(8, 2, 8);
  RoutingMonitor monitor(2, 8, 4);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {0, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->changed);
}

TEST(SchedPolicyFlexMoECases, PlansForTheWindowMean) {
  // Seven skewed steps and an even last one: the mean is still skewed.
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 4);
  RoutingMonitor monitor(W, E, 8);
  for (int64_t step = 1; step <= 7; ++step)
    ASSERT_TRUE(monitor.record(step, hotCounts(W, E, 0, 1000, 20)));
  ASSERT_TRUE(monitor.record(8, Vec(W * E, 100)));
  Vec mean = monitor.meanCounts();
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {8, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE(d->changed) << d->reason;
  StatusOr<TrafficSummary> observed = summarizeTraffic(current, mean);
  ASSERT_TRUE(observed);
  EXPECT_DOUBLE_EQ(d->observedBalance, observed->balanceRatio);
  EXPECT_DOUBLE_EQ(d->before.balanceRatio, observed->balanceRatio);
  checkDecision(*d, current, 4, mean);
  EXPECT_LE(d->after.balanceRatio, options.rebalanceThreshold);
}

TEST(SchedPolicyFlexMoECases, RespectsTheSlotLimit) {
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 8);
  Vec counts = zipfCounts(W, E, 4096, 1.4);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  options.maxSlotsPerDevice = 3;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE(d->changed) << d->reason;
  checkDecision(*d, current, 3, monitor.meanCounts());
}

// Every slot taken: a replica of the hot expert needs one of the cold
// replicated expert's.
TEST(SchedPolicyFlexMoECases, TradesAColdReplicaWhenSlotsAreFull) {
  plan::Placement current;
  current.worldSize = 2;
  current.slotsPerDevice = 2;
  current.replicas = {{0}, {1}, {0, 1}};
  Vec counts = {500, 10, 5, /*device 1*/ 500, 10, 5};
  RoutingMonitor monitor = monitorWith(2, 3, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE(d->changed) << d->reason;
  EXPECT_EQ(d->replicasAfter, (Vec{2, 1, 1}));
  checkDecision(*d, current, 2, counts);
  EXPECT_NE(d->reason.find("expert 0 +1 replica, expert 2 -1 replica"),
            std::string::npos)
      << d->reason;
}

// Two hot experts on one device and no spare slot: the same replicas laid
// out again (a pure migration) fix it.
TEST(SchedPolicyFlexMoECases, MovesExpertsWithoutNewReplicas) {
  plan::Placement current;
  current.worldSize = 2;
  current.slotsPerDevice = 2;
  current.replicas = {{0}, {1}, {0}, {1}};
  Vec counts = {300, 10, 300, 10, /*device 1*/ 300, 10, 300, 10};
  RoutingMonitor monitor = monitorWith(2, 4, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE(d->changed) << d->reason;
  EXPECT_EQ(d->replicasAfter, (Vec{1, 1, 1, 1}));
  EXPECT_DOUBLE_EQ(d->after.balanceRatio, 1.0);
  checkDecision(*d, current, 2, counts);
}

TEST(SchedPolicyFlexMoECases, MinGainHoldsBackSmallGains) {
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 4);
  Vec counts = zipfCounts(W, E, 4096, 1.2);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  options.minGain = 0.9; // nothing shortens the step by 90%
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed);
  EXPECT_NE(d->reason.find("no change pays"), std::string::npos) << d->reason;
  checkDecision(*d, current, 4, counts);
}

TEST(SchedPolicyFlexMoECases, ExpensiveMigrationDoesNotPay) {
  const int64_t W = 4, E = 8;
  plan::Placement current = plan::roundRobinPlacement(E, W, 4);
  Vec counts = hotCounts(W, E, 0, 1000, 20);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  cost.expertStateBytes = 1e12; // a second per replica moved
  PolicyOptions options;
  options.kind = PolicyKind::FlexMoE;
  options.expectedInterval = 1;
  StatusOr<Decision> d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed) << d->reason;
  // The same change pays once it is expected to last long enough.
  options.expectedInterval = 1e9;
  d = policyOrDie(options)->decide(
      {3, &current, &current, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_TRUE(d->changed) << d->reason;
}

//===----------------------------------------------------------------------===//
// shadow
//===----------------------------------------------------------------------===//

TEST(SchedPolicyShadow, ShadowsAHotExpertWhenComputeDominates) {
  const int64_t W = 4, E = 8;
  plan::Placement base = plan::roundRobinPlacement(E, W, 4);
  Vec counts = hotCounts(W, E, 3, 2000, 20);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = largeExperts();
  PolicyOptions options;
  options.kind = PolicyKind::Shadow;
  std::unique_ptr<Policy> policy = policyOrDie(options);
  StatusOr<Decision> d =
      policy->decide({3, &base, &base, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  SCOPED_TRACE(d->reason);
  ASSERT_TRUE(d->changed);
  checkDecision(*d, base, 4, counts);
  // Expert 3 is on every device, the rest where the base has them.
  EXPECT_EQ(d->next.replicas[3], (Vec{0, 1, 2, 3}));
  for (int64_t e = 0; e < E; ++e) {
    if (e == 3)
      continue;
    EXPECT_EQ(d->next.replicas[e].size(), base.replicas[e].size())
        << "expert " << e;
    for (int64_t dev : base.replicas[e])
      EXPECT_NE(std::find(d->next.replicas[e].begin(),
                          d->next.replicas[e].end(), dev),
                d->next.replicas[e].end());
  }

  // Unchanged traffic keeps the shadow.
  plan::Placement shadowed = d->next;
  StatusOr<Decision> again =
      policy->decide({4, &shadowed, &base, &monitor, &cost, "moe"});
  ASSERT_TRUE(again) << again.status().message();
  EXPECT_FALSE(again->changed) << again->reason;

  // Once the traffic evens out the shadow stops paying and is dropped.
  RoutingMonitor even = monitorWith(W, E, Vec(W * E, 50));
  StatusOr<Decision> dropped =
      policy->decide({5, &shadowed, &base, &even, &cost, "moe"});
  ASSERT_TRUE(dropped) << dropped.status().message();
  EXPECT_TRUE(dropped->changed) << dropped->reason;
  EXPECT_EQ(dropped->next, base);
}

TEST(SchedPolicyShadow, SlowNetworkDoesNotPay) {
  const int64_t W = 4, E = 8;
  plan::Placement base = plan::roundRobinPlacement(E, W, 4);
  Vec counts = hotCounts(W, E, 3, 2000, 20);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = largeExperts();
  cost.bytesPerSecond = 1e8; // broadcasting 256 MB takes 2.6 s
  PolicyOptions options;
  options.kind = PolicyKind::Shadow;
  StatusOr<Decision> d =
      policyOrDie(options)->decide({3, &base, &base, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed) << d->reason;
  checkDecision(*d, base, 4, counts);
}

TEST(SchedPolicyShadow, UsesTheLatestStep) {
  // The window's mean is even, but the latest step is skewed.
  const int64_t W = 2, E = 4;
  plan::Placement base = plan::roundRobinPlacement(E, W, 4);
  RoutingMonitor monitor(W, E, 8);
  for (int64_t step = 1; step <= 7; ++step)
    ASSERT_TRUE(monitor.record(step, Vec(W * E, 100)));
  ASSERT_TRUE(monitor.record(8, hotCounts(W, E, 1, 3000, 10)));
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::Shadow;
  StatusOr<Decision> d =
      policyOrDie(options)->decide({8, &base, &base, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  ASSERT_TRUE(d->changed) << d->reason;
  EXPECT_EQ(d->next.replicas[1], (Vec{0, 1}));
}

TEST(SchedPolicyShadow, FullDevicesGetNoShadow) {
  const int64_t W = 4, E = 8;
  // Two slots per device, all taken by the base: nowhere to shadow.
  plan::Placement base = plan::roundRobinPlacement(E, W, 2);
  Vec counts = hotCounts(W, E, 3, 2000, 20);
  RoutingMonitor monitor = monitorWith(W, E, counts);
  CostModel cost = computeBound();
  PolicyOptions options;
  options.kind = PolicyKind::Shadow;
  StatusOr<Decision> d =
      policyOrDie(options)->decide({3, &base, &base, &monitor, &cost, "moe"});
  ASSERT_TRUE(d) << d.status().message();
  EXPECT_FALSE(d->changed);
  checkDecision(*d, base, 2, counts);
}

//===----------------------------------------------------------------------===//
// Properties on random inputs
//===----------------------------------------------------------------------===//

TEST(SchedPolicyProperty, RandomInputsGiveValidDeterministicDecisions) {
  std::mt19937_64 rng(20261125);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t W = 1 + static_cast<int64_t>(rng() % 6);
    const int64_t E = 1 + static_cast<int64_t>(rng() % 12);
    const int64_t minSlots = (E + W - 1) / W;
    const int64_t S = minSlots + static_cast<int64_t>(rng() % 4);
    const int64_t limit =
        rng() % 3 == 0
            ? minSlots + static_cast<int64_t>(rng() % (S - minSlots + 1))
            : 0;
    plan::Placement base = plan::roundRobinPlacement(E, W, S);
    Vec counts(W * E);
    for (int64_t &c : counts)
      c = rng() % 4 == 0 ? static_cast<int64_t>(rng() % 2000)
                         : static_cast<int64_t>(rng() % 50);
    RoutingMonitor monitor = monitorWith(W, E, counts, 2);
    CostModel cost = computeBound();
    cost.bytesPerSecond = std::pow(10.0, 6 + static_cast<double>(rng() % 7));
    for (PolicyKind kind : {PolicyKind::Shadow, PolicyKind::FlexMoE}) {
      PolicyOptions options;
      options.kind = kind;
      options.maxSlotsPerDevice = limit;
      options.minGain = (rng() % 3) * 0.02;
      std::unique_ptr<Policy> policy = policyOrDie(options);
      std::unique_ptr<Policy> twin = policyOrDie(options);
      plan::Placement current = base;
      // Follow the policy for a few decisions on the same counts.
      for (int round = 0; round < 3; ++round) {
        SCOPED_TRACE("trial " + std::to_string(trial) + " " +
                     std::string(policyName(kind)) + " round " +
                     std::to_string(round));
        PolicyInput input{round, &current, &base, &monitor, &cost, "moe"};
        StatusOr<Decision> d = policy->decide(input);
        ASSERT_TRUE(d) << d.status().message();
        checkDecision(*d, current, limit > 0 ? limit : S, counts);
        StatusOr<Decision> e = twin->decide(input);
        ASSERT_TRUE(e);
        EXPECT_EQ(d->next, e->next);
        EXPECT_EQ(d->reason, e->reason);
        if (!d->changed)
          break;
        // Neither policy flaps: a second decision on the same counts keeps
        // what the first chose.
        if (round == 1)
          ADD_FAILURE() << "changed twice: " << d->reason;
        current = d->next;
      }
    }
  }
}

} // namespace
