//===- CostModelTest.cpp - cost model terms on hand-computed cases --------===//
#include "runtime/sched/CostModel.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

using Vec = std::vector<int64_t>;

plan::Placement makePlacement(int64_t worldSize, int64_t slots,
                              std::vector<Vec> replicas) {
  plan::Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slots;
  placement.replicas = std::move(replicas);
  return placement;
}

/// Round numbers so that every term can be computed by hand.
CostModel handModel() {
  CostModel model;
  model.secondsPerRow = 1e-3;
  model.rowBytes = 100;
  model.allToAllsPerStep = 4;
  model.bytesPerSecond = 1e4;
  model.latencySeconds = 1e-3;
  model.expertParamBytes = 1000;
  model.expertStateBytes = 4000;
  return model;
}

// The case of SchedTraffic.SummarizeHandComputed: loads {8, 9}, the busiest
// device sends or receives 4 cross-device rows, expert 2 has two replicas.
class SchedCostHand : public ::testing::Test {
protected:
  CostModel model = handModel();
  plan::Placement placement = makePlacement(2, 2, {{0}, {1}, {0, 1}});
  Vec counts = {4, 2, 6, 0, 3, 2};
};

TEST_F(SchedCostHand, Terms) {
  StatusOr<CostModel::Prediction> p = model.predict(placement, counts);
  ASSERT_TRUE(p) << p.status().message();
  // compute: 1e-3 s/row x max load 9.
  EXPECT_DOUBLE_EQ(p->compute, 9e-3);
  // 4 all-to-alls x (latency + 4 rows x 100 B / 1e4 B/s).
  EXPECT_DOUBLE_EQ(p->allToAll, 4 * (1e-3 + 0.04));
  // Expert 2's ring all-reduce over 2 replicas on both devices:
  // latency + 2 (2 - 1) / 2 x 1000 B / 1e4 B/s.
  EXPECT_DOUBLE_EQ(p->replicaSync, 1e-3 + 0.1);
  EXPECT_EQ(p->migration, 0);
  EXPECT_DOUBLE_EQ(p->total, p->compute + p->allToAll + p->replicaSync);
  EXPECT_EQ(p->load, (Vec{8, 9}));
  EXPECT_DOUBLE_EQ(p->balanceRatio, 18.0 / 17);
}

TEST_F(SchedCostHand, MigrationFromPlacementDelta) {
  // From expert 2 on device 0 alone: device 1 gains one replica, moving
  // 4000 B of parameters and state, amortised over 2 steps.
  plan::Placement from = makePlacement(2, 2, {{0}, {1}, {0}});
  StatusOr<CostModel::Prediction> p =
      model.predict(placement, counts, &from, 2);
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_DOUBLE_EQ(p->migration, (1e-3 + 0.4) / 2);
  EXPECT_DOUBLE_EQ(p->total,
                   p->compute + p->allToAll + p->replicaSync + p->migration);
  // Migrating from itself costs nothing.
  p = model.predict(placement, counts, &placement, 1);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->migration, 0);
}

TEST(SchedCost, BusiestReceiverBoundsMigration) {
  CostModel model = handModel();
  plan::Placement from = makePlacement(3, 3, {{0}, {1}, {2}});
  // Device 2 gains experts 0 and 1, device 0 gains expert 2: the busiest
  // receiver takes 2 replicas.
  plan::Placement to = makePlacement(3, 3, {{0, 2}, {1, 2}, {0, 2}});
  StatusOr<CostModel::Prediction> p = model.predict(to, Vec(9, 1), &from);
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_DOUBLE_EQ(p->migration, 2 * (1e-3 + 0.4));
  // Device 2 holds all three replicated experts, R = 2 each:
  // 3 x (latency + 2 (2 - 1) / 2 x 0.1 s).
  EXPECT_DOUBLE_EQ(p->replicaSync, 3 * (1e-3 + 0.1));
}

TEST(SchedCost, ReplicaSyncScalesWithReplicas) {
  CostModel model = handModel();
  plan::Placement placement = makePlacement(4, 1, {{0, 1, 2, 3}});
  StatusOr<CostModel::Prediction> p = model.predict(placement, Vec(4, 0));
  ASSERT_TRUE(p);
  // 2 (4 - 1) / 4 x 1000 B / 1e4 B/s = 0.15 s.
  EXPECT_DOUBLE_EQ(p->replicaSync, 1e-3 + 0.15);
  EXPECT_EQ(p->compute, 0);
}

