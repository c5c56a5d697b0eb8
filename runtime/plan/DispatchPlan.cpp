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
  /// Replicas are numbered expert by expert, each expert's in ascending
  /// device order: expert e's are [replicaBegin[e], replicaBegin[e + 1]), and
  /// replica i of expert replicaExpert[i] lives on replicaDevice[i].
  std::vector<int64_t> replicaBegin, replicaDevice, replicaExpert;
  /// slotReplica[d * S + s]: the replica in device d's slot s, -1 if empty.
  std::vector<int64_t> slotReplica;
  /// take[i * W + src]: rows of src's expert group that replica i computes;
  /// chunkOffset[i * W + src]: the first of them in src's expert-grouped
  /// buffer.
  std::vector<int64_t> take, chunkOffset;
  /// Work vectors: the split's remaining quotas and rows left per source,
  /// slots filled so far per device, positions within the current
  /// destination's chunk per source.
  std::vector<int64_t> remaining, left, numbered, chunkPos;
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

/// The slot rule and the replica numbering, for a valid placement.
void numberReplicas(const Placement &placement, Scratch &s) {
  const int64_t W = placement.worldSize, S = placement.slotsPerDevice,
                E = placement.numExperts();
  s.replicaBegin.resize(E + 1);
  s.replicaBegin[0] = 0;
  for (int64_t e = 0; e < E; ++e)
    s.replicaBegin[e + 1] =
        s.replicaBegin[e] + static_cast<int64_t>(placement.replicas[e].size());
  s.replicaDevice.resize(s.replicaBegin[E]);
  s.replicaExpert.resize(s.replicaBegin[E]);
  s.slotReplica.assign(W * S, -1);
  s.numbered.assign(W, 0); // slots filled so far, per device
  for (int64_t e = 0; e < E; ++e) {
    int64_t *devices = &s.replicaDevice[s.replicaBegin[e]];
    std::copy(placement.replicas[e].begin(), placement.replicas[e].end(),
              devices);
    if (placement.replicas[e].size() > 1)
      std::sort(devices, devices + placement.replicas[e].size());
    // Experts in ascending id fill each device's slots in order: the slot
    // rule.
    for (int64_t i = s.replicaBegin[e]; i < s.replicaBegin[e + 1]; ++i) {
      int64_t d = s.replicaDevice[i];
      s.replicaExpert[i] = e;
      s.slotReplica[d * S + s.numbered[d]++] = i;
    }
  }
}

/// The split rule of docs/dispatch-plan.md for every expert, into s.take and
/// s.chunkOffset.
void splitTokens(const Placement &placement, std::span<const int64_t> counts,
                 Scratch &s) {
  const int64_t W = placement.worldSize, E = placement.numExperts();
  const int64_t numReplicas = s.replicaBegin[E];
  s.take.assign(numReplicas * W, 0);
  s.left.resize(W);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.replicaBegin[e];
    const int64_t R = s.replicaBegin[e + 1] - begin;
    int64_t *take = &s.take[begin * W]; // take[r * W + src] for this expert
    if (R == 1) {
      // The common case (plain expert parallelism): one replica takes all.
      for (int64_t src = 0; src < W; ++src)
        take[src] = counts[src * E + e];
      continue;
    }
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
      int64_t src = s.replicaDevice[begin + r];
      int64_t kept = std::min(s.left[src], s.remaining[r]);
      take[r * W + src] = kept;
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
        take[r * W + src] += moved;
        s.left[src] -= moved;
        s.remaining[r] -= moved;
      }
    }
  }

  // A source's rows of expert e are cut into chunks in ascending replica
  // (= destination device) order. Replicas are numbered expert by expert and
  // each expert's chunks add up to its whole group, so a running sum over all
  // replicas is the offset in the expert-grouped buffer.
  s.chunkOffset.resize(numReplicas * W);
  s.left.assign(W, 0); // now: the running offset per source
  for (int64_t i = 0; i < numReplicas; ++i) {
    for (int64_t src = 0; src < W; ++src) {
      s.chunkOffset[i * W + src] = s.left[src];
      s.left[src] += s.take[i * W + src];
    }
  }
}

/// Writes the exclusive prefix sums of `sizes` into `offsets` (same length)
/// and returns the total.
int64_t prefixSums(const std::vector<int64_t> &sizes,
                   std::vector<int64_t> &offsets) {
  int64_t sum = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    offsets[i] = sum;
    sum += sizes[i];
  }
  return sum;
}

