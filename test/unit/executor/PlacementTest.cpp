//===- PlacementTest.cpp - run-time expert placement in the executor -----===//
//
// setPlacement's checks and bookkeeping, slot checksums, the routing bias
// (its routing and its exact gradient), step timings and the expert sizes,
// at world size 1. Moves between ranks and the invariance of training under
// re-plans run under mpirun in test/Distributed/placement.test.
//
//===----------------------------------------------------------------------===//

#include "../program/ProgramBuilder.h"
#include "../train/TrainTestUtil.h"
#include "MoeTestProgram.h"

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/ExpertSlots.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

namespace flexmoe::executor {
// For EXPECT_EQ on checksum lists (found by argument-dependent lookup).
bool operator==(const SlotChecksum &a, const SlotChecksum &b) {
  return a.slot == b.slot && a.expert == b.expert &&
         a.parameters == b.parameters && a.optimizerState == b.optimizerState;
}
} // namespace flexmoe::executor

using namespace flexmoe;
using namespace flexmoe::testing;
using namespace flexmoe::testing::moetest;
using executor::Executor;
using fb::BufferKind;
using fb::ElementType;
using fb::OpAttrs;
using fb::OpCode;

namespace {

program::LoadedProgram load(const ProgramDesc &desc) {
  StatusOr<program::LoadedProgram> loaded =
      program::loadProgramFromBytes(serialize(desc));
  EXPECT_TRUE(loaded.isOk()) << loaded.status().message();
  return std::move(loaded).value();
}

/// An executor of the 6-slot program (4 experts, 2 empty slots).
struct TestRun {
  program::LoadedProgram program;
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  std::unique_ptr<Executor> executor;

  explicit TestRun(int32_t slots = 6) : program(load(moeProgram(slots))) {
    executor::ExecutorOptions options;
    options.seed = 7;
    StatusOr<std::unique_ptr<Executor>> created =
        Executor::create(program, device, comm, options);
    EXPECT_TRUE(created.isOk()) << created.status().message();
    if (created)
      executor = std::move(created).value();
    setBatch(1);
  }

  void setBatch(uint64_t seed) {
    std::vector<int32_t> tokens(kT), labels(kT);
    uint64_t state = seed;
    for (int64_t i = 0; i < kT; ++i) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      tokens[i] = static_cast<int32_t>((state >> 33) % kV);
      labels[i] = static_cast<int32_t>((state >> 13) % kV);
    }
    ASSERT_TRUE(executor->setInputs(tokens, labels).isOk());
  }

  float step() {
    StatusOr<float> loss = executor->step();
    EXPECT_TRUE(loss.isOk()) << loss.status().message();
    return loss.isOk() ? *loss : std::numeric_limits<float>::quiet_NaN();
  }

  uint32_t id(const std::string &name) const {
    const auto *buffers = program.program().buffers();
    for (uint32_t i = 0; i < buffers->size(); ++i)
      if (buffers->Get(i)->name()->str() == name)
        return i;
    ADD_FAILURE() << "no buffer " << name;
    return 0;
  }
  float *values(const std::string &name) const {
    return executor->buffer(id(name)).as<float>();
  }

  std::vector<executor::SlotChecksum> checksums() const {
    StatusOr<std::vector<executor::SlotChecksum>> sums =
        executor->slotChecksums(0);
    EXPECT_TRUE(sums.isOk()) << sums.status().message();
    return sums.isOk() ? *sums : std::vector<executor::SlotChecksum>{};
  }
};

std::string setPlacementError(Executor &ex, size_t layer,
                              const plan::Placement &next) {
  Status status = ex.setPlacement(layer, next);
  return status.isOk() ? "<ok>" : status.message();
}

