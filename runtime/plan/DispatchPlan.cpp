//===- DispatchPlan.cpp - token dispatch for one step of a layer ----------===//
//
// Runs every step of every MoE layer, so it is written to be cheap: a handful
// of flat passes over devices x slots x devices, no maps, and storage reused
// across calls (the plan's own vectors and a per-thread scratch).
//
//===----------------------------------------------------------------------===//
#include "runtime/plan/DispatchPlan.h"

#include <algorithm>

using namespace flexmoe;
using namespace flexmoe::plan;

namespace {

/// Working tables derived from the placement and the counts. Kept per thread
/// so that re-planning every step does not allocate.
struct Scratch {
  /// slotExpert[d * S + s] and slotReplica[d * S + s]: the expert in device
  /// d's slot s (-1 if empty) and the index of d among that expert's replicas.
  std::vector<int64_t> slotExpert, slotReplica;
  /// Replica devices of expert e, ascending: replicaDevice[replicaBegin[e] +
  /// r] for r < replicaBegin[e + 1] - replicaBegin[e].
  std::vector<int64_t> replicaBegin, replicaDevice;
  /// take[src * numReplicas + replicaBegin[e] + r]: rows of src's expert-e
  /// group that replica r computes; chunkOffset the first such row in src's
  /// expert-grouped buffer.
  std::vector<int64_t> take, chunkOffset;
  /// Per-expert work vectors of the split, and per-source positions within
  /// the current destination's chunk.
  std::vector<int64_t> remaining, left, chunkPos;
  /// Replicas of each expert numbered so far, while building the tables.
  std::vector<int64_t> numbered;
  std::vector<char> holds;
};

Scratch &scratch() {
  thread_local Scratch s;
  return s;
}

Status validateCounts(const Placement &placement,
                      std::span<const int64_t> counts,
                      std::string_view layerName) {
  int64_t numExperts = placement.numExperts();
  int64_t total = 0;
  for (int64_t src = 0; src < placement.worldSize; ++src) {
    for (int64_t e = 0; e < numExperts; ++e) {
      int64_t c = counts[src * numExperts + e];
      if (c < 0)
        return errorf("device ", src, " routes ", c, " tokens to expert ", e,
                      " of layer '", layerName, "'");
      if (__builtin_add_overflow(total, c, &total))
        return errorf("token counts of layer '", layerName,
                      "' overflow a 64-bit total");
    }
  }
  return Status::ok();
}

/// The split rule of docs/dispatch-plan.md for every expert, into
/// s.take / s.chunkOffset.
void splitTokens(const Placement &placement, std::span<const int64_t> counts,
                 Scratch &s) {
  int64_t W = placement.worldSize, E = placement.numExperts();
  int64_t numReplicas = s.replicaBegin[E];
  s.take.assign(W * numReplicas, 0);
  s.left.resize(W);
  for (int64_t e = 0; e < E; ++e) {
    int64_t begin = s.replicaBegin[e];
    int64_t R = s.replicaBegin[e + 1] - begin;
    const int64_t *devices = &s.replicaDevice[begin];
    int64_t total = 0;
    for (int64_t src = 0; src < W; ++src) {
      s.left[src] = counts[src * E + e];
      total += s.left[src];
    }
    // Quotas differ by at most one; the first total % R replicas (ascending
    // device) get the extra row.
    s.remaining.resize(R);
    for (int64_t r = 0; r < R; ++r)
      s.remaining[r] = total / R + (r < total % R ? 1 : 0);
    // Local first: a replica's own device keeps what it can.
    for (int64_t r = 0; r < R; ++r) {
      int64_t src = devices[r];
      int64_t kept = std::min(s.left[src], s.remaining[r]);
      s.take[src * numReplicas + begin + r] = kept;
      s.left[src] -= kept;
      s.remaining[r] -= kept;
    }
    // The rest, source by source, fills the replicas in ascending device
    // order. Quotas sum to the total, so the cursor never runs past the end
    // while a source has rows left.
    int64_t r = 0;
    for (int64_t src = 0; src < W; ++src) {
      while (s.left[src] > 0) {
        while (s.remaining[r] == 0)
          ++r;
        int64_t moved = std::min(s.left[src], s.remaining[r]);
        s.take[src * numReplicas + begin + r] += moved;
        s.left[src] -= moved;
        s.remaining[r] -= moved;
      }
    }
  }

  // A source's rows of expert e are cut into chunks in ascending replica
  // (= destination device) order. Replicas are numbered expert by expert and
  // each expert's chunks add up to its whole group, so a running sum over all
  // replicas is the offset in the expert-grouped buffer.
  s.chunkOffset.resize(W * numReplicas);
  for (int64_t src = 0; src < W; ++src) {
    int64_t offset = 0;
    for (int64_t i = 0; i < numReplicas; ++i) {
      s.chunkOffset[src * numReplicas + i] = offset;
      offset += s.take[src * numReplicas + i];
    }
  }
}

} // namespace

