//===- Communicator.h - collectives between the ranks of a run --*- C++ -*-===//
//
// The collectives a program's communication instructions need, over device
// memory. The executor computes the dispatch plan and runs the pack/unpack
// reorders (runtime/plan); a communicator only moves bytes and reduces.
// SingleProcessCommunicator is the world-size-1 implementation (local
// copies and identities); an MPI or NCCL communicator implements the same
// interface for more ranks.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_DEVICE_COMMUNICATOR_H
#define FLEXMOE_RUNTIME_DEVICE_COMMUNICATOR_H

#include "runtime/support/Status.h"

#include <cstddef>
#include <cstdint>
#include <span>

namespace flexmoe::device {

enum class ReduceOp { Sum, Mean };

/// A non-blocking collective started by startAllReduce: its buffer must not
/// be touched until wait() returns for it. Id 0 is one that completed when
/// it started.
struct Request {
  uint64_t id = 0;
};

/// How long one collective of a multi-process communicator may wait for the
/// other ranks: FLEXMOE_COMM_TIMEOUT (seconds) when set, else `configured`.
/// Either must be a positive number.
StatusOr<double> communicatorTimeout(double configured);

class Communicator {
public:
  virtual ~Communicator() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t worldSize() const = 0;

  /// all[r * local.size() + i] = rank r's local[i] (host memory): how every
  /// rank learns every rank's per-expert token counts.
  virtual Status allGather(std::span<const int64_t> local,
                           std::span<int64_t> all) = 0;

  /// MPI_Alltoallv over rows of `rowBytes` bytes: sendCounts[r] rows from
  /// send at sendOffsets[r] go to rank r, which receives them into recv at
  /// its recvOffsets[this rank]. Counts and offsets count rows.
  virtual Status allToAllV(const std::byte *send,
                           std::span<const int64_t> sendCounts,
                           std::span<const int64_t> sendOffsets,
                           std::byte *recv, std::span<const int64_t> recvCounts,
                           std::span<const int64_t> recvOffsets,
                           size_t rowBytes) = 0;

  /// In place over every rank's `data`.
  virtual Status allReduce(float *data, int64_t count, ReduceOp op) = 0;

  /// allReduce, started without waiting: every rank starts the same
  /// non-blocking collectives in the same order (like blocking ones, among
  /// which they may sit), and each must be waited for exactly once, before
  /// `data` is read or written again. The result equals allReduce's. This
  /// default runs allReduce and returns a completed request.
  virtual StatusOr<Request> startAllReduce(float *data, int64_t count,
                                           ReduceOp op);
  /// Blocks until `request` completes (bounded by the communicator's
  /// timeout, counted from this call, as for the blocking collectives).
  virtual Status wait(Request request);
  /// Lets outstanding requests advance without blocking (MPI progresses
  /// non-blocking collectives only inside its calls): call it now and then
  /// while requests are in flight.
  virtual Status progress() { return Status::ok(); }

  /// In place over host scalars (losses, squared norms), in double.
  virtual Status allReduceHost(std::span<double> data, ReduceOp op) = 0;

  /// Sums `data` (in place) over the ranks in `ranks` (ascending, this rank
  /// among them): one replica group of moe.replica_grad_sync.
  virtual Status groupSum(float *data, int64_t count,
                          std::span<const int32_t> ranks) = 0;

  /// `bytes` bytes from rank `root` to every rank (host memory).
  virtual Status broadcast(std::byte *data, size_t bytes, int64_t root) = 0;

  /// Point to point (expert migration, checkpoint gathers): a matching
  /// recv on rank `dst` with the same tag and size.
  virtual Status send(const std::byte *data, size_t bytes, int64_t dst,
                      int tag) = 0;
  virtual Status recv(std::byte *data, size_t bytes, int64_t src, int tag) = 0;

  virtual Status barrier() = 0;
};

/// World size 1: every collective is a local copy or an identity.
class SingleProcessCommunicator final : public Communicator {
public:
  int64_t rank() const override { return 0; }
  int64_t worldSize() const override { return 1; }
  Status allGather(std::span<const int64_t> local,
                   std::span<int64_t> all) override;
  Status allToAllV(const std::byte *send, std::span<const int64_t> sendCounts,
                   std::span<const int64_t> sendOffsets, std::byte *recv,
                   std::span<const int64_t> recvCounts,
                   std::span<const int64_t> recvOffsets,
                   size_t rowBytes) override;
  Status allReduce(float *data, int64_t count, ReduceOp op) override;
  Status allReduceHost(std::span<double> data, ReduceOp op) override;
  Status groupSum(float *data, int64_t count,
                  std::span<const int32_t> ranks) override;
  Status broadcast(std::byte *data, size_t bytes, int64_t root) override;
  Status send(const std::byte *data, size_t bytes, int64_t dst,
              int tag) override;
  Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override;
  Status barrier() override { return Status::ok(); }
};

} // namespace flexmoe::device

#endif // FLEXMOE_RUNTIME_DEVICE_COMMUNICATOR_H