TEST(Placement, SetPlacementRejectsBadPlacementsByLayer) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  Executor &ex = *run.executor;
  const plan::Placement good = ex.placement(0);
  EXPECT_EQ(good.slotsPerDevice, 6);
  EXPECT_EQ(good.numExperts(), 4);

  EXPECT_NE(
      setPlacementError(ex, 1, good)
          .find("cannot change the placement of MoE layer 1: the program has "
                "1 MoE layer(s)"),
      std::string::npos);
  plan::Placement bad = good;
  bad.worldSize = 2;
  EXPECT_NE(
      setPlacementError(ex, 0, bad)
          .find("layer 'moe0': the new placement is for world size 2 but the "
                "program runs on 1 ranks"),
      std::string::npos);
  bad = good;
  bad.slotsPerDevice = 4;
  EXPECT_NE(
      setPlacementError(ex, 0, bad)
          .find("layer 'moe0': the new placement has 4 slots per device but "
                "the program stores 6"),
      std::string::npos);
  bad = good;
  bad.replicas.pop_back();
  EXPECT_NE(
      setPlacementError(ex, 0, bad)
          .find("layer 'moe0': the new placement places 3 experts but the "
                "layer has 4"),
      std::string::npos);
  bad = good;
  bad.replicas[2].clear();
  EXPECT_NE(setPlacementError(ex, 0, bad)
                .find("expert 2 of layer 'moe0' has no replica"),
            std::string::npos)
      << setPlacementError(ex, 0, bad);
  bad = good;
  bad.replicas[1] = {1};
  EXPECT_NE(setPlacementError(ex, 0, bad).find("layer 'moe0'"),
            std::string::npos)
      << setPlacementError(ex, 0, bad);
  bad = good;
  bad.replicas[3] = {0, 0};
  EXPECT_NE(setPlacementError(ex, 0, bad).find("layer 'moe0'"),
            std::string::npos)
      << setPlacementError(ex, 0, bad);

  // Nothing moved: the executor trains on.
  EXPECT_EQ(ex.placement(0), good);
  EXPECT_TRUE(std::isfinite(run.step()));
}

TEST(Placement, AnUnchangedPlacementMovesNothingAndTrainsIdentically) {
  TestRun moved, still;
  ASSERT_TRUE(moved.executor && still.executor);
  moved.step();
  still.step();
  std::vector<executor::SlotChecksum> before = moved.checksums();
  executor::MigrationStats stats;
  stats.localMoves = 99;
  ASSERT_TRUE(
      moved.executor->setPlacement(0, moved.executor->placement(0), &stats)
          .isOk());
  EXPECT_EQ(stats.localMoves, 0);
  EXPECT_EQ(stats.replicasReceived + stats.replicasSent, 0);
  EXPECT_EQ(stats.bytesReceived + stats.bytesSent, 0);
  EXPECT_EQ(stats.replicasAdded + stats.replicasRemoved, 0);
  EXPECT_GE(stats.seconds, 0.0);
  EXPECT_EQ(moved.checksums(), before);
  for (uint64_t s = 2; s <= 4; ++s) {
    moved.setBatch(s);
    still.setBatch(s);
    EXPECT_EQ(moved.step(), still.step()) << "step " << s;
  }
  EXPECT_EQ(moved.checksums(), still.checksums());
}

TEST(Placement, SlotChecksumsFollowTheSlotsAndTheirState) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  std::vector<executor::SlotChecksum> sums = run.checksums();
  ASSERT_EQ(sums.size(), 6u);
  for (int64_t s = 0; s < 6; ++s) {
    EXPECT_EQ(sums[s].slot, s);
    EXPECT_EQ(sums[s].expert, s < 4 ? s : -1);
  }
  // Different experts, different parameters; empty slots are zeros, like
  // the fresh optimizer state.
  for (int64_t s = 1; s < 4; ++s)
    EXPECT_NE(sums[s].parameters, sums[0].parameters);
  EXPECT_EQ(sums[4].parameters, sums[5].parameters);
  EXPECT_EQ(sums[0].optimizerState, sums[4].optimizerState);

  // One changed value changes its slot's checksum only.
  float *w2 = run.values("moe0.w2");
  w2[2 * kH * kD + 5] += 1.0f;
  std::vector<executor::SlotChecksum> after = run.checksums();
  for (int64_t s = 0; s < 6; ++s)
    EXPECT_EQ(after[s].parameters == sums[s].parameters, s != 2) << s;
  // A step writes the optimizer state of the experts that got tokens.
  run.step();
  after = run.checksums();
  std::span<const int64_t> counts = run.executor->routingCounts(0);
  for (int64_t e = 0; e < 4; ++e)
    EXPECT_EQ(after[e].optimizerState != sums[e].optimizerState, counts[e] > 0)
        << "expert " << e;
  EXPECT_EQ(after[5].optimizerState, sums[5].optimizerState);

  EXPECT_FALSE(run.executor->slotChecksums(1).isOk());
}

TEST(Placement, ExpertSizes) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  int64_t params = (kD * kH + kH + kH * kD + kD) * 4;
  EXPECT_EQ(run.executor->expertParameterBytes(0), params);
  EXPECT_EQ(run.executor->expertStateBytes(0), 3 * params);
  EXPECT_EQ(run.executor->allToAllRowBytes(0), kD * 4);
}