Status flexmoe::plan::computeDispatchPlan(const Placement &placement,
                                          std::span<const int64_t> counts,
                                          DispatchPlan &plan,
                                          std::string_view layerName) {
  FLEXMOE_RETURN_IF_ERROR(validatePlacement(placement, layerName));
  const int64_t W = placement.worldSize, S = placement.slotsPerDevice,
                E = placement.numExperts();
  if (static_cast<int64_t>(counts.size()) != W * E)
    return errorf("counts of layer '", layerName, "' have ", counts.size(),
                  " entries but ", W, " devices x ", E, " experts need ",
                  W * E);
  FLEXMOE_RETURN_IF_ERROR(validateCounts(placement, counts, layerName));

  Scratch &s = scratch();

  // The slot rule, and each expert's replicas in ascending device order.
  s.holds.assign(W * E, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t d : placement.replicas[e])
      s.holds[d * E + e] = 1;
  s.slotExpert.assign(W * S, -1);
  s.slotReplica.assign(W * S, -1);
  s.replicaBegin.assign(E + 1, 0);
  for (int64_t e = 0; e < E; ++e)
    s.replicaBegin[e + 1] =
        s.replicaBegin[e] + static_cast<int64_t>(placement.replicas[e].size());
  s.replicaDevice.resize(s.replicaBegin[E]);
  s.numbered.assign(E, 0);
  for (int64_t d = 0; d < W; ++d) {
    int64_t slot = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (!s.holds[d * E + e])
        continue;
      int64_t r = s.numbered[e]++;
      s.replicaDevice[s.replicaBegin[e] + r] = d;
      s.slotExpert[d * S + slot] = e;
      s.slotReplica[d * S + slot] = r;
      ++slot;
    }
  }

  splitTokens(placement, counts, s);
  const int64_t numReplicas = s.replicaBegin[E];
  auto rowsTo = [&](int64_t src, int64_t dst, int64_t slot) -> int64_t {
    int64_t e = s.slotExpert[dst * S + slot];
    if (e < 0)
      return 0;
    return s.take[src * numReplicas + s.replicaBegin[e] +
                  s.slotReplica[dst * S + slot]];
  };

  plan.worldSize = W;
  plan.slotsPerDevice = S;
  plan.numExperts = E;
  plan.devices.resize(W);
  for (DevicePlan &device : plan.devices) {
    device.sends.clear();
    device.recvs.clear();
    device.sendCounts.assign(W, 0);
    device.sendOffsets.assign(W, 0);
    device.recvCounts.assign(W, 0);
    device.recvOffsets.assign(W, 0);
    device.slotCounts.assign(S, 0);
    device.slotOffsets.assign(S, 0);
    device.sendRows = device.recvRows = 0;
  }

  // The all-to-all matrix and its prefix sums, from both ends.
  for (int64_t src = 0; src < W; ++src) {
    DevicePlan &from = plan.devices[src];
    for (int64_t dst = 0; dst < W; ++dst) {
      int64_t rows = 0;
      for (int64_t slot = 0; slot < S; ++slot)
        rows += rowsTo(src, dst, slot);
      from.sendCounts[dst] = rows;
      from.sendOffsets[dst] = from.sendRows;
      from.sendRows += rows;
      DevicePlan &to = plan.devices[dst];
      to.recvCounts[src] = rows;
      to.recvOffsets[src] = to.recvRows;
      to.recvRows += rows;
    }
  }

  // Segments. Walking (dst, slot, src) yields each destination's segments in
  // slot-major order and each source's in (dst, slot) order: the pack order.
  plan.crossDeviceRows = 0;
  s.chunkPos.resize(W);
  for (int64_t dst = 0; dst < W; ++dst) {
    DevicePlan &to = plan.devices[dst];
    std::fill(s.chunkPos.begin(), s.chunkPos.end(), 0);
    int64_t slotPos = 0;
    for (int64_t slot = 0; slot < S; ++slot) {
      to.slotOffsets[slot] = slotPos;
      int64_t e = s.slotExpert[dst * S + slot];
      if (e < 0)
        continue;
      int64_t replica = s.replicaBegin[e] + s.slotReplica[dst * S + slot];
      for (int64_t src = 0; src < W; ++src) {
        int64_t rows = s.take[src * numReplicas + replica];
        if (rows == 0)
          continue;
        DevicePlan &from = plan.devices[src];
        Segment seg;
        seg.expert = e;
        seg.src = src;
        seg.dst = dst;
        seg.slot = slot;
        seg.rows = rows;
        seg.srcOffset = s.chunkOffset[src * numReplicas + replica];
        seg.sendOffset = from.sendOffsets[dst] + s.chunkPos[src];
        seg.recvOffset = to.recvOffsets[src] + s.chunkPos[src];
        seg.slotOffset = slotPos;
        s.chunkPos[src] += rows;
        slotPos += rows;
        to.slotCounts[slot] += rows;
        if (src != dst)
          plan.crossDeviceRows += rows;
        to.recvs.push_back(seg);
        from.sends.push_back(seg);
      }
    }
  }

  plan.load.resize(W);
  plan.totalRows = 0;
  int64_t maxLoad = 0;
  for (int64_t d = 0; d < W; ++d) {
    plan.load[d] = plan.devices[d].recvRows;
    plan.totalRows += plan.load[d];
    maxLoad = std::max(maxLoad, plan.load[d]);
  }
  plan.balanceRatio = plan.totalRows == 0
                          ? 1.0
                          : static_cast<double>(maxLoad) *
                                static_cast<double>(W) /
                                static_cast<double>(plan.totalRows);
  return Status::ok();
}

