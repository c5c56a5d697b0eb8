//===- PlacementControl.cpp - flexmoe-run's placement feedback loop -------===//

#include "PlacementControl.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

using namespace flexmoe;
using namespace flexmoe::run;
using Clock = std::chrono::steady_clock;

namespace {

/// Steps averaged on each side of a re-plan for its measured effect.
constexpr size_t kMeasuredSteps = 5;
/// Weight of a new step's measurement in the smoothed calibration.
constexpr double kCalibrationWeight = 0.3;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double meanOf(const std::deque<double> &values, size_t last) {
  size_t n = std::min(last, values.size());
  if (n == 0)
    return 0;
  return std::accumulate(values.end() - static_cast<std::ptrdiff_t>(n),
                         values.end(), 0.0) /
         static_cast<double>(n);
}

std::vector<int64_t> replicaCounts(const plan::Placement &placement) {
  std::vector<int64_t> counts;
  for (const std::vector<int64_t> &holders : placement.replicas)
    counts.push_back(static_cast<int64_t>(holders.size()));
  return counts;
}

std::string joined(const std::vector<int64_t> &values) {
  std::string text = "[";
  for (size_t i = 0; i < values.size(); ++i)
    text += (i ? "," : "") + std::to_string(values[i]);
  return text + "]";
}

std::string megabytes(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f MB", bytes / 1e6);
  return text;
}

} // namespace

std::vector<float> flexmoe::run::skewBias(SkewKind kind, double strength,
                                          int64_t period, int64_t numExperts,
                                          int64_t step) {
  if (kind == SkewKind::None || numExperts <= 0)
    return {};
  int64_t shift = period > 0 ? (step - 1) / period : 0;
  std::vector<float> bias(numExperts, 0.0f);
  for (int64_t e = 0; e < numExperts; ++e) {
    // The expert's rank in this step's ranking: expert `shift` is hottest.
    int64_t rank = ((e - shift) % numExperts + numExperts) % numExperts;
    if (kind == SkewKind::Zipf)
      bias[e] = static_cast<float>(-strength * std::log(rank + 1.0));
    else if (rank == 0)
      bias[e] = static_cast<float>(strength);
  }
  return bias;
}

std::string PlacementControl::layerNameOf(size_t layer) const {
  return executor_.program()
      .program()
      .moe_layers()
      ->Get(static_cast<uint32_t>(layer))
      ->name()
      ->str();
}

