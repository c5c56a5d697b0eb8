//===- Policy.cpp - placement policies: static, shadow, flexmoe -----------===//
//
// docs/scheduling.md describes the algorithms. Everything here is
// deterministic: experts and devices are visited in index order and ties
// go to the lowest id, so every rank reaches the same decision.
//
//===----------------------------------------------------------------------===//
#include "runtime/sched/Policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <sstream>

using namespace flexmoe;
using namespace flexmoe::sched;
using plan::Placement;

namespace {

/// The greedy's bound on replica changes per decision, on top of the
/// natural one (a change must pay, so the predicted step strictly
/// shrinks): at most this many times the number of experts plus devices.
constexpr int64_t kMaxGreedyStepsPerExpert = 2;

std::vector<int64_t> replicaCounts(const Placement &placement) {
  std::vector<int64_t> counts(placement.numExperts());
  for (int64_t e = 0; e < placement.numExperts(); ++e)
    counts[e] = static_cast<int64_t>(placement.replicas[e].size());
  return counts;
}

/// Replica lists in ascending device order: the form policies return.
Placement normalized(Placement placement) {
  for (std::vector<int64_t> &devices : placement.replicas)
    std::sort(devices.begin(), devices.end());
  return placement;
}

/// Whether two placements have the same device set for every expert.
bool sameSets(const Placement &a, const Placement &b) {
  if (a.worldSize != b.worldSize || a.slotsPerDevice != b.slotsPerDevice ||
      a.numExperts() != b.numExperts())
    return false;
  return normalized(a).replicas == normalized(b).replicas;
}

std::string formatMs(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.4g ms", seconds * 1e3);
  return buffer;
}

std::string formatRatio(double ratio) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", ratio);
  return buffer;
}

/// "expert 3 +1 replica, expert 5 -1 replica; 2 replicas copied".
std::string describeChange(const Placement &from, const Placement &to) {
  std::ostringstream os;
  const char *separator = "";
  for (int64_t e = 0; e < to.numExperts(); ++e) {
    auto diff = static_cast<int64_t>(to.replicas[e].size()) -
                static_cast<int64_t>(from.replicas[e].size());
    if (diff == 0)
      continue;
    os << separator << "expert " << e << " " << (diff > 0 ? "+" : "") << diff
       << (diff == 1 || diff == -1 ? " replica" : " replicas");
    separator = ", ";
  }
  PlacementDelta delta = placementDelta(from, to);
  os << separator << delta.added
     << (delta.added == 1 ? " replica copied, " : " replicas copied, ")
     << delta.removed << " dropped";
  return os.str();
}

int64_t slotLimit(const PolicyOptions &options, const Placement &placement) {
  return options.maxSlotsPerDevice > 0
             ? std::min(options.maxSlotsPerDevice, placement.slotsPerDevice)
             : placement.slotsPerDevice;
}

/// An error if a device of `placement` holds more experts than `limit`.
Status checkSlotLimit(const Placement &placement, int64_t limit,
                      std::string_view what, std::string_view layerName) {
  std::vector<int64_t> held(placement.worldSize, 0);
  for (const std::vector<int64_t> &devices : placement.replicas)
    for (int64_t d : devices)
      ++held[d];
  for (int64_t d = 0; d < placement.worldSize; ++d)
    if (held[d] > limit)
      return errorf("device ", d, " holds ", held[d], " experts of layer '",
                    layerName, "' in the ", what, " placement, more than the ",
                    limit, " slots the policy may fill");
  return Status::ok();
}

