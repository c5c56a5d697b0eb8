//===- sched_replan.cpp - time of one placement decision ------------------===//
//
// How long the shadow and flexmoe policies take to decide for one MoE layer
// (a re-plan runs at a step boundary on every rank, so it must stay far
// below a step). For E experts on W devices with twice the slots plain
// expert parallelism needs, every rank routes a Zipf(1.2) split of 4096
// tokens; each policy decides from plain expert parallelism (the most work:
// flexmoe's greedy runs to the end) and, for flexmoe, again from its own
// decision (the common no-change case once balanced).
//
//   build-runtime/bin/sched_replan [--iters N] [--csv FILE] [--reasons]
//
// The table gives the median time per decision over N decisions (default
// 200) with the balance ratio before and after and the replicas copied;
// --reasons also prints each decision's log line.
//
//===----------------------------------------------------------------------===//

#include "runtime/sched/Policy.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace flexmoe;
using namespace flexmoe::sched;

namespace {

std::vector<int64_t> zipfCounts(int64_t W, int64_t E, int64_t tokens,
                                double s) {
  std::vector<double> weight(E);
  double sum = 0;
  for (int64_t e = 0; e < E; ++e)
    sum += weight[e] = 1.0 / std::pow(static_cast<double>(e + 1), s);
  std::vector<int64_t> counts(W * E);
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e)
      counts[src * E + e] =
          std::llround(static_cast<double>(tokens) * weight[e] / sum);
  return counts;
}

/// A GPT-MoE-small-like expert: d_model 512, d_ff 2048, fp32; an H100-ish
/// compute rate and a 25 GB/s network.
CostModel benchModel() {
  CostModel model;
  model.secondsPerRow = 2.0 * 3 * 2 * 512 * 2048 / 400e12;
  model.rowBytes = 512 * 4;
  model.bytesPerSecond = 25e9;
  model.latencySeconds = 10e-6;
  model.expertParamBytes = 2.0 * 512 * 2048 * 4;
  model.expertStateBytes = 4 * model.expertParamBytes;
  return model;
}

struct Row {
  int64_t E, W, S;
  std::string policy, from;
  double medianUs;
  double before, after;
  int64_t added;
  bool changed;
  std::string reason;
};

int usage(const char *argv0) {
  std::fprintf(stderr, "usage: %s [--iters N] [--csv FILE] [--reasons]\n",
               argv0);
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  int64_t iters = 200;
  const char *csvPath = nullptr;
  bool reasons = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) {
      char *end = nullptr;
      iters = std::strtoll(argv[++i], &end, 10);
      if (*end || iters < 1) {
        std::fprintf(stderr, "sched_replan: --iters needs a positive "
                             "integer\n");
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--csv") && i + 1 < argc) {
      csvPath = argv[++i];
    } else if (!std::strcmp(argv[i], "--reasons")) {
      reasons = true;
    } else {
      return usage(argv[0]);
    }
  }

  CostModel cost = benchModel();
  std::vector<Row> rows;
  for (int64_t E : {8, 64}) {
    for (int64_t W : {2, 4, 16}) {
      const int64_t S = 2 * ((E + W - 1) / W);
      plan::Placement base = plan::roundRobinPlacement(E, W, S);
      std::vector<int64_t> counts = zipfCounts(W, E, 4096, 1.2);
      RoutingMonitor monitor(W, E, 8);
      for (int64_t step = 1; step <= 8; ++step)
        if (Status status = monitor.record(step, counts); !status) {
          std::fprintf(stderr, "sched_replan: %s\n", status.message().c_str());
          return 1;
        }
      for (PolicyKind kind : {PolicyKind::Shadow, PolicyKind::FlexMoE}) {
        PolicyOptions options;
        options.kind = kind;
        StatusOr<std::unique_ptr<Policy>> policy = makePolicy(options);
        if (!policy) {
          std::fprintf(stderr, "sched_replan: %s\n",
                       policy.status().message().c_str());
          return 1;
        }
        plan::Placement current = base;
        for (const char *from : {"expert-parallel", "own decision"}) {
          PolicyInput input{8, &current, &base, &monitor, &cost, "bench"};
          std::vector<double> us;
          us.reserve(iters);
          StatusOr<Decision> decision = Status::error("not run");
          for (int64_t i = 0; i < iters; ++i) {
            auto start = std::chrono::steady_clock::now();
            decision = (*policy)->decide(input);
            auto stop = std::chrono::steady_clock::now();
            if (!decision) {
              std::fprintf(stderr, "sched_replan: %s\n",
                           decision.status().message().c_str());
              return 1;
            }
            us.push_back(std::chrono::duration<double, std::micro>(stop - start)
                             .count());
          }
          std::sort(us.begin(), us.end());
          rows.push_back({E, W, S, std::string(policyName(kind)), from,
                          us[us.size() / 2], decision->observedBalance,
                          decision->after.balanceRatio,
                          placementDelta(current, decision->next).added,
                          decision->changed, decision->reason});
          if (kind != PolicyKind::FlexMoE)
            break; // shadow starts from the base either way
          current = decision->next;
        }
      }
    }
  }

  std::printf("Placement decision time (median of %lld), Zipf(1.2) routing, "
              "slots = 2 x ceil(E/W)\n\n",
              static_cast<long long>(iters));
  std::printf("%4s %4s %4s  %-8s %-16s %12s %9s %9s %7s\n", "E", "W", "S",
              "policy", "from", "us/decision", "balance", "after", "copied");
  for (const Row &r : rows)
    std::printf("%4lld %4lld %4lld  %-8s %-16s %12.1f %9.2f %9.2f %7lld%s\n",
                static_cast<long long>(r.E), static_cast<long long>(r.W),
                static_cast<long long>(r.S), r.policy.c_str(), r.from.c_str(),
                r.medianUs, r.before, r.after, static_cast<long long>(r.added),
                r.changed ? "" : "  (no change)");
  if (reasons) {
    std::printf("\n");
    for (const Row &r : rows)
      std::printf("E=%lld W=%lld %s from %s: %s\n", static_cast<long long>(r.E),
                  static_cast<long long>(r.W), r.policy.c_str(), r.from.c_str(),
                  r.reason.c_str());
  }
  if (csvPath) {
    std::FILE *csv = std::fopen(csvPath, "w");
    if (!csv) {
      std::fprintf(stderr, "sched_replan: cannot write '%s': %s\n", csvPath,
                   std::strerror(errno));
      return 1;
    }
    std::fprintf(csv, "experts,world_size,slots,policy,from,us_per_decision,"
                      "balance_before,balance_after,replicas_copied,changed\n");
    for (const Row &r : rows)
      std::fprintf(csv, "%lld,%lld,%lld,%s,%s,%.2f,%.4f,%.4f,%lld,%d\n",
                   static_cast<long long>(r.E), static_cast<long long>(r.W),
                   static_cast<long long>(r.S), r.policy.c_str(),
                   r.from.c_str(), r.medianUs, r.before, r.after,
                   static_cast<long long>(r.added), r.changed ? 1 : 0);
    if (std::fclose(csv) != 0) {
      std::fprintf(stderr, "sched_replan: cannot write '%s': %s\n", csvPath,
                   std::strerror(errno));
      std::remove(csvPath);
      return 1;
    }
  }
  return 0;
}