StatusOr<DispatchPlan>
flexmoe::plan::computeDispatchPlan(const Placement &placement,
                                   std::span<const int64_t> counts,
                                   std::string_view layerName) {
  DispatchPlan plan;
  FLEXMOE_RETURN_IF_ERROR(
      computeDispatchPlan(placement, counts, plan, layerName));
  return plan;
}

StatusOr<DispatchPlan> flexmoe::plan::computeDispatchPlan(
    const Placement &placement, const std::vector<std::vector<int64_t>> &counts,
    std::string_view layerName) {
  // Check the shape here, where rows can be named, then flatten.
  FLEXMOE_RETURN_IF_ERROR(validatePlacement(placement, layerName));
  int64_t W = placement.worldSize, E = placement.numExperts();
  if (static_cast<int64_t>(counts.size()) != W)
    return errorf("counts of layer '", layerName, "' have ", counts.size(),
                  " rows but the world size is ", W);
  std::vector<int64_t> flat;
  flat.reserve(W * E);
  for (int64_t src = 0; src < W; ++src) {
    if (static_cast<int64_t>(counts[src].size()) != E)
      return errorf("counts of layer '", layerName, "' from device ", src,
                    " have ", counts[src].size(), " entries but the layer has ",
                    E, " experts");
    flat.insert(flat.end(), counts[src].begin(), counts[src].end());
  }
  return computeDispatchPlan(placement, std::span<const int64_t>(flat),
                             layerName);
}
