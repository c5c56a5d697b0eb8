//===- Reorder.cpp - move rows as a dispatch plan says, on the host -------===//
#include "runtime/plan/Reorder.h"

#include <cstring>

using namespace flexmoe;
using namespace flexmoe::plan;

namespace {

/// Which two of a segment's offsets a copy reads from and writes to.
using Offset = int64_t Segment::*;

/// Copies every segment's rows from `from` at seg.*fromOffset to `to` at
/// seg.*toOffset, after checking both buffers hold `rows` rows.
Status copySegments(const std::vector<Segment> &segments, int64_t rows,
                    size_t rowBytes, std::span<const std::byte> from,
                    Offset fromOffset, std::span<std::byte> to, Offset toOffset,
                    const char *what) {
  size_t bytes = static_cast<size_t>(rows) * rowBytes;
  if (from.size() != bytes || to.size() != bytes)
    return errorf(what, ": buffers of ", from.size(), " and ", to.size(),
                  " bytes for ", rows, " rows of ", rowBytes, " bytes");
  // A plan whose segments were computed for another device (segmentsFor) has
  // this device's counts but no segments: copying nothing would leave
  // garbage behind.
  if (rows > 0 && segments.empty())
    return errorf(what, ": the plan has no segments for this device (was it "
                        "computed for another device only?)");
  for (const Segment &seg : segments) {
    // The offsets tile [0, rows); a plan from computeDispatchPlan never trips
    // this, one edited by hand might.
    auto outside = [&](int64_t offset) {
      return seg.rows < 0 || offset < 0 || offset > rows - seg.rows;
    };
    if (outside(seg.*fromOffset) || outside(seg.*toOffset))
      return errorf(what, ": segment of expert ", seg.expert, " from device ",
                    seg.src, " to device ", seg.dst, " lies outside the ", rows,
                    " rows");
    std::memcpy(to.data() + static_cast<size_t>(seg.*toOffset) * rowBytes,
                from.data() + static_cast<size_t>(seg.*fromOffset) * rowBytes,
                static_cast<size_t>(seg.rows) * rowBytes);
  }
  return Status::ok();
}

} // namespace

Status flexmoe::plan::packDispatch(const DevicePlan &device, size_t rowBytes,
                                   std::span<const std::byte> routed,
                                   std::span<std::byte> send) {
  return copySegments(device.sends, device.sendRows, rowBytes, routed,
                      &Segment::srcOffset, send, &Segment::sendOffset,
                      "packing for dispatch");
}

Status flexmoe::plan::unpackDispatch(const DevicePlan &device, size_t rowBytes,
                                     std::span<const std::byte> recv,
                                     std::span<std::byte> slotMajor) {
  return copySegments(device.recvs, device.recvRows, rowBytes, recv,
                      &Segment::recvOffset, slotMajor, &Segment::slotOffset,
                      "unpacking after dispatch");
}

Status flexmoe::plan::packCombine(const DevicePlan &device, size_t rowBytes,
                                  std::span<const std::byte> slotMajor,
                                  std::span<std::byte> recv) {
  return copySegments(device.recvs, device.recvRows, rowBytes, slotMajor,
                      &Segment::slotOffset, recv, &Segment::recvOffset,
                      "packing for combine");
}

Status flexmoe::plan::unpackCombine(const DevicePlan &device, size_t rowBytes,
                                    std::span<const std::byte> send,
                                    std::span<std::byte> routed) {
  return copySegments(device.sends, device.sendRows, rowBytes, send,
                      &Segment::sendOffset, routed, &Segment::srcOffset,
                      "unpacking after combine");
}