TEST(Placement, RoutingBiasIsCheckedAndSkewsTheRouting) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  Executor &ex = *run.executor;
  Status status = ex.setRoutingBias(0, {1, 2, 3});
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find(
                "layer 'moe0': a routing bias of 3 values for 4 experts"),
            std::string::npos)
      << status.message();
  status = ex.setRoutingBias(0, {0, std::nanf(""), 0, 0});
  ASSERT_FALSE(status.isOk());
  EXPECT_NE(status.message().find("the routing bias of expert 1 is not finite"),
            std::string::npos)
      << status.message();
  EXPECT_FALSE(ex.setRoutingBias(2, {}).isOk());

  // Expert 2 wins every token's first choice (top-2: T of the 2T copies).
  ASSERT_TRUE(ex.setRoutingBias(0, {0, 0, 50, 0}).isOk());
  run.step();
  std::span<const int64_t> counts = ex.routingCounts(0);
  ASSERT_EQ(counts.size(), 4u);
  EXPECT_EQ(counts[2], kT);
  EXPECT_EQ(counts[0] + counts[1] + counts[3], kT);
  EXPECT_EQ(ex.layerStats(0).expertTokens[2], kT);

  // Evaluation ignores the bias: the same loss as without it.
  float biased = *ex.evaluate();
  ASSERT_TRUE(ex.setRoutingBias(0, {}).isOk());
  EXPECT_EQ(*ex.evaluate(), biased);
}

TEST(Placement, TheBiasedModelsGateGradientIsExact) {
  // Central differences of the training loss (biased routing) against the
  // gate weight's gradient: the gate's backward works from the biased
  // probabilities.
  const std::vector<float> bias = {0.8f, -0.4f, 0.3f, 0.f};
  auto lossAt = [&](int64_t index, float delta) {
    TestRun run;
    EXPECT_TRUE(run.executor->setRoutingBias(0, bias).isOk());
    run.values("moe0.gate")[index] += delta;
    return static_cast<double>(run.step());
  };
  TestRun run;
  ASSERT_TRUE(run.executor->setRoutingBias(0, bias).isOk());
  std::vector<float> grad, unbiasedGrad;
  run.executor->setGradientObserver(
      [&](const fb::Buffer &param, const device::Operand &g) {
        if (param.name()->str() == "moe0.gate")
          grad.assign(g.as<float>(), g.as<float>() + g.numElements());
      });
  run.step();
  ASSERT_EQ(grad.size(), static_cast<size_t>(kD * kE));

  TestRun plain;
  plain.executor->setGradientObserver(
      [&](const fb::Buffer &param, const device::Operand &g) {
        if (param.name()->str() == "moe0.gate")
          unbiasedGrad.assign(g.as<float>(), g.as<float>() + g.numElements());
      });
  plain.step();
  EXPECT_NE(grad, unbiasedGrad);

  // The largest entries carry the signal; rounding dominates the small.
  std::vector<int64_t> order(grad.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = static_cast<int64_t>(i);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return std::abs(grad[a]) > std::abs(grad[b]);
  });
  const float eps = 1e-2f;
  for (int k = 0; k < 4; ++k) {
    int64_t i = order[k];
    double numeric = (lossAt(i, eps) - lossAt(i, -eps)) / (2.0 * eps);
    EXPECT_NEAR(numeric, grad[i], 0.03 * std::abs(grad[i]) + 1e-4)
        << "gate weight " << i;
  }
}

TEST(Placement, TimingsOfAStepAndAnEvaluation) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  run.step();
  const executor::StepTimings &t = run.executor->timings();
  EXPECT_GT(t.stepSeconds, 0.0);
  EXPECT_GT(t.expertSeconds, 0.0);
  EXPECT_LE(t.expertSeconds + t.allToAllSeconds + t.planSeconds, t.stepSeconds);
  // One rank computes every routed copy; nothing goes to other ranks.
  EXPECT_EQ(t.expertRows, kT * kK);
  EXPECT_EQ(t.allToAllBytes, 0);
  EXPECT_GE(t.planSeconds, 0.0);
  ASSERT_TRUE(run.executor->evaluate().isOk());
  EXPECT_EQ(run.executor->timings().expertRows, kT * kK);
  EXPECT_GT(run.executor->timings().stepSeconds, 0.0);
}