StatusOr<std::unique_ptr<PlacementControl>>
PlacementControl::create(const Options &options, executor::Executor &executor,
                         MetricsSink &sink, int64_t tokensPerRank) {
  std::unique_ptr<PlacementControl> control(
      new PlacementControl(options, executor, sink));
  const Options &o = control->o_;
  StatusOr<sched::PolicyKind> kind = sched::parsePolicyKind(o.placementPolicy);
  if (!kind)
    return kind.status();
  sched::PolicyOptions policyOptions;
  policyOptions.kind = *kind;
  policyOptions.rebalanceThreshold = o.rebalanceThreshold;
  policyOptions.maxSlotsPerDevice = o.maxSlots;
  policyOptions.expectedInterval = o.replanInterval;
  policyOptions.minGain = o.minGain;
  StatusOr<std::unique_ptr<sched::Policy>> policy =
      sched::makePolicy(policyOptions);
  if (!policy)
    return policy.status();
  control->policy_ = std::move(policy).value();

  const fb::Program &program = executor.program().program();
  device::Communicator &comm = executor.communicator();
  size_t numLayers = executor.numMoeLayers();
  sched::TraceHeader header;
  header.program = program.name() ? program.name()->str() : "";
  header.worldSize = comm.worldSize();
  header.tokensPerRank = tokensPerRank;
  for (size_t l = 0; l < numLayers; ++l) {
    const fb::MoeLayer &layer = *program.moe_layers()->Get(l);
    const plan::Placement &placement = executor.placement(l);
    if (o.maxSlots > placement.slotsPerDevice)
      return errorf("--max-slots ", o.maxSlots, " exceeds the ",
                    placement.slotsPerDevice,
                    " expert slots per rank the program was compiled with "
                    "(flexmoe-compile --slots-per-device)");
    control->base_.push_back(placement);
    control->monitors_.emplace_back(comm.worldSize(), placement.numExperts(),
                                    o.monitorWindow);
    sched::CostModel cost;
    cost.rowBytes = static_cast<double>(executor.allToAllRowBytes(l));
    cost.expertParamBytes =
        static_cast<double>(executor.expertParameterBytes(l));
    cost.expertStateBytes = static_cast<double>(executor.expertStateBytes(l));
    control->costs_.push_back(cost);
    header.layers.push_back({layer.name()->str(), layer.num_experts(),
                             static_cast<int64_t>(layer.top_k())});
  }
  control->totals_.resize(numLayers);

  bool writer = comm.rank() == 0;
  if (!o.traceRouting.empty() && writer) {
    StatusOr<std::unique_ptr<sched::RoutingTraceWriter>> trace =
        sched::RoutingTraceWriter::create(o.traceRouting, header);
    if (!trace)
      return trace.status();
    control->trace_ = std::move(trace).value();
  }
  if (!o.decisionLog.empty() && writer) {
    control->decisionLogPartial_ = o.decisionLog + ".partial";
    control->decisionLog_ =
        std::fopen(control->decisionLogPartial_.c_str(), "w");
    if (!control->decisionLog_)
      return errorf("cannot write the decision log '",
                    control->decisionLogPartial_, "'");
  }

  if (*kind != sched::PolicyKind::Static)
    for (size_t l = 0; l < numLayers; ++l) {
      const plan::Placement &placement = executor.placement(l);
      int64_t slots = o.maxSlots > 0 ? o.maxSlots : placement.slotsPerDevice;
      if (slots * placement.worldSize <= placement.numExperts())
        sink.print("warning: layer '" + header.layers[l].name + "' has " +
                   std::to_string(placement.numExperts()) + " experts in " +
                   std::to_string(slots * placement.worldSize) +
                   " slots: no slot is free for a replica; compile with a "
                   "larger --slots-per-device to let the " +
                   o.placementPolicy + " policy replicate experts");
    }
  return control;
}

PlacementControl::~PlacementControl() {
  if (decisionLog_) {
    std::fclose(decisionLog_);
    std::remove(decisionLogPartial_.c_str());
  }
}

std::string PlacementControl::describe() const {
  char line[256];
  std::string skew = skewName(o_.skew, o_.skewStrength);
  if (o_.skew != SkewKind::None && o_.skewPeriod > 0)
    skew += " rotating every " + std::to_string(o_.skewPeriod) + " steps";
  if (policy_->kind() == sched::PolicyKind::Static) {
    std::snprintf(line, sizeof line, "placement static; routing skew %s",
                  skew.c_str());
    return line;
  }
  std::snprintf(line, sizeof line,
                "placement %s: threshold %.2f, window %lld, slots %s, "
                "re-plan interval %g, min gain %g; routing skew %s",
                o_.placementPolicy.c_str(), o_.rebalanceThreshold,
                static_cast<long long>(o_.monitorWindow),
                o_.maxSlots > 0 ? std::to_string(o_.maxSlots).c_str() : "all",
                o_.replanInterval, o_.minGain, skew.c_str());
  return line;
}

Status PlacementControl::beforeStep(int64_t step) {
  if (o_.skew == SkewKind::None)
    return Status::ok();
  for (size_t l = 0; l < executor_.numMoeLayers(); ++l)
    FLEXMOE_RETURN_IF_ERROR(executor_.setRoutingBias(
        l, skewBias(o_.skew, o_.skewStrength, o_.skewPeriod,
                    executor_.placement(l).numExperts(), step)));
  return Status::ok();
}

