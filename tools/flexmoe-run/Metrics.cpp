//===- Metrics.cpp - flexmoe-run's log lines, metrics file, progress ------===//

#include "Metrics.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

using namespace flexmoe;
using namespace flexmoe::run;

std::string flexmoe::run::humanCount(double value) {
  char buffer[32];
  if (value >= 1e9)
    std::snprintf(buffer, sizeof buffer, "%.2fG", value / 1e9);
  else if (value >= 1e6)
    std::snprintf(buffer, sizeof buffer, "%.2fM", value / 1e6);
  else if (value >= 1e4)
    std::snprintf(buffer, sizeof buffer, "%.1fk", value / 1e3);
  else
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
  return buffer;
}

std::string flexmoe::run::humanDuration(double seconds) {
  char buffer[32];
  int64_t s = static_cast<int64_t>(std::llround(std::max(0.0, seconds)));
  if (s >= 3600)
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm",
                  static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds",
                  static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buffer, sizeof buffer, "%llds", static_cast<long long>(s));
  return buffer;
}

Status MetricsSink::open(const std::string &metricsPath, bool append,
                         const std::vector<std::string> &layerNames,
                         bool progress, bool enabled) {
  enabled_ = enabled;
  progress_ = progress && enabled;
  layerNames_ = layerNames;
  if (metricsPath.empty())
    return Status::ok();
  path_ = metricsPath;
  csv_ = metricsPath.ends_with(".csv");
  std::error_code error;
  bool exists = std::filesystem::exists(metricsPath, error) &&
                std::filesystem::file_size(metricsPath, error) > 0;
  file_ = std::fopen(metricsPath.c_str(), append ? "a" : "w");
  if (!file_)
    return errorf("cannot write the metrics file '", metricsPath,
                  "': ", std::strerror(errno));
  if (csv_ && !(append && exists)) {
    std::string header = "kind,step,loss,eval_loss,lr,grad_norm,skipped,"
                         "tokens_per_s,step_ms,elapsed_s";
    for (const std::string &name : layerNames_)
      header += ",balance." + name + ",expert_balance." + name + ",dropped." +
                name + ",a2a_bytes." + name;
    writeRow(header);
  }
  return Status::ok();
}

MetricsSink::~MetricsSink() {
  if (file_)
    std::fclose(file_);
}

void MetricsSink::writeRow(const std::string &row) {
  if (!file_)
    return;
  if (std::fputs(row.c_str(), file_) < 0 || std::fputc('\n', file_) == EOF)
    writeFailed_ = true;
  // A crash or Ctrl-C loses at most the line being written.
  std::fflush(file_);
}

void MetricsSink::clearProgress() {
  if (progressShown_) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    progressShown_ = false;
  }
}

void MetricsSink::print(const std::string &line) {
  if (!enabled_)
    return;
  clearProgress();
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void MetricsSink::logStep(const StepRecord &r, bool printLine) {
  if (printLine && enabled_) {
    char head[256];
    std::snprintf(head, sizeof head,
                  "step %lld/%lld | loss %.4f | lr %.2e | grad-norm %.3f%s | "
                  "%s tok/s | %.1f ms",
                  static_cast<long long>(r.step),
                  static_cast<long long>(r.totalSteps), r.loss, r.lr,
                  r.gradNorm, r.skipped ? " (skipped)" : "",
                  humanCount(r.tokensPerSecond).c_str(), r.stepMs);
    std::string line = head;
    if (!r.layers.empty()) {
      line += " | balance";
      int64_t dropped = 0;
      for (size_t i = 0; i < r.layers.size(); ++i) {
        char value[32];
        std::snprintf(value, sizeof value, "%s%.2f (experts %.2f)",
                      i ? "," : " ", r.layers[i].balance,
                      r.layers[i].expertBalance);
        line += value;
        dropped += r.layers[i].dropped;
      }
      line += " | dropped " + std::to_string(dropped);
    }
    print(line);
  }
  if (!file_)
    return;
  if (csv_) {
    char row[256];
    std::snprintf(
        row, sizeof row, "train,%lld,%.6f,,%.6e,%.6f,%d,%.1f,%.3f,%.3f",
        static_cast<long long>(r.step), r.loss, r.lr, r.gradNorm,
        r.skipped ? 1 : 0, r.tokensPerSecond, r.stepMs, r.elapsedSeconds);
    std::string line = row;
    for (const LayerRecord &layer : r.layers)
      line += "," + std::to_string(layer.balance) + "," +
              std::to_string(layer.expertBalance) + "," +
              std::to_string(layer.dropped) + "," +
              std::to_string(layer.allToAllBytes);
    writeRow(line);
    return;
  }
  nlohmann::json row = {{"kind", "train"},
                        {"step", r.step},
                        {"loss", r.loss},
                        {"lr", r.lr},
                        {"grad_norm", r.gradNorm},
                        {"skipped", r.skipped},
                        {"tokens_per_s", r.tokensPerSecond},
                        {"step_ms", r.stepMs},
                        {"elapsed_s", r.elapsedSeconds}};
  nlohmann::json layers = nlohmann::json::object();
  for (const LayerRecord &layer : r.layers)
    layers[layer.name] = {{"balance", layer.balance},
                          {"expert_balance", layer.expertBalance},
                          {"dropped", layer.dropped},
                          {"a2a_bytes", layer.allToAllBytes}};
  row["layers"] = layers;
  writeRow(row.dump());
}

void MetricsSink::logEval(const EvalRecord &r) {
  char line[256];
  std::snprintf(line, sizeof line,
                "eval step %lld | loss %.4f | ppl %.2f | unigram entropy "
                "%.4f | %lld batches",
                static_cast<long long>(r.step), r.loss, std::exp(r.loss),
                r.unigramEntropy, static_cast<long long>(r.batches));
  print(line);
  if (!file_)
    return;
  if (csv_) {
    char row[128];
    std::snprintf(row, sizeof row, "eval,%lld,,%.6f,,,,,,%.3f",
                  static_cast<long long>(r.step), r.loss, r.elapsedSeconds);
    std::string text = row;
    for (size_t i = 0; i < layerNames_.size(); ++i)
      text += ",,,,";
    writeRow(text);
    return;
  }
  writeRow(nlohmann::json{{"kind", "eval"},
                          {"step", r.step},
                          {"eval_loss", r.loss},
                          {"unigram_entropy", r.unigramEntropy},
                          {"batches", r.batches},
                          {"elapsed_s", r.elapsedSeconds}}
               .dump());
}

void MetricsSink::progress(const StepRecord &r, double etaSeconds) {
  if (!progress_)
    return;
  constexpr int kWidth = 24;
  double fraction =
      r.totalSteps > 0 ? static_cast<double>(r.step) / r.totalSteps : 1.0;
  int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr,
               "\r\033[K[%s] %lld/%lld %3.0f%% | loss %.4f | %s tok/s "
               "| ETA %s",
               bar.c_str(), static_cast<long long>(r.step),
               static_cast<long long>(r.totalSteps), 100 * fraction, r.loss,
               humanCount(r.tokensPerSecond).c_str(),
               humanDuration(etaSeconds).c_str());
  std::fflush(stderr);
  progressShown_ = true;
}

Status MetricsSink::close() {
  clearProgress();
  if (file_) {
    bool failed = std::fclose(file_) != 0 || writeFailed_;
    file_ = nullptr;
    if (failed)
      return errorf("writing the metrics file '", path_, "' failed");
  }
  return Status::ok();
}
