//===- NcclCommunicator.h - the Communicator over NCCL ----------*- C++ -*-===//
//
// Collectives between GPUs with NCCL, one rank per GPU. The ranks find each
// other through a bootstrap Communicator (MPI): rank 0 makes the NCCL unique
// id and broadcasts it. Buffers are device memory, except allGather's and
// allReduceHost's spans, which are host memory (counts and scalars) and go
// through a device scratch buffer.
//
// Every operation is enqueued on the communicator's stream and waited for
// before it returns, polling the stream and NCCL's asynchronous error
// against a deadline, as MpiCommunicator does: a dead or hung peer becomes
// a Status ("rank R: all_reduce did not complete within T s ..."), the NCCL
// communicator is aborted, and every later call fails at once.
//
// A replica group (groupSum over a subset of the ranks) gets its own NCCL
// communicator, made on first use by the group's members alone: the lowest
// member makes a unique id and sends it to the others over the bootstrap.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_DEVICE_NCCLCOMMUNICATOR_H
#define FLEXMOE_RUNTIME_DEVICE_NCCLCOMMUNICATOR_H

#include "runtime/device/Communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <map>
#include <memory>
#include <optional>
#include <vector>

namespace flexmoe::device {

struct NcclCommunicatorOptions {
  /// How long one operation may wait for the other ranks;
  /// FLEXMOE_COMM_TIMEOUT (seconds) overrides it.
  double timeoutSeconds = 300;
};

class NcclCommunicator final : public Communicator {
public:
  /// Collective over `bootstrap`'s ranks: binds this rank to CUDA device
  /// `cudaDevice` and joins the NCCL communicator of all of them. The
  /// bootstrap must outlive the result (groupSum uses it).
  static StatusOr<std::unique_ptr<NcclCommunicator>>
  create(Communicator &bootstrap, int cudaDevice,
         NcclCommunicatorOptions options = {});
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator &) = delete;
  NcclCommunicator &operator=(const NcclCommunicator &) = delete;

  int64_t rank() const override { return rank_; }
  int64_t worldSize() const override { return size_; }
  cudaStream_t stream() const { return stream_; }

  Status allGather(std::span<const int64_t> local,
                   std::span<int64_t> all) override;
  Status allToAllV(const std::byte *send, std::span<const int64_t> sendCounts,
                   std::span<const int64_t> sendOffsets, std::byte *recv,
                   std::span<const int64_t> recvCounts,
                   std::span<const int64_t> recvOffsets,
                   size_t rowBytes) override;
  Status allReduce(float *data, int64_t count, ReduceOp op) override;
  /// ncclAllReduce on stream() and an event recorded after it; wait()
  /// polls the event (and NCCL's asynchronous error) against the deadline.
  /// Later operations on stream() run after it, as with allReduce.
  StatusOr<Request> startAllReduce(float *data, int64_t count,
                                   ReduceOp op) override;
  Status wait(Request request) override;
  /// NCCL progresses on its own: reports an asynchronous error, if any.
  Status progress() override;
  Status allReduceHost(std::span<double> data, ReduceOp op) override;
  Status groupSum(float *data, int64_t count,
                  std::span<const int32_t> ranks) override;
  Status broadcast(std::byte *data, size_t bytes, int64_t root) override;
  Status send(const std::byte *data, size_t bytes, int64_t dst,
              int tag) override;
  Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override;
  Status barrier() override;

private:
  NcclCommunicator(Communicator &bootstrap, int device, double timeout)
      : bootstrap_(bootstrap), device_(device), timeoutSeconds_(timeout) {}

  /// Waits for the stream; a timeout or NCCL error aborts every NCCL
  /// communicator and poisons this one.
  Status wait(const char *what);
  Status check(ncclResult_t result, const char *what);
  Status checkCuda(cudaError_t error, const char *what);
  Status usable() const;
  /// A device scratch buffer of at least `bytes` bytes.
  StatusOr<std::byte *> scratch(size_t bytes);
  StatusOr<ncclComm_t> groupComm(std::span<const int32_t> ranks);

  Communicator &bootstrap_;
  int device_;
  double timeoutSeconds_;
  int64_t rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  std::byte *scratch_ = nullptr;
  size_t scratchBytes_ = 0;
  std::map<std::vector<int32_t>, ncclComm_t> groups_;
  std::optional<Status> failure_;
  /// Non-blocking all-reduces not yet waited for, by request id.
  std::map<uint64_t, cudaEvent_t> pending_;
  uint64_t nextRequest_ = 1;
};

} // namespace flexmoe::device

#endif // FLEXMOE_RUNTIME_DEVICE_NCCLCOMMUNICATOR_H