/// The checks every policy makes of its input.
Status checkInput(const PolicyInput &input, bool needsBase) {
  if (!input.current || !input.monitor || !input.cost ||
      (needsBase && !input.base))
    return errorf("policy input for layer '", input.layerName, "' lacks its ",
                  !input.current   ? "current placement"
                  : !input.monitor ? "monitor"
                  : !input.cost    ? "cost model"
                                   : "base placement");
  FLEXMOE_RETURN_IF_ERROR(
      plan::validatePlacement(*input.current, input.layerName));
  const Placement &current = *input.current;
  if (input.monitor->worldSize() != current.worldSize ||
      input.monitor->numExperts() != current.numExperts())
    return errorf("the monitor of layer '", input.layerName, "' counts ",
                  input.monitor->worldSize(), " ranks x ",
                  input.monitor->numExperts(),
                  " experts but the placement has ", current.worldSize,
                  " devices x ", current.numExperts(), " experts");
  if (needsBase) {
    FLEXMOE_RETURN_IF_ERROR(
        plan::validatePlacement(*input.base, input.layerName));
    if (input.base->worldSize != current.worldSize ||
        input.base->slotsPerDevice != current.slotsPerDevice ||
        input.base->numExperts() != current.numExperts())
      return errorf("the base placement of layer '", input.layerName,
                    "' has another shape than the current one");
  }
  return input.cost->validate();
}

/// Counts the monitor gives a policy: the window's mean or the latest step.
std::vector<int64_t> countsFor(const RoutingMonitor &monitor, bool latest) {
  if (latest && monitor.samples() > 0) {
    std::span<const int64_t> counts = monitor.latest();
    return {counts.begin(), counts.end()};
  }
  return monitor.meanCounts();
}

/// Tokens per expert of counts[src * E + e].
std::vector<double> expertTokens(std::span<const int64_t> counts, int64_t W,
                                 int64_t E) {
  std::vector<double> tokens(E, 0.0);
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e)
      tokens[e] += static_cast<double>(counts[src * E + e]);
  return tokens;
}

/// The step time of a prediction without its migration, summed the way
/// predict() sums it for a placement migrating from itself (so the two
/// compare exactly).
double stepTime(const CostModel::Prediction &p) {
  return p.compute + p.allToAll + p.replicaSync + 0.0;
}

Decision unchanged(const Placement &current, CostModel::Prediction before,
                   std::string reason) {
  Decision decision;
  decision.next = current;
  decision.replicasBefore = decision.replicasAfter = replicaCounts(current);
  decision.observedBalance = before.balanceRatio;
  decision.after = before;
  decision.before = std::move(before);
  decision.reason = std::move(reason);
  return decision;
}

//===----------------------------------------------------------------------===//
// Replica layouts for the flexmoe policy
//===----------------------------------------------------------------------===//

/// A placement under construction, with what the greedy asks of it in O(1):
/// slots used per device, whether a device holds an expert, and the load
/// each device would get if every replica of expert e computed
/// tokens[e] / replicas[e] rows (the split rule's quotas, to within a row).
class Layout {
public:
  Layout(int64_t W, int64_t E, int64_t limit)
      : W_(W), E_(E), limit_(limit), replicas_(E), held_(W, 0), has_(W * E, 0),
        load_(W, 0.0) {}

  bool holds(int64_t d, int64_t e) const { return has_[d * E_ + e]; }
  bool free(int64_t d) const { return held_[d] < limit_; }
  bool legal(int64_t d, int64_t e) const { return free(d) && !holds(d, e); }
  double load(int64_t d) const { return load_[d]; }
  const std::vector<int64_t> &devicesOf(int64_t e) const {
    return replicas_[e];
  }

  void add(int64_t e, int64_t d, double rows) {
    replicas_[e].push_back(d);
    ++held_[d];
    has_[d * E_ + e] = 1;
    load_[d] += rows;
  }
  void remove(int64_t e, int64_t d, double rows) {
    auto &devices = replicas_[e];
    devices.erase(std::find(devices.begin(), devices.end(), d));
    --held_[d];
    has_[d * E_ + e] = 0;
    load_[d] -= rows;
  }

