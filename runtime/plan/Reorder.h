//===- Reorder.h - move rows as a dispatch plan says, on the host -*- C++
//-*-===//
//
// The copies around a layer's all-to-all, for host memory (the CPU backend
// and tests); a GPU backend runs the same segment lists in a kernel. Rows are
// opaque: rowBytes bytes each. See docs/dispatch-plan.md, "Using the plan".
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_PLAN_REORDER_H
#define FLEXMOE_RUNTIME_PLAN_REORDER_H

#include "runtime/plan/DispatchPlan.h"

#include <cstddef>
#include <span>

namespace flexmoe::plan {

/// Dispatch, before the all-to-all: the expert-grouped rows of moe.dispatch
/// (device.sendRows rows) into the send buffer (as many rows).
Status packDispatch(const DevicePlan &device, size_t rowBytes,
                    std::span<const std::byte> routed,
                    std::span<std::byte> send);

/// Dispatch, after the all-to-all: the receive buffer (device.recvRows rows)
/// into the slot-major buffer moe.experts reads (as many rows).
Status unpackDispatch(const DevicePlan &device, size_t rowBytes,
                      std::span<const std::byte> recv,
                      std::span<std::byte> slotMajor);

/// Combine, before the all-to-all: the inverse of unpackDispatch.
Status packCombine(const DevicePlan &device, size_t rowBytes,
                   std::span<const std::byte> slotMajor,
                   std::span<std::byte> recv);

/// Combine, after the all-to-all: the inverse of packDispatch, back to the
/// expert-grouped order.
Status unpackCombine(const DevicePlan &device, size_t rowBytes,
                     std::span<const std::byte> send,
                     std::span<std::byte> routed);

} // namespace flexmoe::plan

#endif // FLEXMOE_RUNTIME_PLAN_REORDER_H
