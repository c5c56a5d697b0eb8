//===- NcclCommunicator.cpp - the Communicator over NCCL ------------------===//

#include "runtime/device/NcclCommunicator.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

using namespace flexmoe;
using namespace flexmoe::device;

namespace {

constexpr int kGroupIdTag = 0x6e63; // "nc": a replica group's unique id

/// Non-blocking NCCL communicators: initialisation and collectives return at
/// once, and wait() polls them, so no call can block past the deadline.
ncclConfig_t nonBlockingConfig() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

/// Polls `comm` until its pending initialisation or call is no longer in
/// progress, or `deadline`.
ncclResult_t pollAsync(ncclComm_t comm,
                       std::chrono::steady_clock::time_point deadline,
                       bool &timedOut) {
  ncclResult_t state = ncclInProgress;
  timedOut = false;
  while (true) {
    ncclResult_t queried = ncclCommGetAsyncError(comm, &state);
    if (queried != ncclSuccess)
      return queried;
    if (state != ncclInProgress)
      return state;
    if (std::chrono::steady_clock::now() > deadline) {
      timedOut = true;
      return ncclInProgress;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

} // namespace

StatusOr<std::unique_ptr<NcclCommunicator>>
NcclCommunicator::create(Communicator &bootstrap, int cudaDevice,
                         NcclCommunicatorOptions options) {
  StatusOr<double> timeout = communicatorTimeout(options.timeoutSeconds);
  if (!timeout)
    return timeout.status();
  std::unique_ptr<NcclCommunicator> nccl(
      new NcclCommunicator(bootstrap, cudaDevice, *timeout));
  nccl->rank_ = bootstrap.rank();
  nccl->size_ = bootstrap.worldSize();
  FLEXMOE_RETURN_IF_ERROR(
      nccl->checkCuda(cudaSetDevice(cudaDevice), "cudaSetDevice"));
  FLEXMOE_RETURN_IF_ERROR(nccl->checkCuda(
      cudaStreamCreateWithFlags(&nccl->stream_, cudaStreamNonBlocking),
      "cudaStreamCreate"));

  // Rank 0's unique id for everyone, with whether making it worked: a rank
  // 0 failure must not leave the others initialising with garbage.
  struct {
    uint8_t ok;
    ncclUniqueId id;
  } handshake{};
  Status made = Status::ok();
  if (nccl->rank_ == 0) {
    made = nccl->check(ncclGetUniqueId(&handshake.id), "ncclGetUniqueId");
    handshake.ok = made.isOk() ? 1 : 0;
  }
  FLEXMOE_RETURN_IF_ERROR(bootstrap.broadcast(
      reinterpret_cast<std::byte *>(&handshake), sizeof handshake, 0));
  if (!made.isOk())
    return made;
  if (!handshake.ok)
    return Status::error("rank 0 could not make the NCCL unique id");

  ncclConfig_t config = nonBlockingConfig();
  FLEXMOE_RETURN_IF_ERROR(nccl->check(
      ncclCommInitRankConfig(&nccl->comm_, static_cast<int>(nccl->size_),
                             handshake.id, static_cast<int>(nccl->rank_),
                             &config),
      "ncclCommInitRank"));
  FLEXMOE_RETURN_IF_ERROR(nccl->wait("ncclCommInitRank"));
  return nccl;
}

NcclCommunicator::~NcclCommunicator() {
  // After a failure a peer may never answer: abort rather than destroy,
  // which would wait for it.
  bool failed = failure_.has_value();
  if (stream_ && !failed)
    cudaStreamSynchronize(stream_);
  for (auto &[ranks, group] : groups_)
    failed ? ncclCommAbort(group) : ncclCommDestroy(group);
  if (comm_)
    failed ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
  for (auto &[id, event] : pending_)
    cudaEventDestroy(event);
  if (scratch_)
    cudaFree(scratch_);
  if (stream_)
    cudaStreamDestroy(stream_);
}

Status NcclCommunicator::usable() const {
  if (failure_)
    return Status::error("the NCCL communicator failed earlier (" +
                         failure_->message() + ")");
  return Status::ok();
}

Status NcclCommunicator::check(ncclResult_t result, const char *what) {
  if (result == ncclSuccess || result == ncclInProgress)
    return Status::ok();
  const char *detail = comm_ ? ncclGetLastError(comm_) : nullptr;
  Status error = errorf(
      "rank ", rank_, ": ", what, ": ", ncclGetErrorString(result),
      detail && *detail ? std::string(" (") + detail + ")" : std::string());
  failure_ = error;
  return error;
}

Status NcclCommunicator::checkCuda(cudaError_t error, const char *what) {
  if (error == cudaSuccess)
    return Status::ok();
  Status status =
      errorf("rank ", rank_, ": ", what, ": ", cudaGetErrorString(error));
  failure_ = status;
  return status;
}

Status NcclCommunicator::wait(const char *what) {
  auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(timeoutSeconds_));
  auto timeout = [&]() {
    Status error =
        errorf("rank ", rank_, ": ", what, " did not complete within ",
               timeoutSeconds_, " s (another rank may have failed)");
    failure_ = error;
    return error;
  };
  if (comm_) {
    bool timedOut = false;
    ncclResult_t state = pollAsync(comm_, deadline, timedOut);
    if (timedOut)
      return timeout();
    FLEXMOE_RETURN_IF_ERROR(check(state, what));
  }
  for (auto &[ranks, group] : groups_) {
    bool timedOut = false;
    ncclResult_t state = pollAsync(group, deadline, timedOut);
    if (timedOut)
      return timeout();
    FLEXMOE_RETURN_IF_ERROR(check(state, what));
  }
  if (!stream_)
    return Status::ok();
  while (true) {
    cudaError_t query = cudaStreamQuery(stream_);
    if (query == cudaSuccess)
      return Status::ok();
    if (query != cudaErrorNotReady)
      return checkCuda(query, what);
    // A peer that never posts its half leaves the kernel spinning: NCCL's
    // asynchronous error says so, else the deadline does.
    ncclResult_t state = ncclSuccess;
    if (comm_ && ncclCommGetAsyncError(comm_, &state) == ncclSuccess &&
        state != ncclSuccess && state != ncclInProgress)
      return check(state, what);
    if (std::chrono::steady_clock::now() > deadline)
      return timeout();
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

StatusOr<std::byte *> NcclCommunicator::scratch(size_t bytes) {
  if (bytes <= scratchBytes_)
    return scratch_;
  if (scratch_)
    FLEXMOE_RETURN_IF_ERROR(checkCuda(cudaFree(scratch_), "cudaFree"));
  scratch_ = nullptr;
  scratchBytes_ = 0;
  void *memory = nullptr;
  FLEXMOE_RETURN_IF_ERROR(checkCuda(cudaMalloc(&memory, bytes), "cudaMalloc"));
  scratch_ = static_cast<std::byte *>(memory);
  scratchBytes_ = bytes;
  return scratch_;
}

Status NcclCommunicator::allGather(std::span<const int64_t> local,
                                   std::span<int64_t> all) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (all.size() != local.size() * static_cast<size_t>(size_))
    return errorf("all_gather: ", all.size(), " slots for ", local.size(),
                  " values from each of ", size_, " ranks");
  if (local.empty())
    return Status::ok();
  size_t bytes = local.size_bytes();
  StatusOr<std::byte *> buffer = scratch(all.size_bytes());
  if (!buffer)
    return buffer.status();
  std::byte *mine = *buffer + rank_ * bytes;
  FLEXMOE_RETURN_IF_ERROR(
      checkCuda(cudaMemcpyAsync(mine, local.data(), bytes,
                                cudaMemcpyHostToDevice, stream_),
                "all_gather (copy in)"));
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclAllGather(mine, *buffer, local.size(), ncclInt64, comm_, stream_),
      "all_gather"));
  FLEXMOE_RETURN_IF_ERROR(
      checkCuda(cudaMemcpyAsync(all.data(), *buffer, all.size_bytes(),
                                cudaMemcpyDeviceToHost, stream_),
                "all_gather (copy out)"));
  return wait("all_gather");
}

Status NcclCommunicator::allToAllV(const std::byte *send,
                                   std::span<const int64_t> sendCounts,
                                   std::span<const int64_t> sendOffsets,
                                   std::byte *recv,
                                   std::span<const int64_t> recvCounts,
                                   std::span<const int64_t> recvOffsets,
                                   size_t rowBytes) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  size_t ranks = static_cast<size_t>(size_);
  if (sendCounts.size() != ranks || sendOffsets.size() != ranks ||
      recvCounts.size() != ranks || recvOffsets.size() != ranks)
    return errorf("all_to_all: count tables for ", sendCounts.size(), "/",
                  recvCounts.size(), " ranks at world size ", size_);
  for (size_t r = 0; r < ranks; ++r)
    if (sendCounts[r] < 0 || sendOffsets[r] < 0 || recvCounts[r] < 0 ||
        recvOffsets[r] < 0)
      return errorf("all_to_all: a negative count or offset for rank ", r);
  // One group of send/recv pairs: NCCL's all-to-all with variable counts.
  FLEXMOE_RETURN_IF_ERROR(check(ncclGroupStart(), "all_to_all"));
  for (size_t r = 0; r < ranks; ++r) {
    int peer = static_cast<int>(r);
    if (sendCounts[r] > 0)
      FLEXMOE_RETURN_IF_ERROR(check(ncclSend(send + sendOffsets[r] * rowBytes,
                                             sendCounts[r] * rowBytes,
                                             ncclUint8, peer, comm_, stream_),
                                    "all_to_all (send)"));
    if (recvCounts[r] > 0)
      FLEXMOE_RETURN_IF_ERROR(check(ncclRecv(recv + recvOffsets[r] * rowBytes,
                                             recvCounts[r] * rowBytes,
                                             ncclUint8, peer, comm_, stream_),
                                    "all_to_all (recv)"));
  }
  FLEXMOE_RETURN_IF_ERROR(check(ncclGroupEnd(), "all_to_all"));
  return wait("all_to_all");
}