  /// The least-loaded device where expert e may go (lowest id on ties), or
  /// -1.
  int64_t leastLoadedLegal(int64_t e) const {
    int64_t best = -1;
    for (int64_t d = 0; d < W_; ++d)
      if (legal(d, e) && (best < 0 || load_[d] < load_[best]))
        best = d;
    return best;
  }

  /// Makes room for expert e when every free slot is on a device that
  /// already holds it: moves some expert x from the least-loaded device d2
  /// without e to a device with a free slot that lacks x, and returns d2
  /// (now free); -1 when no device lacks e.
  int64_t makeRoom(int64_t e, const std::vector<double> &perReplica) {
    int64_t spare = -1;
    for (int64_t d = 0; d < W_ && spare < 0; ++d)
      if (free(d))
        spare = d;
    if (spare < 0)
      return -1;
    int64_t target = -1;
    for (int64_t d = 0; d < W_; ++d)
      if (!holds(d, e) && (target < 0 || load_[d] < load_[target]))
        target = d;
    if (target < 0)
      return -1;
    // The spare device has fewer experts than the full target, so one of
    // the target's is missing there.
    for (int64_t x = 0; x < E_; ++x) {
      if (holds(target, x) && !holds(spare, x)) {
        remove(x, target, perReplica[x]);
        add(x, spare, perReplica[x]);
        return target;
      }
    }
    return -1;
  }

  double maxLoad() const {
    return W_ == 0 ? 0.0 : *std::max_element(load_.begin(), load_.end());
  }

  Placement toPlacement(int64_t slotsPerDevice) const {
    Placement placement;
    placement.worldSize = W_;
    placement.slotsPerDevice = slotsPerDevice;
    placement.replicas = replicas_;
    for (std::vector<int64_t> &devices : placement.replicas)
      std::sort(devices.begin(), devices.end());
    return placement;
  }

private:
  int64_t W_, E_, limit_;
  std::vector<std::vector<int64_t>> replicas_;
  std::vector<int64_t> held_;
  std::vector<char> has_;
  std::vector<double> load_;
};

std::vector<double> perReplicaLoad(const std::vector<double> &tokens,
                                   const std::vector<int64_t> &replicas) {
  std::vector<double> rows(tokens.size());
  for (size_t e = 0; e < tokens.size(); ++e)
    rows[e] = tokens[e] / static_cast<double>(replicas[e]);
  return rows;
}

/// Longest processing time first: replicas by descending per-replica load,
/// each to the least-loaded device that may take it. With `prefer`, a
/// replica goes to a device that holds its expert there whenever that keeps
/// the device's load within `target` (so the layout moves little and stays
/// as even as plain LPT's). Returns false if no layout was found (only when
/// the replica counts cannot fit the slot limit).
bool placeLpt(const std::vector<int64_t> &replicas,
              const std::vector<double> &tokens, const Placement *prefer,
              double target, Layout &layout) {
  const auto E = static_cast<int64_t>(replicas.size());
  std::vector<double> rows = perReplicaLoad(tokens, replicas);
  std::vector<int64_t> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return rows[a] > rows[b]; });
  const double slack = target * 1e-9;
  for (int64_t e : order) {
    for (int64_t r = 0; r < replicas[e]; ++r) {
      int64_t device = -1;
      if (prefer) {
        for (int64_t d : prefer->replicas[e])
          if (layout.legal(d, e) &&
              layout.load(d) + rows[e] <= target + slack &&
              (device < 0 || layout.load(d) < layout.load(device) ||
               (layout.load(d) == layout.load(device) && d < device)))
            device = d;
      }
      if (device < 0)
        device = layout.leastLoadedLegal(e);
      if (device < 0)
        device = layout.makeRoom(e, rows);
      if (device < 0)
        return false;
      layout.add(e, device, rows[e]);
    }
  }
  return true;
}

