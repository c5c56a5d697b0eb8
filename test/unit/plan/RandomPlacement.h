//===- RandomPlacement.h - seeded random placements for tests ---*- C++ -*-===//
#ifndef FLEXMOE_TEST_UNIT_PLAN_RANDOMPLACEMENT_H
#define FLEXMOE_TEST_UNIT_PLAN_RANDOMPLACEMENT_H

#include "runtime/plan/Placement.h"

#include <numeric>
#include <random>
#include <vector>

namespace flexmoe::plan::test {

using Rows = std::vector<std::vector<int64_t>>;
using Vec = std::vector<int64_t>;

/// Uniform in [lo, hi]; plain modulo so that the cases are the same with
/// every standard library.
inline int64_t uniform(std::mt19937_64 &rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
}

template <typename T> void shuffle(std::mt19937_64 &rng, std::vector<T> &v) {
  for (int64_t i = static_cast<int64_t>(v.size()) - 1; i > 0; --i)
    std::swap(v[i], v[uniform(rng, 0, i)]);
}

/// A random valid placement: 1..16 devices, 1..64 experts, a few spare slots,
/// and extra replicas wherever they fit.
inline Placement randomPlacement(std::mt19937_64 &rng) {
  Placement placement;
  int64_t W = uniform(rng, 1, 16), E = uniform(rng, 1, 64);
  placement.worldSize = W;
  placement.slotsPerDevice = (E + W - 1) / W + uniform(rng, 0, 3);
  placement.replicas.assign(E, {});
  Vec freeSlots(W, placement.slotsPerDevice);
  std::vector<char> holds(W * E, 0);
  auto put = [&](int64_t e, int64_t d) {
    placement.replicas[e].push_back(d);
    --freeSlots[d];
    holds[d * E + e] = 1;
  };
  Vec experts(E);
  std::iota(experts.begin(), experts.end(), 0);
  shuffle(rng, experts);
  for (int64_t e : experts) {
    Vec open;
    for (int64_t d = 0; d < W; ++d)
      if (freeSlots[d] > 0)
        open.push_back(d);
    put(e, open[uniform(rng, 0, static_cast<int64_t>(open.size()) - 1)]);
  }
  int64_t attempts = uniform(rng, 0, W * placement.slotsPerDevice);
  for (int64_t i = 0; i < attempts; ++i) {
    int64_t e = uniform(rng, 0, E - 1), d = uniform(rng, 0, W - 1);
    if (freeSlots[d] > 0 && !holds[d * E + e])
      put(e, d);
  }
  for (Vec &devices : placement.replicas)
    shuffle(rng, devices);
  return placement;
}

/// Random counts of several shapes: uniform, a few hot experts, mostly
/// zeros, or nothing at all.
inline Rows randomCounts(std::mt19937_64 &rng, const Placement &placement) {
  int64_t W = placement.worldSize, E = placement.numExperts();
  Rows counts(W, Vec(E, 0));
  int64_t shape = uniform(rng, 0, 9);
  if (shape == 0)
    return counts;
  Vec hot(E, 1);
  if (shape <= 3)
    for (int64_t i = 0; i < 3; ++i)
      hot[uniform(rng, 0, E - 1)] = 40;
  for (int64_t src = 0; src < W; ++src)
    for (int64_t e = 0; e < E; ++e) {
      if (shape >= 8 && uniform(rng, 0, 3) != 0)
        continue;
      counts[src][e] = uniform(rng, 0, 12) * hot[e];
    }
  return counts;
}

} // namespace flexmoe::plan::test

#endif // FLEXMOE_TEST_UNIT_PLAN_RANDOMPLACEMENT_H