/// Fills the segment lists of `plan`, whose counts and offsets are done:
/// every device's, or only those of device `segmentsFor`.
void buildSegments(Scratch &s, int64_t segmentsFor, DispatchPlan &plan) {
  const int64_t W = plan.worldSize, S = plan.slotsPerDevice,
                E = plan.numExperts;
  // Reserve the most each list can take (a source sends at most one segment
  // to each replica; a destination gets at most one per slot and source), so
  // that a fresh plan does not grow its lists step by step.
  for (int64_t d = 0; d < W; ++d) {
    if (segmentsFor == kAllDevices || segmentsFor == d) {
      plan.devices[d].sends.reserve(s.replicaBegin[E]);
      plan.devices[d].recvs.reserve(s.numbered[d] * W);
    }
  }

  // Segments. Walking (dst, slot, src) yields each destination's segments in
  // slot-major order and each source's in (dst, slot) order: the pack order.
  s.chunkPos.resize(W);
  for (int64_t dst = 0; dst < W; ++dst) {
    DevicePlan &to = plan.devices[dst];
    std::fill(s.chunkPos.begin(), s.chunkPos.end(), 0);
    for (int64_t slot = 0; slot < S; ++slot) {
      int64_t replica = s.slotReplica[dst * S + slot];
      if (replica < 0)
        continue;
      const int64_t *take = &s.take[replica * W];
      int64_t slotPos = to.slotOffsets[slot];
      for (int64_t src = 0; src < W; ++src) {
        int64_t rows = take[src];
        if (rows == 0)
          continue;
        if (segmentsFor == kAllDevices || segmentsFor == src ||
            segmentsFor == dst) {
          DevicePlan &from = plan.devices[src];
          Segment seg;
          seg.expert = s.replicaExpert[replica];
          seg.src = src;
          seg.dst = dst;
          seg.slot = slot;
          seg.rows = rows;
          seg.srcOffset = s.chunkOffset[replica * W + src];
          seg.sendOffset = from.sendOffsets[dst] + s.chunkPos[src];
          seg.recvOffset = to.recvOffsets[src] + s.chunkPos[src];
          seg.slotOffset = slotPos;
          if (segmentsFor == kAllDevices || segmentsFor == dst)
            to.recvs.push_back(seg);
          if (segmentsFor == kAllDevices || segmentsFor == src)
            from.sends.push_back(seg);
        }
        s.chunkPos[src] += rows;
        slotPos += rows;
      }
    }
  }
}

} // namespace

Status flexmoe::plan::computeDispatchPlan(const Placement &placement,
                                          std::span<const int64_t> counts,
                                          DispatchPlan &plan,
                                          std::string_view layerName,
                                          int64_t segmentsFor) {
  FLEXMOE_RETURN_IF_ERROR(validatePlacement(placement, layerName));
  const int64_t W = placement.worldSize, S = placement.slotsPerDevice,
                E = placement.numExperts();
  if (static_cast<int64_t>(counts.size()) != W * E)
    return errorf("counts of layer '", layerName, "' have ", counts.size(),
                  " entries but ", W, " devices x ", E, " experts need ",
                  W * E);
  FLEXMOE_RETURN_IF_ERROR(validateCounts(placement, counts, layerName));
  if (segmentsFor != kAllDevices && segmentsFor != kNoDevice &&
      (segmentsFor < 0 || segmentsFor >= W))
    return errorf("device ", segmentsFor, " is out of range [0, ", W,
                  ") for the plan of layer '", layerName, "'");

  Scratch &s = scratch();
  numberReplicas(placement, s);
  splitTokens(placement, counts, s);

  plan.worldSize = W;
  plan.slotsPerDevice = S;
  plan.numExperts = E;
  plan.devices.resize(W);
  for (DevicePlan &device : plan.devices) {
    device.sends.clear();
    device.recvs.clear();
    device.sendCounts.assign(W, 0);
    device.sendOffsets.resize(W);
    device.recvCounts.assign(W, 0);
    device.recvOffsets.resize(W);
    device.slotCounts.assign(S, 0);
    device.slotOffsets.resize(S);
  }

  // The all-to-all matrix, slot counts, and their prefix sums.
  plan.crossDeviceRows = 0;
  for (int64_t dst = 0; dst < W; ++dst) {
    DevicePlan &to = plan.devices[dst];
    for (int64_t slot = 0; slot < S; ++slot) {
      int64_t replica = s.slotReplica[dst * S + slot];
      if (replica < 0)
        continue;
      const int64_t *take = &s.take[replica * W];
      int64_t *recvCounts = to.recvCounts.data();
      int64_t slotRows = 0;
      for (int64_t src = 0; src < W; ++src) {
        recvCounts[src] += take[src];
        slotRows += take[src];
      }
      to.slotCounts[slot] = slotRows;
    }
    for (int64_t src = 0; src < W; ++src) {
      plan.devices[src].sendCounts[dst] = to.recvCounts[src];
      if (src != dst)
        plan.crossDeviceRows += to.recvCounts[src];
    }
  }
  for (DevicePlan &device : plan.devices) {
    device.sendRows = prefixSums(device.sendCounts, device.sendOffsets);
    device.recvRows = prefixSums(device.recvCounts, device.recvOffsets);
    prefixSums(device.slotCounts, device.slotOffsets);
  }

  if (segmentsFor != kNoDevice)
    buildSegments(s, segmentsFor, plan);

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
