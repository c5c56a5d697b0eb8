//===- Metrics.h - flexmoe-run's log lines, metrics file, progress -*- C++ -*-//
//
// One record per logged step or evaluation goes to three places: a log line
// on stdout, a row of the metrics file (CSV or JSON lines, chosen by its
// extension), and, on a terminal, the progress line on stderr, which is
// cleared before each log line and redrawn after it.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TOOLS_FLEXMOE_RUN_METRICS_H
#define FLEXMOE_TOOLS_FLEXMOE_RUN_METRICS_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace flexmoe::run {

struct LayerRecord {
  std::string name;
  double balance = 1.0, expertBalance = 1.0;
  int64_t dropped = 0;
  /// Bytes the layer's all-to-alls moved between ranks this step (the
  /// dispatch and combine, forward and backward), summed over the ranks.
  int64_t allToAllBytes = 0;
};

struct StepRecord {
  int64_t step = 0, totalSteps = 0;
  double loss = 0, lr = 0, gradNorm = 0;
  bool skipped = false;
  double tokensPerSecond = 0, stepMs = 0, elapsedSeconds = 0;
  std::vector<LayerRecord> layers;
};

struct EvalRecord {
  int64_t step = 0;
  double loss = 0, unigramEntropy = 0;
  int64_t batches = 0;
  double elapsedSeconds = 0;
};

class MetricsSink {
public:
  /// `metricsPath` empty: no file. `append`: a resumed run adds to the file
  /// (a new file still gets its header). `layerNames` fix the CSV columns.
  /// `enabled` false: nothing is printed at all (ranks other than 0).
  Status open(const std::string &metricsPath, bool append,
              const std::vector<std::string> &layerNames, bool progress,
              bool enabled = true);
  ~MetricsSink();

  void logStep(const StepRecord &record, bool printLine);
  void logEval(const EvalRecord &record);
  /// A free-form line on stdout (clears and redraws the progress line).
  void print(const std::string &line);
  /// Redraws the progress line for `record` (when progress is on).
  void progress(const StepRecord &record, double etaSeconds);
  /// Ends the progress line and flushes the file; errors of the file's
  /// writes surface here.
  Status close();

private:
  void clearProgress();
  void writeRow(const std::string &row);

  std::FILE *file_ = nullptr;
  std::string path_;
  bool csv_ = false;
  bool progress_ = false;
  bool progressShown_ = false;
  bool writeFailed_ = false;
  bool enabled_ = true;
  std::vector<std::string> layerNames_;
};

/// "1.2k", "34.5M".
std::string humanCount(double value);
/// "1m12s", "45s", "2h03m".
std::string humanDuration(double seconds);

} // namespace flexmoe::run

#endif // FLEXMOE_TOOLS_FLEXMOE_RUN_METRICS_H