TEST(Placement, CheckpointsFollowTheCurrentPlacement) {
  TempDir dir;
  TestRun run;
  ASSERT_TRUE(run.executor);
  run.step();
  std::string path = dir.file("c");
  ASSERT_TRUE(
      train::saveCheckpoint(*run.executor, path, nlohmann::json::object())
          .isOk());
  std::vector<executor::SlotChecksum> saved = run.checksums();
  ASSERT_TRUE(run.executor->setPlacement(0, run.executor->placement(0)).isOk());
  run.step();
  ASSERT_NE(run.checksums(), saved);
  StatusOr<nlohmann::json> loaded = train::loadCheckpoint(*run.executor, path);
  ASSERT_TRUE(loaded.isOk()) << loaded.status().message();
  EXPECT_EQ(run.checksums(), saved);
  EXPECT_EQ(run.executor->stepsDone(), 1);
}

/// Ranks as threads of one process, for what setPlacement needs: buffered
/// point-to-point messages (the collectives run under mpirun in
/// test/Distributed).
class ThreadWorld {
public:
  explicit ThreadWorld(int64_t size) : size_(size) {}

  class Rank final : public device::Communicator {
  public:
    Rank(ThreadWorld &world, int64_t rank) : world_(world), rank_(rank) {}
    int64_t rank() const override { return rank_; }
    int64_t worldSize() const override { return world_.size_; }
    Status allGather(std::span<const int64_t>, std::span<int64_t>) override {
      return unused();
    }
    Status allToAllV(const std::byte *, std::span<const int64_t>,
                     std::span<const int64_t>, std::byte *,
                     std::span<const int64_t>, std::span<const int64_t>,
                     size_t) override {
      return unused();
    }
    Status allReduce(float *, int64_t, device::ReduceOp) override {
      return unused();
    }
    Status allReduceHost(std::span<double>, device::ReduceOp) override {
      return unused();
    }
    Status groupSum(float *, int64_t, std::span<const int32_t>) override {
      return unused();
    }
    Status broadcast(std::byte *, size_t, int64_t) override { return unused(); }
    Status barrier() override { return unused(); }
    Status send(const std::byte *data, size_t bytes, int64_t dst,
                int tag) override {
      std::lock_guard<std::mutex> lock(world_.mutex_);
      world_.mail_[{rank_, dst, tag}].emplace_back(data, data + bytes);
      ++world_.messages_;
      world_.arrived_.notify_all();
      return Status::ok();
    }
    Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override {
      std::unique_lock<std::mutex> lock(world_.mutex_);
      auto &queue = world_.mail_[{src, rank_, tag}];
      if (!world_.arrived_.wait_for(lock, std::chrono::seconds(20),
                                    [&] { return !queue.empty(); }))
        return errorf("rank ", rank_, ": no message from rank ", src);
      std::vector<std::byte> message = std::move(queue.front());
      queue.pop_front();
      if (message.size() != bytes)
        return errorf("rank ", rank_, ": ", message.size(), " bytes from rank ",
                      src, ", expected ", bytes);
      std::memcpy(data, message.data(), bytes);
      return Status::ok();
    }

  private:
    static Status unused() { return Status::error("not in ThreadWorld"); }
    ThreadWorld &world_;
    int64_t rank_;
  };

  int64_t messages() const { return messages_; }

private:
  int64_t size_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::map<std::tuple<int64_t, int64_t, int>,
           std::deque<std::vector<std::byte>>>
      mail_;
  int64_t messages_ = 0;
};

