//===- RoutingTrace.h - routing traces for the simulator --------*- C++ -*-===//
//
// `flexmoe-run --trace-routing FILE` records, for every step and MoE layer,
// how many tokens each rank routed to each expert: JSON lines, one header
// line and then one line per (step, layer); docs/scheduling.md documents
// the format. The file is written to FILE.partial and renamed on close(),
// so a crashed run never leaves a truncated trace under the real name.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_SCHED_ROUTINGTRACE_H
#define FLEXMOE_RUNTIME_SCHED_ROUTINGTRACE_H

#include "runtime/support/Status.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace flexmoe::sched {

inline constexpr const char *kRoutingTraceFormat = "flexmoe-routing-trace";
inline constexpr int64_t kRoutingTraceVersion = 1;

struct TraceLayer {
  std::string name;
  int64_t numExperts = 0;
  int64_t topK = 0;
};

struct TraceHeader {
  std::string program; ///< the program's name
  int64_t worldSize = 1;
  int64_t tokensPerRank = 0; ///< tokens each rank routes per step
  std::vector<TraceLayer> layers;
};

class RoutingTraceWriter {
public:
  /// Opens FILE.partial and writes the header line; an error naming the
  /// path when it cannot.
  static StatusOr<std::unique_ptr<RoutingTraceWriter>>
  create(const std::string &path, const TraceHeader &header);
  ~RoutingTraceWriter(); ///< without close(): removes FILE.partial

  /// One record: counts[rank * E + e] of layer `layer` (an index into the
  /// header's layers) at 1-based step `step`.
  Status write(int64_t step, int64_t layer, std::span<const int64_t> counts);
  /// Flushes and renames FILE.partial to FILE.
  Status close();

private:
  RoutingTraceWriter() = default;
  std::string path_, partial_;
  TraceHeader header_;
  std::FILE *file_ = nullptr;
};

/// A whole trace read back (for the simulator and the tests), with every
/// line checked against the header.
struct RoutingTrace {
  TraceHeader header;
  struct Record {
    int64_t step = 0, layer = 0;
    std::vector<int64_t> counts;
  };
  std::vector<Record> records;
};
StatusOr<RoutingTrace> readRoutingTrace(const std::string &path);

} // namespace flexmoe::sched

#endif // FLEXMOE_RUNTIME_SCHED_ROUTINGTRACE_H