Status PlacementControl::calibrate() {
  // Every rank's [expert ns, expert rows, all-to-all ns, all-to-all bytes]:
  // the decisions must agree, so the calibration uses everyone's numbers.
  const executor::StepTimings &t = executor_.timings();
  device::Communicator &comm = executor_.communicator();
  std::vector<int64_t> local = {
      static_cast<int64_t>(t.expertSeconds * 1e9), t.expertRows,
      static_cast<int64_t>(t.allToAllSeconds * 1e9), t.allToAllBytes};
  std::vector<int64_t> all(local.size() * comm.worldSize());
  FLEXMOE_RETURN_IF_ERROR(comm.allGather(local, all));
  double expertNs = 0, rows = 0, bandwidth = 0;
  for (int64_t r = 0; r < comm.worldSize(); ++r) {
    expertNs += static_cast<double>(all[r * 4]);
    rows += static_cast<double>(all[r * 4 + 1]);
    // The all-to-all time includes waiting for slower ranks; the rank that
    // waited least shows the link's speed.
    if (all[r * 4 + 2] > 0 && all[r * 4 + 3] > 0)
      bandwidth = std::max(bandwidth, static_cast<double>(all[r * 4 + 3]) /
                                          (all[r * 4 + 2] * 1e-9));
  }
  auto smooth = [&](double &value, double sample) {
    value = value > 0
                ? (1 - kCalibrationWeight) * value + kCalibrationWeight * sample
                : sample;
  };
  if (rows > 0 && expertNs > 0)
    smooth(secondsPerRow_, expertNs * 1e-9 / rows);
  if (bandwidth > 0)
    smooth(bytesPerSecond_, bandwidth);
  ++calibratedSteps_;
  for (sched::CostModel &cost : costs_) {
    if (secondsPerRow_ > 0)
      cost.secondsPerRow = secondsPerRow_;
    if (bytesPerSecond_ > 0)
      cost.bytesPerSecond = bytesPerSecond_;
  }
  return Status::ok();
}

StatusOr<std::vector<std::pair<uint64_t, uint64_t>>>
PlacementControl::expertChecksums(size_t layer, int64_t step,
                                  const char *when) {
  StatusOr<std::vector<executor::SlotChecksum>> local =
      executor_.slotChecksums(layer);
  if (!local)
    return local.status();
  const plan::Placement &placement = executor_.placement(layer);
  device::Communicator &comm = executor_.communicator();
  int64_t slots = placement.slotsPerDevice;
  if (static_cast<int64_t>(local->size()) != slots)
    return errorf("the executor reported ", local->size(),
                  " slot checksums for ", slots, " slots");
  std::vector<int64_t> mine(slots * 3), all(slots * 3 * comm.worldSize());
  for (int64_t s = 0; s < slots; ++s) {
    mine[s * 3] = (*local)[s].expert;
    mine[s * 3 + 1] = static_cast<int64_t>((*local)[s].parameters);
    mine[s * 3 + 2] = static_cast<int64_t>((*local)[s].optimizerState);
  }
  FLEXMOE_RETURN_IF_ERROR(comm.allGather(mine, all));
  std::string layerName = layerNameOf(layer);
  int64_t numExperts = placement.numExperts();
  std::vector<std::pair<uint64_t, uint64_t>> sums(numExperts, {0, 0});
  std::vector<std::pair<int64_t, int64_t>> firstHolder(numExperts, {-1, -1});
  for (int64_t r = 0; r < comm.worldSize(); ++r)
    for (int64_t s = 0; s < slots; ++s) {
      const int64_t *entry = &all[(r * slots + s) * 3];
      int64_t expert = entry[0];
      if (expert < 0)
        continue;
      if (expert >= numExperts)
        return errorf("rank ", r, " slot ", s, " of layer '", layerName,
                      "' claims expert ", expert, " of ", numExperts);
      std::pair<uint64_t, uint64_t> sum = {static_cast<uint64_t>(entry[1]),
                                           static_cast<uint64_t>(entry[2])};
      if (firstHolder[expert].first < 0) {
        firstHolder[expert] = {r, s};
        sums[expert] = sum;
      } else if (sums[expert] != sum) {
        return errorf(
            when, " step ", step, ": the replicas of expert ", expert,
            " of layer '", layerName, "' differ: rank ",
            firstHolder[expert].first, " slot ", firstHolder[expert].second,
            " and rank ", r, " slot ", s, " hold different ",
            sums[expert].first != sum.first ? "parameters" : "optimizer state");
      }
    }
  for (int64_t e = 0; e < numExperts; ++e)
    if (firstHolder[e].first < 0)
      return errorf(when, " step ", step, ": no rank holds expert ", e,
                    " of layer '", layerName, "'");
  return sums;
}