Status NcclCommunicator::allReduce(float *data, int64_t count, ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (count <= 0)
    return Status::ok();
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat,
                    op == ReduceOp::Mean ? ncclAvg : ncclSum, comm_, stream_),
      "all_reduce"));
  return wait("all_reduce");
}

StatusOr<Request> NcclCommunicator::startAllReduce(float *data, int64_t count,
                                                   ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (count < 0)
    return errorf("rank ", rank_, ": all_reduce of ", count, " elements");
  if (count == 0)
    return Request{};
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat,
                    op == ReduceOp::Mean ? ncclAvg : ncclSum, comm_, stream_),
      "all_reduce"));
  // A non-blocking communicator may still be enqueuing the kernel: the
  // event must be recorded after it.
  bool timedOut = false;
  ncclResult_t state = pollAsync(
      comm_,
      std::chrono::steady_clock::now() +
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double>(timeoutSeconds_)),
      timedOut);
  if (timedOut) {
    failure_ =
        errorf("rank ", rank_, ": all_reduce could not be enqueued within ",
               timeoutSeconds_, " s (another rank may have failed)");
    return *failure_;
  }
  FLEXMOE_RETURN_IF_ERROR(check(state, "all_reduce"));
  cudaEvent_t event = nullptr;
  FLEXMOE_RETURN_IF_ERROR(
      checkCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                "all_reduce (event)"));
  if (Status recorded =
          checkCuda(cudaEventRecord(event, stream_), "all_reduce (event)");
      !recorded.isOk()) {
    cudaEventDestroy(event);
    return recorded;
  }
  uint64_t id = nextRequest_++;
  pending_.emplace(id, event);
  return Request{id};
}

