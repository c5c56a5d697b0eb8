//===- Communicator.cpp - the single-process communicator -----------------===//

#include "runtime/device/Communicator.h"

#include <cstdlib>
#include <cstring>

using namespace flexmoe;
using namespace flexmoe::device;

StatusOr<double> flexmoe::device::communicatorTimeout(double configured) {
  double timeout = configured;
  if (const char *env = std::getenv("FLEXMOE_COMM_TIMEOUT")) {
    char *end = nullptr;
    timeout = std::strtod(env, &end);
    if (end == env || *end != '\0' || !(timeout > 0))
      return errorf("FLEXMOE_COMM_TIMEOUT must be a positive number of "
                    "seconds, got '",
                    env, "'");
  }
  if (!(timeout > 0))
    return errorf("the communicator timeout must be positive, got ", timeout);
  return timeout;
}

StatusOr<Request> Communicator::startAllReduce(float *data, int64_t count,
                                               ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(allReduce(data, count, op));
  return Request{};
}

Status Communicator::wait(Request request) {
  // Only completed requests exist without an asynchronous implementation.
  if (request.id != 0)
    return errorf("rank ", rank(), ": wait for unknown request ", request.id);
  return Status::ok();
}

Status SingleProcessCommunicator::allGather(std::span<const int64_t> local,
                                            std::span<int64_t> all) {
  if (all.size() != local.size())
    return errorf("all_gather: ", all.size(), " slots for ", local.size(),
                  " values at world size 1");
  std::copy(local.begin(), local.end(), all.begin());
  return Status::ok();
}

Status SingleProcessCommunicator::allToAllV(
    const std::byte *send, std::span<const int64_t> sendCounts,
    std::span<const int64_t> sendOffsets, std::byte *recv,
    std::span<const int64_t> recvCounts, std::span<const int64_t> recvOffsets,
    size_t rowBytes) {
  if (sendCounts.size() != 1 || sendOffsets.size() != 1 ||
      recvCounts.size() != 1 || recvOffsets.size() != 1)
    return errorf("all_to_all: count tables for ", sendCounts.size(),
                  " ranks at world size 1");
  if (sendCounts[0] != recvCounts[0])
    return errorf("all_to_all: rank 0 sends ", sendCounts[0],
                  " rows to itself but expects ", recvCounts[0]);
  if (sendCounts[0] > 0)
    std::memmove(recv + recvOffsets[0] * rowBytes,
                 send + sendOffsets[0] * rowBytes, sendCounts[0] * rowBytes);
  return Status::ok();
}

Status SingleProcessCommunicator::allReduce(float *, int64_t, ReduceOp) {
  // The sum and the mean over one rank are the value itself.
  return Status::ok();
}

Status SingleProcessCommunicator::allReduceHost(std::span<double>, ReduceOp) {
  return Status::ok();
}

Status SingleProcessCommunicator::groupSum(float *, int64_t,
                                           std::span<const int32_t> ranks) {
  if (ranks.size() != 1 || ranks[0] != 0)
    return errorf("replica group of ", ranks.size(), " ranks at world size 1");
  return Status::ok();
}

Status SingleProcessCommunicator::broadcast(std::byte *, size_t, int64_t root) {
  if (root != 0)
    return errorf("broadcast from rank ", root, " at world size 1");
  return Status::ok();
}

Status SingleProcessCommunicator::send(const std::byte *, size_t, int64_t dst,
                                       int) {
  // A send to itself would need a matching recv in the same thread: no
  // caller does that, and a world of one has no one else to send to.
  return errorf("send to rank ", dst, " at world size 1");
}

Status SingleProcessCommunicator::recv(std::byte *, size_t, int64_t src, int) {
  return errorf("recv from rank ", src, " at world size 1");
}