/// Moves replicas of `layout` back to where `current` has them whenever no
/// device's load goes above the layout's maximum: into a free slot there,
/// or by swapping with a replica that was itself moved in. Every such move
/// saves a copy and keeps the layout as even.
void keepInPlace(Layout &layout, const Placement &current,
                 const std::vector<double> &rows) {
  const int64_t W = current.worldSize, E = current.numExperts();
  std::vector<char> home(W * E, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t d : current.replicas[e])
      home[d * E + e] = 1;
  const double bound = layout.maxLoad() * (1 + 1e-9);
  for (int64_t e = 0; e < E; ++e) {
    std::vector<int64_t> devices = layout.devicesOf(e);
    for (int64_t away : devices) {
      if (home[away * E + e])
        continue;
      for (int64_t d : current.replicas[e]) {
        if (layout.holds(d, e))
          continue;
        if (layout.free(d)) {
          if (layout.load(d) + rows[e] > bound)
            continue;
          layout.remove(e, away, rows[e]);
          layout.add(e, d, rows[e]);
          break;
        }
        // Swap with a replica y that is not at home on d and may take
        // e's place on `away`.
        int64_t swap = -1;
        for (int64_t y = 0; y < E && swap < 0; ++y)
          if (y != e && layout.holds(d, y) && !home[d * E + y] &&
              !layout.holds(away, y) &&
              layout.load(d) - rows[y] + rows[e] <= bound &&
              layout.load(away) - rows[e] + rows[y] <= bound)
            swap = y;
        if (swap < 0)
          continue;
        layout.remove(swap, d, rows[swap]);
        layout.remove(e, away, rows[e]);
        layout.add(e, d, rows[e]);
        layout.add(swap, away, rows[swap]);
        break;
      }
    }
  }
}

//===----------------------------------------------------------------------===//
// The policies
//===----------------------------------------------------------------------===//

class StaticPolicy final : public Policy {
public:
  PolicyKind kind() const override { return PolicyKind::Static; }

  StatusOr<Decision> decide(const PolicyInput &input) override {
    FLEXMOE_RETURN_IF_ERROR(checkInput(input, /*needsBase=*/false));
    std::vector<int64_t> counts = input.monitor->meanCounts();
    StatusOr<CostModel::Prediction> before =
        input.cost->predict(*input.current, counts);
    if (!before)
      return before.status();
    return unchanged(*input.current, std::move(before).value(),
                     "static placement");
  }
};

class ShadowPolicy final : public Policy {
public:
  explicit ShadowPolicy(const PolicyOptions &options) : options_(options) {}
  PolicyKind kind() const override { return PolicyKind::Shadow; }