TEST(Placement, SlotsMoveUnderTheSlotRuleBetweenTwoRanks) {
  // 4 experts on 2 ranks of 3 slots. Every expert's parameters come from
  // its init stream; its m and v are set to values that name the expert, so
  // a slot's checksums say which expert's state it holds.
  ProgramDesc desc = moeProgram(3, kH, 2, {{0}, {1}, {0}, {1}});
  program::LoadedProgram program = load(desc);
  uint32_t w1Id = findBuffer(desc, "moe0.w1");
  const std::vector<plan::Placement> schedule = {
      // Replicate 0 and 3: rank 1's experts 1 and 3 shift up a slot.
      {2, 3, {{0, 1}, {1}, {0}, {1, 0}}},
      // Drop the replicas, swap the ranks' experts: rank 0's expert 3
      // shifts down a slot.
      {2, 3, {{1}, {0}, {1}, {0}}},
      // Experts 0 and 1 on both ranks: 4 transfers.
      {2, 3, {{0, 1}, {0, 1}, {0}, {1}}},
      // Back to the start without a transfer: slots shift only.
      {2, 3, {{0}, {1}, {0}, {1}}},
  };
  const std::vector<std::vector<int64_t>> localMoves = {
      {0, 2}, {1, 0}, {1, 0}, {1, 2}};
  ThreadWorld world(2);
  std::mutex mutex;
  std::map<int64_t, std::pair<uint64_t, uint64_t>> reference;
  auto rankMain = [&](int64_t rank) {
    cpu::CpuDevice device;
    ThreadWorld::Rank comm(world, rank);
    StatusOr<std::unique_ptr<Executor>> created =
        Executor::create(program, device, comm);
    ASSERT_TRUE(created.isOk()) << created.status().message();
    Executor &ex = **created;
    plan::SlotTable table = plan::buildSlotTable(ex.placement(0));
    const auto *buffers = program.program().buffers();
    for (uint32_t id = 0; id < ex.numBuffers(); ++id) {
      const fb::Buffer &b = *buffers->Get(id);
      if (b.moe_layer() != 0 ||
          (b.kind() != BufferKind::AdamM && b.kind() != BufferKind::AdamV))
        continue;
      const device::Operand &op = ex.buffer(id);
      int64_t perSlot = op.numElements() / 3;
      for (int64_t s = 0; s < 3; ++s)
        for (int64_t i = 0; i < perSlot; ++i)
          op.as<float>()[s * perSlot + i] =
              static_cast<float>(table.slotExpert[rank][s] * 1000 + i) +
              (b.kind() == BufferKind::AdamV ? 0.5f : 0.0f);
    }
    StatusOr<std::vector<executor::SlotChecksum>> sums = ex.slotChecksums(0);
    ASSERT_TRUE(sums.isOk());
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (const executor::SlotChecksum &sum : *sums)
        if (sum.expert >= 0)
          reference[sum.expert] = {sum.parameters, sum.optimizerState};
    }
    // Both ranks' references are in before anything moves.
    for (int wait = 0;; ++wait) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (reference.size() == 4)
          break;
      }
      ASSERT_LT(wait, 20000) << "rank " << rank << ": the other rank failed";
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    for (size_t step = 0; step < schedule.size(); ++step) {
      executor::MigrationStats stats;
      Status status = ex.setPlacement(0, schedule[step], &stats);
      ASSERT_TRUE(status.isOk()) << status.message();
      EXPECT_EQ(ex.placement(0), schedule[step]);
      EXPECT_EQ(stats.localMoves, localMoves[step][rank])
          << "re-plan " << step << " rank " << rank;
      EXPECT_EQ(stats.bytesReceived,
                stats.replicasReceived * ex.expertStateBytes(0));
      plan::SlotTable next = plan::buildSlotTable(schedule[step]);
      sums = ex.slotChecksums(0);
      ASSERT_TRUE(sums.isOk());
      for (int64_t s = 0; s < 3; ++s) {
        const executor::SlotChecksum &sum = (*sums)[s];
        EXPECT_EQ(sum.expert, next.slotExpert[rank][s]);
        if (sum.expert >= 0) {
          std::lock_guard<std::mutex> lock(mutex);
          EXPECT_EQ(sum.parameters, reference[sum.expert].first)
              << "re-plan " << step << " rank " << rank << " slot " << s;
          EXPECT_EQ(sum.optimizerState, reference[sum.expert].second)
              << "re-plan " << step << " rank " << rank << " slot " << s;
        } else {
          // Emptied slots are zeroed.
          const device::Operand &w1 = ex.buffer(w1Id);
          int64_t perSlot = w1.numElements() / 3;
          for (int64_t i = 0; i < perSlot; ++i)
            ASSERT_EQ(w1.as<float>()[s * perSlot + i], 0.0f);
        }
      }
    }
  };
  std::thread rank1(rankMain, 1);
  rankMain(0);
  rank1.join();
  // Each re-plan's new replicas travel once, from a holder.
  EXPECT_EQ(world.messages(), 2 + 2 + 4 + 0);
}

TEST(Placement, SlotMapOfAPlacement) {
  TestRun run;
  ASSERT_TRUE(run.executor);
  train::SlotMap fromProgram =
      train::slotMapOf(*run.program.program().moe_layers()->Get(0));
  train::SlotMap fromPlacement = train::slotMapOf(run.executor->placement(0));
  EXPECT_EQ(fromPlacement.table, fromProgram.table);
  EXPECT_EQ(fromPlacement.slotsPerDevice, 6);
  EXPECT_EQ(fromPlacement.numExperts, 4);

  plan::Placement two{2, 3, {{0, 1}, {1}, {0}, {1, 0}}};
  train::SlotMap map = train::slotMapOf(two);
  EXPECT_EQ(map.worldSize, 2);
  EXPECT_EQ(map.table, (std::vector<int32_t>{0, 2, 3, 0, 1, 3}));
}

} // namespace
