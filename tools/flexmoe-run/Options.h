//===- Options.h - flexmoe-run's command line -------------------*- C++ -*-===//
//
// Every flag of flexmoe-run, its default and its check. Parsing never exits:
// it returns a Status naming the flag and the valid values, and main prints
// it.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TOOLS_FLEXMOE_RUN_OPTIONS_H
#define FLEXMOE_TOOLS_FLEXMOE_RUN_OPTIONS_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <set>
#include <string>

namespace flexmoe::run {

enum class Schedule { Cosine, Linear, Constant };
enum class Progress { Auto, Always, Never };
/// Synthetic routing skew (a test and benchmark load generator): a bias on
/// the gate's logits, by each expert's rank in a ranking that rotates by
/// one expert every skewPeriod steps.
enum class SkewKind { None, Zipf, Hotspot };

struct Options {
  std::string program;
  /// Empty: the built-in corpus.
  std::string data;
  std::string dataFormat = "auto";
  double evalFraction = 0.05;
  int64_t steps = 300;
  /// Stop after this step (0 = at --steps) with a checkpoint; the schedule
  /// stays that of --steps, so a resume continues the same run.
  int64_t stopAt = 0;
  /// Global batch in sequences; 0 = the program's. A multiple of the
  /// program's batch accumulates gradients over micro-batches.
  int64_t batch = 0;
  /// Peak learning rate; 0 = the one the program was compiled with.
  double lr = 0;
  /// The schedule's floor; < 0 = lr / 10.
  double minLr = -1;
  int64_t warmup = -1; ///< < 0: min(100, steps / 10)
  Schedule schedule = Schedule::Cosine;
  double clipGrad = 1.0;
  /// The static loss scale; with dynamicLossScale the initial one.
  double lossScale = 1.0;
  bool dynamicLossScale = false;
  /// Overflow-free steps that double a dynamic loss scale.
  int64_t lossScaleWindow = 2000;
  /// "cpu" or "cuda"; cudaIndex < 0: the rank's local index modulo the
  /// node's GPUs.
  std::string device = "cpu";
  int64_t cudaIndex = -1;
  /// "fp32" or "bf16" (CUDA only).
  std::string precision = "fp32";
  /// CUDA's deterministic mode (the CPU always is).
  bool deterministic = false;
  uint64_t seed = 0;
  int64_t evalEvery = 0; ///< 0: steps / 5
  int64_t evalBatches = 16;
  int64_t logEvery = 1;
  std::string metrics;
  std::string checkpointDir;
  int64_t checkpointEvery = 0; ///< 0: only at the end
  std::string resume;
  Progress progress = Progress::Auto;

  // Placement (docs/scheduling.md).
  std::string placementPolicy = "static";
  double rebalanceThreshold = 1.25;
  int64_t monitorWindow = 10;
  /// Slots a rank may fill; 0 = the program's slots per device.
  int64_t maxSlots = 0;
  /// Steps a new placement is expected to last (migration amortisation).
  double replanInterval = 50;
  double minGain = 0.02;
  std::string traceRouting;
  std::string decisionLog;
  bool checkReplicas = false;
  /// Overlap the dense-gradient all-reduces with the backward pass.
  bool overlap = true;
  SkewKind skew = SkewKind::None;
  /// Zipf exponent, or the hot spot's logit boost.
  double skewStrength = 0;
  int64_t skewPeriod = 0; ///< 0: the skew never moves

  /// The flags the user gave (by name, without dashes): on a resume, the
  /// others come from the checkpoint.
  std::set<std::string> given;
};

/// The usage text of --help.
std::string usage();

/// Parses argv into `options`. `--help` sets `wantsHelp`.
Status parseOptions(int argc, char **argv, Options &options, bool &wantsHelp);

const char *scheduleName(Schedule schedule);
/// "none", "zipf:1.5", "hotspot:3".
std::string skewName(SkewKind kind, double strength);

} // namespace flexmoe::run

#endif // FLEXMOE_TOOLS_FLEXMOE_RUN_OPTIONS_H
