//===- PlacementControl.h - flexmoe-run's placement feedback loop -*- C++ -*-//
//
// The run-time half of DESIGN.md's scheduling module, between two steps:
// feed every MoE layer's routing counts to its monitor (and the routing
// trace), calibrate the cost model from the executor's measured timings,
// ask the policy for each layer, migrate the experts of a layer whose
// placement changes, and log every decision with its predicted and its
// measured effect. Every rank runs the same decisions from the same
// all-gathered numbers, so no decision is ever broadcast.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TOOLS_FLEXMOE_RUN_PLACEMENTCONTROL_H
#define FLEXMOE_TOOLS_FLEXMOE_RUN_PLACEMENTCONTROL_H

#include "Metrics.h"
#include "Options.h"

#include "runtime/executor/Executor.h"
#include "runtime/sched/Policy.h"
#include "runtime/sched/RoutingTrace.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace flexmoe::run {

/// The gate-logit bias of the synthetic skew at 1-based step `step`
/// (empty for SkewKind::None).
std::vector<float> skewBias(SkewKind kind, double strength, int64_t period,
                            int64_t numExperts, int64_t step);

class PlacementControl {
public:
  /// Checks the options against the program (--max-slots within its slots)
  /// and opens the trace and decision log. `tokensPerRank` is what each
  /// rank routes per step (for the trace header).
  static StatusOr<std::unique_ptr<PlacementControl>>
  create(const Options &options, executor::Executor &executor,
         MetricsSink &sink, int64_t tokensPerRank);
  ~PlacementControl();

  /// One line for the run's header: the policy and its settings.
  std::string describe() const;

  /// Before step `step`: sets this step's synthetic skew.
  Status beforeStep(int64_t step);
  /// After step `step` took `stepSeconds`: monitor, trace, checks, policy,
  /// migration, decision log. Collective.
  Status afterStep(int64_t step, double stepSeconds);
  /// Prints the lines afterStep left for the log (after the step's own).
  void flushLog();
  /// Closes the trace and the decision log and prints the summary.
  Status finish();

  /// Every layer's current placement, for a checkpoint's trainer state.
  nlohmann::json placementsJson() const;
  /// Re-applies the placements a checkpoint recorded (collective).
  Status restorePlacements(const nlohmann::json &saved);

private:
  PlacementControl(const Options &options, executor::Executor &executor,
                   MetricsSink &sink)
      : o_(options), executor_(executor), sink_(sink) {}

  std::string layerNameOf(size_t layer) const;
  Status calibrate();
  Status checkReplicas(int64_t step, const char *when);
  /// Every expert's (parameters, optimizer state) checksum pair of layer
  /// `layer`, gathered from all ranks; experts no rank holds are absent.
  StatusOr<std::vector<std::pair<uint64_t, uint64_t>>>
  expertChecksums(size_t layer, int64_t step, const char *when);
  Status decide(size_t layer, int64_t step);
  void finishDecisions(bool final);

  Options o_;
  executor::Executor &executor_;
  MetricsSink &sink_;
  std::unique_ptr<sched::Policy> policy_;
  std::vector<plan::Placement> base_;
  std::vector<sched::RoutingMonitor> monitors_;
  std::vector<sched::CostModel> costs_;
  std::unique_ptr<sched::RoutingTraceWriter> trace_;
  std::FILE *decisionLog_ = nullptr;
  std::string decisionLogPartial_;

  /// Calibration, smoothed over steps: expert compute seconds per row and
  /// all-to-all bytes per second (agreed over the ranks).
  double secondsPerRow_ = 0, bytesPerSecond_ = 0;
  int64_t calibratedSteps_ = 0;

  /// Step times, newest last (for the measured effect of a decision).
  std::deque<double> recentSteps_;
  double stepSecondsSum_ = 0;
  int64_t stepsSeen_ = 0;

  struct PendingDecision {
    int64_t step = 0;
    nlohmann::json record;
    double measuredBefore = 0;
    std::vector<double> after;
  };
  std::vector<PendingDecision> pending_;
  std::vector<std::string> stepLines_;

  // The summary.
  struct LayerTotals {
    int64_t replans = 0, replicasAdded = 0, replicasRemoved = 0;
    int64_t bytesMoved = 0;
    double migrationSeconds = 0;
    double balanceSum = 0, firstBalance = 0;
    int64_t balanceSteps = 0;
    int64_t droppedTokens = 0;
  };
  std::vector<LayerTotals> totals_;
  double decideSeconds_ = 0;
  int64_t decisions_ = 0;
  double planSeconds_ = 0;
};

} // namespace flexmoe::run

#endif // FLEXMOE_TOOLS_FLEXMOE_RUN_PLACEMENTCONTROL_H