Status NcclCommunicator::wait(Request request) {
  if (request.id == 0)
    return Status::ok();
  auto it = pending_.find(request.id);
  if (it == pending_.end())
    return errorf("rank ", rank_, ": wait for all_reduce request ", request.id,
                  ", which was never started or was already waited for");
  FLEXMOE_RETURN_IF_ERROR(usable());
  auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(timeoutSeconds_));
  while (true) {
    cudaError_t query = cudaEventQuery(it->second);
    if (query == cudaSuccess)
      break;
    if (query != cudaErrorNotReady)
      return checkCuda(query, "all_reduce");
    // As in wait(what): a peer that never comes shows as NCCL's
    // asynchronous error or as the deadline.
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &state) == ncclSuccess &&
        state != ncclSuccess && state != ncclInProgress)
      return check(state, "all_reduce");
    if (std::chrono::steady_clock::now() > deadline) {
      failure_ = errorf("rank ", rank_, ": all_reduce did not complete within ",
                        timeoutSeconds_, " s (another rank may have failed)");
      return *failure_;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  cudaEventDestroy(it->second);
  pending_.erase(it);
  return Status::ok();
}

Status NcclCommunicator::progress() {
  FLEXMOE_RETURN_IF_ERROR(usable());
  ncclResult_t state = ncclSuccess;
  FLEXMOE_RETURN_IF_ERROR(
      check(ncclCommGetAsyncError(comm_, &state), "all_reduce"));
  return check(state, "all_reduce");
}

Status NcclCommunicator::allReduceHost(std::span<double> data, ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (data.empty())
    return Status::ok();
  StatusOr<std::byte *> buffer = scratch(data.size_bytes());
  if (!buffer)
    return buffer.status();
  FLEXMOE_RETURN_IF_ERROR(
      checkCuda(cudaMemcpyAsync(*buffer, data.data(), data.size_bytes(),
                                cudaMemcpyHostToDevice, stream_),
                "all_reduce (copy in)"));
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclAllReduce(*buffer, *buffer, data.size(), ncclFloat64,
                    op == ReduceOp::Mean ? ncclAvg : ncclSum, comm_, stream_),
      "all_reduce"));
  FLEXMOE_RETURN_IF_ERROR(
      checkCuda(cudaMemcpyAsync(data.data(), *buffer, data.size_bytes(),
                                cudaMemcpyDeviceToHost, stream_),
                "all_reduce (copy out)"));
  return wait("all_reduce");
}