TEST(SchedCost, SingleDeviceHasNoAllToAll) {
  CostModel model = handModel();
  plan::Placement placement = makePlacement(1, 2, {{0}, {0}});
  StatusOr<CostModel::Prediction> p = model.predict(placement, Vec{3, 4});
  ASSERT_TRUE(p);
  EXPECT_EQ(p->allToAll, 0);
  EXPECT_EQ(p->replicaSync, 0);
  EXPECT_DOUBLE_EQ(p->compute, 7e-3);
  EXPECT_DOUBLE_EQ(p->total, 7e-3);
}

TEST(SchedCost, PredictIntoMatchesPredict) {
  CostModel model = handModel();
  plan::Placement placement = makePlacement(2, 2, {{0}, {1}, {0, 1}});
  plan::Placement from = plan::roundRobinPlacement(3, 2);
  Vec counts = {4, 2, 6, 0, 3, 2};
  StatusOr<CostModel::Prediction> p = model.predict(placement, counts, &from);
  ASSERT_TRUE(p);
  CostModel::Prediction into;
  into.load = {1, 2, 3, 4, 5}; // reused storage is overwritten
  ASSERT_TRUE(model.predictInto(placement, counts, into, &from));
  EXPECT_EQ(into.load, p->load);
  EXPECT_EQ(into.total, p->total);
  EXPECT_EQ(into.migration, p->migration);
}

TEST(SchedCost, Errors) {
  CostModel model = handModel();
  plan::Placement placement = plan::roundRobinPlacement(2, 2);
  auto errorOf = [&](const CostModel &m, const plan::Placement &to,
                     const plan::Placement *from, double amortise) {
    StatusOr<CostModel::Prediction> p =
        m.predict(to, Vec(4, 1), from, amortise);
    return p ? std::string("ok") : p.status().message();
  };
  EXPECT_EQ(errorOf(model, placement, nullptr, 0.5),
            "migration amortised over 0.5 steps, but it must be at least 1 "
            "step");
  plan::Placement other = plan::roundRobinPlacement(3, 2);
  EXPECT_EQ(errorOf(model, placement, &other, 1),
            "cannot migrate from a placement of 2 devices x 3 experts to one "
            "of 2 devices x 2 experts");
  plan::Placement bad = makePlacement(2, 1, {{0}, {0}});
  EXPECT_EQ(errorOf(model, bad, nullptr, 1),
            "device 0 holds 2 experts of layer 'unnamed' but has 1 slot");
  EXPECT_EQ(errorOf(model, placement, &bad, 1),
            "device 0 holds 2 experts of layer 'unnamed' but has 1 slot");
  CostModel slow = model;
  slow.bytesPerSecond = 0;
  EXPECT_EQ(errorOf(slow, placement, nullptr, 1),
            "cost model coefficient bytesPerSecond is 0 but must be positive "
            "and finite");
  CostModel negative = model;
  negative.secondsPerRow = -1;
  EXPECT_EQ(errorOf(negative, placement, nullptr, 1),
            "cost model coefficient secondsPerRow is -1 but must be "
            "non-negative and finite");
  CostModel nan = model;
  nan.latencySeconds = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(nan.validate());
}

TEST(SchedCost, PlacementDelta) {
  plan::Placement from = makePlacement(3, 2, {{0}, {1}, {2}, {0, 1}});
  plan::Placement to = makePlacement(3, 2, {{0, 2}, {1}, {2, 0}, {1}});
  PlacementDelta delta = placementDelta(from, to);
  EXPECT_EQ(delta.gainedPerDevice, (Vec{1, 0, 1}));
  EXPECT_EQ(delta.added, 2);
  EXPECT_EQ(delta.removed, 1);
  // The order of a replica list does not matter.
  plan::Placement reordered = makePlacement(3, 2, {{0}, {1}, {2}, {1, 0}});
  delta = placementDelta(from, reordered);
  EXPECT_EQ(delta.gainedPerDevice, (Vec{0, 0, 0}));
  EXPECT_EQ(delta.added, 0);
  EXPECT_EQ(delta.removed, 0);
}

} // namespace