  StatusOr<Decision> decide(const PolicyInput &input) override {
    FLEXMOE_RETURN_IF_ERROR(checkInput(input, /*needsBase=*/true));
    const Placement &current = *input.current;
    const CostModel &cost = *input.cost;
    const int64_t W = current.worldSize, E = current.numExperts();
    const int64_t limit = slotLimit(options_, current);
    FLEXMOE_RETURN_IF_ERROR(
        checkSlotLimit(current, limit, "current", input.layerName));
    FLEXMOE_RETURN_IF_ERROR(
        checkSlotLimit(*input.base, limit, "base", input.layerName));

    std::vector<int64_t> counts = countsFor(*input.monitor, /*latest=*/true);
    CostModel::Prediction before;
    FLEXMOE_RETURN_IF_ERROR(cost.predictInto(current, counts, before));
    if (input.monitor->samples() == 0)
      return unchanged(current, before, "no routing recorded yet");

    // Start from the base: when the current placement is the base plus
    // shadows, as this policy keeps it, going back moves nothing.
    Placement candidate = normalized(*input.base);
    CostModel::Prediction candidatePrediction, trialPrediction;
    FLEXMOE_RETURN_IF_ERROR(
        cost.predictInto(candidate, counts, candidatePrediction, &current));
    std::vector<double> tokens = expertTokens(counts, W, E);
    std::vector<int64_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return tokens[a] > tokens[b];
    });
    std::vector<int64_t> held(W, 0);
    for (const std::vector<int64_t> &devices : candidate.replicas)
      for (int64_t d : devices)
        ++held[d];

    std::vector<int64_t> shadowed;
    std::string stopped;
    Placement trial;
    for (int64_t e : order) {
      if (tokens[e] == 0)
        break;
      trial = candidate;
      std::vector<int64_t> &devices = trial.replicas[e];
      std::vector<int64_t> added;
      for (int64_t d = 0; d < W; ++d)
        if (held[d] < limit &&
            !std::binary_search(candidate.replicas[e].begin(),
                                candidate.replicas[e].end(), d))
          added.push_back(d);
      if (added.empty())
        continue; // nowhere new to put it; a cooler expert may still fit
      devices.insert(devices.end(), added.begin(), added.end());
      std::sort(devices.begin(), devices.end());
      FLEXMOE_RETURN_IF_ERROR(
          cost.predictInto(trial, counts, trialPrediction, &current));
      // The bar is the candidate's step time without its migration: a
      // decision on the placement this one returns, with the same counts,
      // then accepts the same shadows (in place, they move nothing) and
      // rejects the same next one, so it changes nothing.
      double gain = candidatePrediction.total - trialPrediction.total;
      if (!(gain > 0 &&
            gain >= options_.minGain * stepTime(candidatePrediction))) {
        stopped = "shadowing expert " + std::to_string(e) + " predicts " +
                  formatMs(candidatePrediction.total) + " -> " +
                  formatMs(trialPrediction.total);
        break;
      }
      for (int64_t d : added)
        ++held[d];
      std::swap(candidate, trial);
      std::swap(candidatePrediction, trialPrediction);
      shadowed.push_back(e);
    }

    std::ostringstream what;
    what << "shadows";
    if (shadowed.empty())
      what << " none";
    for (size_t i = 0; i < shadowed.size(); ++i)
      what << (i ? ", " : " of expert ") << shadowed[i];
    if (!stopped.empty())
      what << " (" << stopped << ")";
    if (sameSets(candidate, current))
      return unchanged(current, before, what.str() + ": no change");

    // Adding shadows must pay by minGain (hysteresis); dropping them costs
    // nothing to move, so it only has to be no slower.
    PlacementDelta delta = placementDelta(current, candidate);
    double gain = before.total - candidatePrediction.total;
    bool pays = delta.added == 0
                    ? gain >= 0
                    : gain > 0 && gain >= options_.minGain * before.total;
    if (!pays)
      return unchanged(current, before,
                       what.str() + ": predicts " + formatMs(before.total) +
                           " -> " + formatMs(candidatePrediction.total) +
                           ", not worth a change");

    Decision decision;
    decision.changed = true;
    decision.replicasBefore = replicaCounts(current);
    decision.replicasAfter = replicaCounts(candidate);
    decision.observedBalance = before.balanceRatio;
    decision.reason =
        what.str() + ": " + describeChange(current, candidate) +
        "; predicted balance " + formatRatio(before.balanceRatio) + " -> " +
        formatRatio(candidatePrediction.balanceRatio) + ", step " +
        formatMs(before.total) + " -> " + formatMs(candidatePrediction.total);
    decision.next = std::move(candidate);
    decision.before = std::move(before);
    decision.after = std::move(candidatePrediction);
    return decision;
  }

private:
  PolicyOptions options_;
};

class FlexMoEPolicy final : public Policy {
public:
  explicit FlexMoEPolicy(const PolicyOptions &options) : options_(options) {}
  PolicyKind kind() const override { return PolicyKind::FlexMoE; }

  StatusOr<Decision> decide(const PolicyInput &input) override;

private:
  /// Whether moving from a placement predicted at `from` (its step time) to
  /// one predicted at `to` (with the move's migration) pays by minGain.
  bool pays(double from, const CostModel::Prediction &to) const {
    double gain = from - to.total;
    return gain > 0 && gain >= options_.minGain * from;
  }