StatusOr<ncclComm_t>
NcclCommunicator::groupComm(std::span<const int32_t> ranks) {
  std::vector<int32_t> key(ranks.begin(), ranks.end());
  if (auto found = groups_.find(key); found != groups_.end())
    return found->second;
  if (!std::is_sorted(key.begin(), key.end()) ||
      std::adjacent_find(key.begin(), key.end()) != key.end() ||
      key.front() < 0 || key.back() >= size_)
    return errorf("replica group of ", key.size(),
                  " ranks must list distinct ranks in [0, ", size_,
                  ") in ascending order");
  auto self = std::find(key.begin(), key.end(), static_cast<int32_t>(rank_));
  if (self == key.end())
    return errorf("rank ", rank_, " is not in the replica group it sums");
  // The lowest member makes the group's id and hands it to the others over
  // the bootstrap: only the members take part.
  ncclUniqueId id{};
  auto *idBytes = reinterpret_cast<std::byte *>(&id);
  if (rank_ == key.front()) {
    FLEXMOE_RETURN_IF_ERROR(check(ncclGetUniqueId(&id), "ncclGetUniqueId"));
    for (size_t i = 1; i < key.size(); ++i)
      FLEXMOE_RETURN_IF_ERROR(
          bootstrap_.send(idBytes, sizeof id, key[i], kGroupIdTag));
  } else {
    FLEXMOE_RETURN_IF_ERROR(
        bootstrap_.recv(idBytes, sizeof id, key.front(), kGroupIdTag));
  }
  ncclComm_t group = nullptr;
  ncclConfig_t config = nonBlockingConfig();
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclCommInitRankConfig(&group, static_cast<int>(key.size()), id,
                             static_cast<int>(self - key.begin()), &config),
      "replica group ncclCommInitRank"));
  groups_.emplace(key, group);
  FLEXMOE_RETURN_IF_ERROR(wait("replica group set-up"));
  return group;
}

Status NcclCommunicator::groupSum(float *data, int64_t count,
                                  std::span<const int32_t> ranks) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (ranks.size() == 1 && ranks[0] == rank_)
    return Status::ok();
  if (ranks.empty())
    return Status::error("group_sum over an empty replica group");
  StatusOr<ncclComm_t> group = groupComm(ranks);
  if (!group)
    return group.status();
  if (count <= 0)
    return Status::ok();
  FLEXMOE_RETURN_IF_ERROR(
      check(ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat,
                          ncclSum, *group, stream_),
            "group_sum"));
  return wait("group_sum");
}

Status NcclCommunicator::broadcast(std::byte *data, size_t bytes,
                                   int64_t root) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (root < 0 || root >= size_)
    return errorf("broadcast from rank ", root, " at world size ", size_);
  if (bytes == 0)
    return Status::ok();
  FLEXMOE_RETURN_IF_ERROR(
      check(ncclBroadcast(data, data, bytes, ncclUint8, static_cast<int>(root),
                          comm_, stream_),
            "broadcast"));
  return wait("broadcast");
}

Status NcclCommunicator::send(const std::byte *data, size_t bytes, int64_t dst,
                              int tag) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  // NCCL has no tags: messages between two ranks match in order.
  if (dst < 0 || dst >= size_ || dst == rank_ || tag < 0)
    return errorf("send to rank ", dst, " (tag ", tag, ") from rank ", rank_,
                  " at world size ", size_);
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclSend(data, bytes, ncclUint8, static_cast<int>(dst), comm_, stream_),
      "send"));
  return wait("send");
}

Status NcclCommunicator::recv(std::byte *data, size_t bytes, int64_t src,
                              int tag) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (src < 0 || src >= size_ || src == rank_ || tag < 0)
    return errorf("recv from rank ", src, " (tag ", tag, ") on rank ", rank_,
                  " at world size ", size_);
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclRecv(data, bytes, ncclUint8, static_cast<int>(src), comm_, stream_),
      "recv"));
  return wait("recv");
}

Status NcclCommunicator::barrier() {
  FLEXMOE_RETURN_IF_ERROR(usable());
  StatusOr<std::byte *> buffer = scratch(sizeof(float));
  if (!buffer)
    return buffer.status();
  FLEXMOE_RETURN_IF_ERROR(check(
      ncclAllReduce(*buffer, *buffer, 1, ncclFloat, ncclSum, comm_, stream_),
      "barrier"));
  return wait("barrier");
}
