//===- Placement.cpp - expert placements ----------------------------------===//
#include "runtime/plan/Placement.h"

#include <algorithm>

using namespace flexmoe;
using namespace flexmoe::plan;

namespace {
/// "layer 'moe1'", the way every message names the layer.
struct LayerRef {
  std::string_view name;
};
std::ostream &operator<<(std::ostream &os, LayerRef layer) {
  return os << "layer '" << layer.name << "'";
}
} // namespace

Status flexmoe::plan::validatePlacement(const Placement &placement,
                                        std::string_view layerName) {
  LayerRef layer{layerName};
  if (placement.worldSize < 1)
    return errorf("world size of ", layer, " is ", placement.worldSize,
                  " but must be at least 1");
  if (placement.worldSize > kMaxWorldSize)
    return errorf("world size of ", layer, " is ", placement.worldSize,
                  ", more than the ", kMaxWorldSize, " supported");
  if (placement.slotsPerDevice < 1)
    return errorf("slots per device of ", layer, " is ",
                  placement.slotsPerDevice, " but must be at least 1");
  if (placement.slotsPerDevice > kMaxSlotsPerDevice)
    return errorf("slots per device of ", layer, " is ",
                  placement.slotsPerDevice, ", more than the ",
                  kMaxSlotsPerDevice, " supported");
  if (placement.replicas.empty())
    return errorf(layer, " has no experts");

  // held[d]: experts on device d so far; lastExpert[d]: the last expert seen
  // on d, which finds a device listed twice for one expert in one pass.
  std::vector<int64_t> held(placement.worldSize, 0);
  std::vector<int64_t> lastExpert(placement.worldSize, -1);
  for (int64_t e = 0; e < placement.numExperts(); ++e) {
    const std::vector<int64_t> &devices = placement.replicas[e];
    if (devices.empty())
      return errorf("expert ", e, " of ", layer, " has no replica");
    for (int64_t d : devices) {
      if (d < 0 || d >= placement.worldSize)
        return errorf("device ", d, " of expert ", e, " in ", layer,
                      " is out of range [0, ", placement.worldSize, ")");
      if (lastExpert[d] == e)
        return errorf("expert ", e, " of ", layer, " lists device ", d,
                      " twice");
      lastExpert[d] = e;
      ++held[d];
    }
  }
  for (int64_t d = 0; d < placement.worldSize; ++d) {
    if (held[d] > placement.slotsPerDevice)
      return errorf("device ", d, " holds ", held[d], " experts of ", layer,
                    " but has ", placement.slotsPerDevice,
                    placement.slotsPerDevice == 1 ? " slot" : " slots");
  }
  return Status::ok();
}

Placement flexmoe::plan::roundRobinPlacement(int64_t numExperts,
                                             int64_t worldSize,
                                             int64_t slotsPerDevice) {
  Placement placement;
  placement.worldSize = worldSize;
  placement.slotsPerDevice = slotsPerDevice;
  if (slotsPerDevice == 0 && worldSize >= 1)
    placement.slotsPerDevice =
        std::max<int64_t>(1, (numExperts + worldSize - 1) / worldSize);
  placement.replicas.resize(std::max<int64_t>(0, numExperts));
  // With no devices there is nowhere to put an expert; validation says so.
  if (worldSize >= 1) {
    for (int64_t e = 0; e < numExperts; ++e)
      placement.replicas[e] = {e % worldSize};
  }
  return placement;
}