  /// The best layout of `replicas` (per expert) coming from `home`: the
  /// incremental one (when given), LPT keeping replicas where `home` has
  /// them, or plain LPT, whichever the cost model predicts fastest (earlier
  /// ones on ties), migration from `home` included.
  Status bestLayout(const PolicyInput &input, std::span<const int64_t> counts,
                    const std::vector<double> &tokens,
                    const std::vector<int64_t> &replicas, int64_t limit,
                    const Placement &home, const Placement *incremental,
                    Placement &best, CostModel::Prediction &bestPrediction,
                    bool &found);

  PolicyOptions options_;
  CostModel::Prediction scratchPrediction_;
};

Status FlexMoEPolicy::bestLayout(
    const PolicyInput &input, std::span<const int64_t> counts,
    const std::vector<double> &tokens, const std::vector<int64_t> &replicas,
    int64_t limit, const Placement &home, const Placement *incremental,
    Placement &best, CostModel::Prediction &bestPrediction, bool &found) {
  const int64_t W = home.worldSize, E = home.numExperts(),
                S = home.slotsPerDevice;
  found = false;
  auto consider = [&](Placement candidate) -> Status {
    FLEXMOE_RETURN_IF_ERROR(input.cost->predictInto(candidate, counts,
                                                    scratchPrediction_, &home,
                                                    options_.expectedInterval));
    if (!found || scratchPrediction_.total < bestPrediction.total) {
      found = true;
      best = std::move(candidate);
      std::swap(bestPrediction, scratchPrediction_);
    }
    return Status::ok();
  };
  if (incremental)
    FLEXMOE_RETURN_IF_ERROR(consider(*incremental));

  Layout plain(W, E, limit);
  if (!placeLpt(replicas, tokens, nullptr, 0, plain))
    return Status::ok();
  Layout sticky(W, E, limit);
  bool stickyFound = placeLpt(replicas, tokens, &home, plain.maxLoad(), sticky);
  if (stickyFound) {
    keepInPlace(sticky, home, perReplicaLoad(tokens, replicas));
    FLEXMOE_RETURN_IF_ERROR(consider(sticky.toPlacement(S)));
  }
  // Plain LPT moves more; it is only worth a look when keeping replicas in
  // place left the layout less even.
  if (!stickyFound || sticky.maxLoad() > plain.maxLoad() * (1 + 1e-9))
    FLEXMOE_RETURN_IF_ERROR(consider(plain.toPlacement(S)));
  return Status::ok();
}

