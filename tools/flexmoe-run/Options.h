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
  double lossScale = 1.0;
  uint64_t seed = 0;
  int64_t evalEvery = 0; ///< 0: steps / 5
  int64_t evalBatches = 16;
  int64_t logEvery = 1;
  std::string metrics;
  std::string checkpointDir;
  int64_t checkpointEvery = 0; ///< 0: only at the end
  std::string resume;
  Progress progress = Progress::Auto;

  /// The flags the user gave (by name, without dashes): on a resume, the
  /// others come from the checkpoint.
  std::set<std::string> given;
};

/// The usage text of --help.
std::string usage();

/// Parses argv into `options`. `--help` sets `wantsHelp`.
Status parseOptions(int argc, char **argv, Options &options, bool &wantsHelp);

const char *scheduleName(Schedule schedule);

} // namespace flexmoe::run

#endif // FLEXMOE_TOOLS_FLEXMOE_RUN_OPTIONS_H