Status PlacementControl::checkReplicas(int64_t step, const char *when) {
  for (size_t l = 0; l < executor_.numMoeLayers(); ++l) {
    StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> sums =
        expertChecksums(l, step, when);
    if (!sums)
      return sums.status();
  }
  return Status::ok();
}

Status PlacementControl::decide(size_t layer, int64_t step) {
  const std::string layerName = layerNameOf(layer);
  plan::Placement current = executor_.placement(layer);
  sched::PolicyInput input;
  input.step = step;
  input.current = &current;
  input.base = &base_[layer];
  input.monitor = &monitors_[layer];
  input.cost = &costs_[layer];
  input.layerName = layerName;
  Clock::time_point start = Clock::now();
  StatusOr<sched::Decision> decision = policy_->decide(input);
  decideSeconds_ += secondsSince(start);
  ++decisions_;
  if (!decision)
    return decision.status();
  if (!decision->changed)
    return Status::ok();

  std::vector<std::pair<uint64_t, uint64_t>> before;
  if (o_.checkReplicas) {
    StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> sums =
        expertChecksums(layer, step, "before the migration after");
    if (!sums)
      return sums.status();
    before = std::move(sums).value();
  }
  executor::MigrationStats stats;
  FLEXMOE_RETURN_IF_ERROR(
      executor_.setPlacement(layer, decision->next, &stats));
  if (o_.checkReplicas) {
    StatusOr<std::vector<std::pair<uint64_t, uint64_t>>> after =
        expertChecksums(layer, step, "after the migration after");
    if (!after)
      return after.status();
    for (size_t e = 0; e < before.size(); ++e)
      if (before[e] != (*after)[e])
        return errorf("the migration after step ", step, " changed expert ", e,
                      " of layer '", layerName, "' (its ",
                      before[e].first != (*after)[e].first ? "parameters"
                                                           : "optimizer state",
                      " differ from before the move)");
  }
  // Bytes and time over all ranks: the slowest rank bounds the pause.
  double moved[2] = {static_cast<double>(stats.bytesReceived), stats.seconds};
  device::Communicator &comm = executor_.communicator();
  FLEXMOE_RETURN_IF_ERROR(
      comm.allReduceHost({&moved[0], 1}, device::ReduceOp::Sum));
  FLEXMOE_RETURN_IF_ERROR(
      comm.allReduceHost({&moved[1], 1}, device::ReduceOp::Mean));

  LayerTotals &totals = totals_[layer];
  ++totals.replans;
  totals.replicasAdded += stats.replicasAdded;
  totals.replicasRemoved += stats.replicasRemoved;
  totals.bytesMoved += static_cast<int64_t>(moved[0]);
  totals.migrationSeconds += moved[1];

  char line[512];
  std::snprintf(
      line, sizeof line,
      "re-plan after step %lld | %s | %s | replicas %s -> %s | moved %s "
      "in %.1f ms",
      static_cast<long long>(step), layerName.c_str(), decision->reason.c_str(),
      joined(decision->replicasBefore).c_str(),
      joined(decision->replicasAfter).c_str(), megabytes(moved[0]).c_str(),
      moved[1] * 1e3);
  stepLines_.push_back(line);

  PendingDecision pending;
  pending.step = step;
  pending.measuredBefore = meanOf(recentSteps_, kMeasuredSteps);
  pending.record = {{"step", step},
                    {"layer", layerName},
                    {"policy", o_.placementPolicy},
                    {"reason", decision->reason},
                    {"observed_balance", decision->observedBalance},
                    {"replicas_before", decision->replicasBefore},
                    {"replicas_after", decision->replicasAfter},
                    {"placement_after", decision->next.replicas},
                    {"predicted_before_ms", decision->before.total * 1e3},
                    {"predicted_after_ms", decision->after.total * 1e3},
                    {"predicted_balance_before", decision->before.balanceRatio},
                    {"predicted_balance_after", decision->after.balanceRatio},
                    {"predicted_terms_after_ms",
                     {{"compute", decision->after.compute * 1e3},
                      {"all_to_all", decision->after.allToAll * 1e3},
                      {"replica_sync", decision->after.replicaSync * 1e3},
                      {"migration", decision->after.migration * 1e3}}},
                    {"migration_bytes", static_cast<int64_t>(moved[0])},
                    {"migration_ms", moved[1] * 1e3},
                    {"replicas_added", stats.replicasAdded},
                    {"replicas_removed", stats.replicasRemoved}};
  pending_.push_back(std::move(pending));
  return Status::ok();
}