StatusOr<Decision> FlexMoEPolicy::decide(const PolicyInput &input) {
  FLEXMOE_RETURN_IF_ERROR(checkInput(input, /*needsBase=*/false));
  const Placement &current = *input.current;
  const CostModel &cost = *input.cost;
  const int64_t W = current.worldSize, E = current.numExperts(),
                S = current.slotsPerDevice;
  const int64_t limit = slotLimit(options_, current);
  FLEXMOE_RETURN_IF_ERROR(
      checkSlotLimit(current, limit, "current", input.layerName));

  std::vector<int64_t> counts = countsFor(*input.monitor, /*latest=*/false);
  CostModel::Prediction before;
  FLEXMOE_RETURN_IF_ERROR(cost.predictInto(current, counts, before));
  const std::string trigger =
      "balance " + formatRatio(before.balanceRatio) +
      (before.balanceRatio > options_.rebalanceThreshold ? " > " : " <= ") +
      formatRatio(options_.rebalanceThreshold);
  if (before.balanceRatio <= options_.rebalanceThreshold)
    return unchanged(current, before, trigger + ": no change");

  std::vector<double> tokens = expertTokens(counts, W, E);

  // Every change is judged from the placement accepted so far as if it were
  // the current one (its migration from there, its step time without
  // migration). The greedy stops where both a new replica and a new layout
  // fail to pay, so a decision on the placement it returns, with the same
  // counts, makes exactly the failed tries again and changes nothing. The
  // steps' migrations add up to at least the direct one from `current`,
  // so the whole change pays by at least minGain too.
  Placement accepted = normalized(current);
  double acceptedTime = stepTime(before);
  std::vector<int64_t> replicas = replicaCounts(current);
  Placement candidate;
  CostModel::Prediction candidatePrediction;
  bool found = false;
  std::string stopped;
  auto accept = [&](std::vector<int64_t> next) {
    accepted = std::move(candidate);
    acceptedTime = stepTime(candidatePrediction);
    replicas = std::move(next);
  };

  // A better layout of the same replicas first: it needs no new replica.
  FLEXMOE_RETURN_IF_ERROR(bestLayout(input, counts, tokens, replicas, limit,
                                     accepted, nullptr, candidate,
                                     candidatePrediction, found));
  if (found && !sameSets(candidate, accepted) &&
      pays(acceptedTime, candidatePrediction))
    accept(replicas);

  const int64_t maxSteps = kMaxGreedyStepsPerExpert * (E + W);
  for (int64_t step = 0; step < maxSteps; ++step) {
    // (a) the expert with the highest per-replica load that can still grow.
    int64_t hot = -1;
    for (int64_t e = 0; e < E; ++e)
      if (replicas[e] < W &&
          (hot < 0 || tokens[e] * static_cast<double>(replicas[hot]) >
                          tokens[hot] * static_cast<double>(replicas[e])))
        hot = e;
    const int64_t used = std::accumulate(replicas.begin(), replicas.end(),
                                         static_cast<int64_t>(0));
    // (b) with every slot taken, the least-loaded replicated expert gives
    // one up.
    int64_t cold = -1;
    if (hot >= 0 && used >= W * limit)
      for (int64_t e = 0; e < E; ++e)
        if (e != hot && replicas[e] >= 2 &&
            (cold < 0 || tokens[e] * static_cast<double>(replicas[cold]) <
                             tokens[cold] * static_cast<double>(replicas[e])))
          cold = e;

    if (hot < 0 || tokens[hot] == 0) {
      stopped = "no expert can take another replica";
    } else if (used >= W * limit && cold < 0) {
      stopped = "every slot is taken and no other expert has a spare replica";
    } else {
      std::vector<int64_t> next = replicas;
      ++next[hot];
      if (cold >= 0)
        --next[cold];

      // The incremental layout: the accepted one, the cold expert's replica
      // leaving its most loaded device (one without the hot expert if it
      // can), the new replica going to the least-loaded device that may
      // take it. Loads use the new replica counts throughout.
      std::vector<double> rows = perReplicaLoad(tokens, next);
      Layout grown(W, E, limit);
      for (int64_t e = 0; e < E; ++e)
        for (int64_t d : accepted.replicas[e])
          grown.add(e, d, rows[e]);
      if (cold >= 0) {
        int64_t victim = -1;
        for (int64_t d : grown.devicesOf(cold)) {
          auto better = [&](int64_t a, int64_t b) {
            if (grown.holds(a, hot) != grown.holds(b, hot))
              return !grown.holds(a, hot);
            if (grown.load(a) != grown.load(b))
              return grown.load(a) > grown.load(b);
            return a < b;
          };
          if (victim < 0 || better(d, victim))
            victim = d;
        }
        grown.remove(cold, victim, rows[cold]);
      }
      int64_t target = grown.leastLoadedLegal(hot);
      Placement incremental;
      if (target >= 0) {
        grown.add(hot, target, rows[hot]);
        incremental = grown.toPlacement(S);
      }

      FLEXMOE_RETURN_IF_ERROR(
          bestLayout(input, counts, tokens, next, limit, accepted,
                     target >= 0 ? &incremental : nullptr, candidate,
                     candidatePrediction, found));
      if (found && pays(acceptedTime, candidatePrediction)) {
        accept(std::move(next));
        continue;
      }
      std::string change = "+1 replica of expert " + std::to_string(hot);
      if (cold >= 0)
        change += ", -1 of expert " + std::to_string(cold);
      stopped = found ? change + " predicts " + formatMs(acceptedTime) +
                            " -> " + formatMs(candidatePrediction.total)
                      : change + " finds no layout";
    }

    // No new replica pays: a better layout of the same replicas might (and
    // then the greedy goes on from there).
    FLEXMOE_RETURN_IF_ERROR(bestLayout(input, counts, tokens, replicas, limit,
                                       accepted, nullptr, candidate,
                                       candidatePrediction, found));
    if (found && !sameSets(candidate, accepted) &&
        pays(acceptedTime, candidatePrediction)) {
      accept(replicas);
      continue;
    }
    break;
  }

  if (sameSets(accepted, current))
    return unchanged(current, before,
                     trigger + ": no change pays (" + stopped + ")");

  CostModel::Prediction after;
  FLEXMOE_RETURN_IF_ERROR(cost.predictInto(accepted, counts, after, &current,
                                           options_.expectedInterval));
  Decision decision;
  decision.changed = true;
  decision.replicasBefore = replicaCounts(current);
  decision.replicasAfter = replicaCounts(accepted);
  decision.observedBalance = before.balanceRatio;
  decision.reason = trigger + ": " + describeChange(current, accepted) +
                    "; predicted balance " + formatRatio(after.balanceRatio) +
                    ", step " + formatMs(before.total) + " -> " +
                    formatMs(after.total);
  decision.next = std::move(accepted);
  decision.before = std::move(before);
  decision.after = std::move(after);
  return decision;
}

} // namespace