void PlacementControl::finishDecisions(bool final) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (!final && it->after.size() < kMeasuredSteps) {
      ++it;
      continue;
    }
    double after =
        it->after.empty()
            ? 0
            : std::accumulate(it->after.begin(), it->after.end(), 0.0) /
                  static_cast<double>(it->after.size());
    it->record["measured_before_ms"] = it->measuredBefore * 1e3;
    it->record["measured_after_ms"] = after * 1e3;
    it->record["measured_steps"] = it->after.size();
    if (decisionLog_) {
      std::string text = it->record.dump() + "\n";
      std::fputs(text.c_str(), decisionLog_);
    }
    if (!it->after.empty()) {
      char line[256];
      std::snprintf(line, sizeof line,
                    "re-plan after step %lld | %s | measured %.1f -> %.1f "
                    "ms/step (%zu steps each side)",
                    static_cast<long long>(it->step),
                    it->record["layer"].get<std::string>().c_str(),
                    it->measuredBefore * 1e3, after * 1e3, it->after.size());
      stepLines_.push_back(line);
    }
    it = pending_.erase(it);
  }
}

Status PlacementControl::afterStep(int64_t step, double stepSeconds) {
  for (PendingDecision &pending : pending_)
    if (pending.after.size() < kMeasuredSteps)
      pending.after.push_back(stepSeconds);
  finishDecisions(/*final=*/false);
  recentSteps_.push_back(stepSeconds);
  if (recentSteps_.size() > kMeasuredSteps)
    recentSteps_.pop_front();
  stepSecondsSum_ += stepSeconds;
  ++stepsSeen_;
  planSeconds_ += executor_.timings().planSeconds;

  for (size_t l = 0; l < executor_.numMoeLayers(); ++l) {
    std::span<const int64_t> counts = executor_.routingCounts(l);
    FLEXMOE_RETURN_IF_ERROR(monitors_[l].record(step, counts));
    if (trace_)
      FLEXMOE_RETURN_IF_ERROR(
          trace_->write(step, static_cast<int64_t>(l), counts));
    const executor::LayerStats &stats = executor_.layerStats(l);
    LayerTotals &totals = totals_[l];
    if (totals.balanceSteps == 0)
      totals.firstBalance = stats.balanceRatio;
    totals.balanceSum += stats.balanceRatio;
    ++totals.balanceSteps;
    totals.droppedTokens += stats.droppedTokens;
  }
  if (o_.checkReplicas)
    FLEXMOE_RETURN_IF_ERROR(checkReplicas(step, "after"));
  if (policy_->kind() == sched::PolicyKind::Static)
    return Status::ok();
  FLEXMOE_RETURN_IF_ERROR(calibrate());
  for (size_t l = 0; l < executor_.numMoeLayers(); ++l) {
    // flexmoe re-plans from a full window; shadow reacts to the last step.
    if (policy_->kind() == sched::PolicyKind::FlexMoE &&
        monitors_[l].samples() < monitors_[l].window())
      continue;
    FLEXMOE_RETURN_IF_ERROR(decide(l, step));
  }
  return Status::ok();
}

Status PlacementControl::finish() {
  finishDecisions(/*final=*/true);
  flushLog();
  Status status = Status::ok();
  if (trace_)
    status = trace_->close();
  if (decisionLog_) {
    bool failed = std::ferror(decisionLog_) != 0;
    failed |= std::fclose(decisionLog_) != 0;
    decisionLog_ = nullptr;
    std::error_code error;
    if (!failed)
      std::filesystem::rename(decisionLogPartial_, o_.decisionLog, error);
    if (failed || error) {
      std::remove(decisionLogPartial_.c_str());
      if (status.isOk())
        status = errorf("cannot write the decision log '", o_.decisionLog, "'",
                        error ? ": " + error.message() : std::string());
    }
  }

  char line[512];
  double meanStep = stepsSeen_ ? stepSecondsSum_ / stepsSeen_ : 0;
  for (size_t l = 0; l < totals_.size(); ++l) {
    const LayerTotals &t = totals_[l];
    std::string name = layerNameOf(l);
    std::snprintf(line, sizeof line,
                  "  placement %s (%s): %lld re-plan(s), +%lld/-%lld "
                  "replicas, %s moved in %.1f ms; balance ratio %.2f mean "
                  "(%.2f at the first step); replicas now %s",
                  name.c_str(), o_.placementPolicy.c_str(),
                  static_cast<long long>(t.replans),
                  static_cast<long long>(t.replicasAdded),
                  static_cast<long long>(t.replicasRemoved),
                  megabytes(static_cast<double>(t.bytesMoved)).c_str(),
                  t.migrationSeconds * 1e3,
                  t.balanceSteps ? t.balanceSum / t.balanceSteps : 1.0,
                  t.firstBalance,
                  joined(replicaCounts(executor_.placement(l))).c_str());
    sink_.print(line);
    if (t.droppedTokens > 0) {
      std::snprintf(line, sizeof line,
                    "  dropped %s: %lld token copies over the capacity",
                    name.c_str(), static_cast<long long>(t.droppedTokens));
      sink_.print(line);
    }
  }
  if (stepsSeen_ > 0) {
    std::snprintf(
        line, sizeof line,
        "  re-planning: %.3f ms per policy decision (%lld), %.3f ms/step "
        "of dispatch planning; steps took %.1f ms (%.2f%% of it)",
        decisions_ ? decideSeconds_ * 1e3 / decisions_ : 0.0,
        static_cast<long long>(decisions_), planSeconds_ * 1e3 / stepsSeen_,
        meanStep * 1e3,
        meanStep > 0 ? 100.0 *
                           (planSeconds_ / stepsSeen_ +
                            (decisions_ ? decideSeconds_ / stepsSeen_ : 0)) /
                           meanStep
                     : 0.0);
    sink_.print(line);
  }
  return status;
}

void PlacementControl::flushLog() {
  for (const std::string &line : stepLines_)
    sink_.print(line);
  stepLines_.clear();
}

nlohmann::json PlacementControl::placementsJson() const {
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < executor_.numMoeLayers(); ++l)
    layers.push_back(
        {{"layer", layerNameOf(l)},
         {"world_size", executor_.placement(l).worldSize},
         {"slots_per_device", executor_.placement(l).slotsPerDevice},
         {"replicas", executor_.placement(l).replicas}});
  return layers;
}

Status PlacementControl::restorePlacements(const nlohmann::json &saved) {
  const auto *layers = executor_.program().program().moe_layers();
  size_t numLayers = executor_.numMoeLayers();
  if (!saved.is_array() || saved.size() != numLayers)
    return errorf("the checkpoint records placements of ",
                  saved.is_array() ? saved.size() : 0,
                  " MoE layer(s), the "
                  "program has ",
                  numLayers);
  for (size_t l = 0; l < numLayers; ++l) {
    std::string name = layers->Get(l)->name()->str();
    plan::Placement next = executor_.placement(l);
    // A placement only means something at its world size and slot count: a
    // resume on another number of ranks starts from the program's.
    if (!saved[l].is_object() ||
        saved[l].value("world_size", int64_t{-1}) != next.worldSize ||
        saved[l].value("slots_per_device", int64_t{-1}) !=
            next.slotsPerDevice) {
      sink_.print("placement of layer '" + name +
                  "': the checkpoint's is for another world size or slot "
                  "count; starting from the program's");
      continue;
    }
    try {
      if (saved[l].at("layer").get<std::string>() != name)
        return errorf("the checkpoint's placement ", l, " is of layer '",
                      saved[l].at("layer").get<std::string>(),
                      "', the program's layer is '", name, "'");
      next.replicas =
          saved[l].at("replicas").get<std::vector<std::vector<int64_t>>>();
    } catch (const std::exception &e) {
      return errorf("the checkpoint's placement of layer '", name,
                    "' is malformed: ", e.what());
    }
    if (next == executor_.placement(l))
      continue;
    Status moved = executor_.setPlacement(l, next);
    if (!moved.isOk())
      return std::move(moved).withContext(
          "restoring the checkpoint's placement of layer '" + name + "'");
  }
  return Status::ok();
}