StatusOr<PolicyKind> flexmoe::sched::parsePolicyKind(std::string_view name) {
  if (name == "static")
    return PolicyKind::Static;
  if (name == "shadow")
    return PolicyKind::Shadow;
  if (name == "flexmoe")
    return PolicyKind::FlexMoE;
  return errorf("unknown placement policy '", name,
                "': choose static, shadow or flexmoe");
}

std::string_view flexmoe::sched::policyName(PolicyKind kind) {
  switch (kind) {
  case PolicyKind::Static:
    return "static";
  case PolicyKind::Shadow:
    return "shadow";
  case PolicyKind::FlexMoE:
    return "flexmoe";
  }
  return "unknown";
}

StatusOr<std::unique_ptr<Policy>>
flexmoe::sched::makePolicy(const PolicyOptions &options) {
  if (!(options.rebalanceThreshold > 1) ||
      !std::isfinite(options.rebalanceThreshold))
    return errorf("rebalance threshold ", options.rebalanceThreshold,
                  " must be a finite number greater than 1");
  if (!(options.expectedInterval >= 1) ||
      !std::isfinite(options.expectedInterval))
    return errorf("expected re-plan interval ", options.expectedInterval,
                  " must be at least 1 step");
  if (options.maxSlotsPerDevice < 0)
    return errorf("max slots per device ", options.maxSlotsPerDevice,
                  " must be 0 (all slots) or positive");
  if (!(options.minGain >= 0 && options.minGain < 1))
    return errorf("minimum gain ", options.minGain,
                  " must be a fraction in [0, 1)");
  switch (options.kind) {
  case PolicyKind::Static:
    return std::unique_ptr<Policy>(std::make_unique<StaticPolicy>());
  case PolicyKind::Shadow:
    return std::unique_ptr<Policy>(std::make_unique<ShadowPolicy>(options));
  case PolicyKind::FlexMoE:
    return std::unique_ptr<Policy>(std::make_unique<FlexMoEPolicy>(options));
  }
  return errorf("unknown placement policy kind ",
                static_cast<int>(options.kind));
}
