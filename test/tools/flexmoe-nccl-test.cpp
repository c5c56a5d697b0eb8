//===- flexmoe-nccl-test.cpp - NCCL collectives against the MPI ones ------===//
//
// A test driver for a GPU machine: every rank (under mpirun, or alone) binds
// one GPU, runs each collective of NcclCommunicator on device memory and the
// same collective of the bootstrap communicator (MPI, or the single-process
// one) on host memory, and checks that the two agree: all-gather, an
// all-to-all with uneven and zero counts, sum and mean all-reduces, a
// replica group, a broadcast from the last rank, a send/recv ring and a
// barrier. Prints "rank R: NCCL matches <backend>". Without a CUDA device it
// prints "no CUDA device" and exits 0 (lit marks the test unsupported).
//
//   [mpirun -np N] flexmoe-nccl-test
//
//===----------------------------------------------------------------------===//

#include "runtime/device/MpiCommunicator.h"
#include "runtime/device/NcclCommunicator.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

using namespace flexmoe;
using namespace flexmoe::device;

namespace {

[[noreturn]] void fail(int64_t rank, const std::string &message) {
  std::fprintf(stderr, "flexmoe-nccl-test: rank %lld: FAIL: %s\n",
               static_cast<long long>(rank), message.c_str());
  std::exit(1);
}

void check(int64_t rank, Status status, const char *what) {
  if (!status.isOk())
    fail(rank, std::string(what) + ": " + status.message());
}

/// Device copies of host vectors, for one collective.
template <typename T> struct DeviceVector {
  T *data = nullptr;
  size_t size = 0;
  DeviceVector(const std::vector<T> &host) : size(host.size()) {
    cudaMalloc(&data, std::max<size_t>(1, size) * sizeof(T));
    cudaMemcpy(data, host.data(), size * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceVector() { cudaFree(data); }
  std::vector<T> toHost() const {
    std::vector<T> host(size);
    cudaMemcpy(host.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }
};

void expectClose(int64_t rank, const std::vector<float> &nccl,
                 const std::vector<float> &reference, const char *what) {
  for (size_t i = 0; i < nccl.size(); ++i)
    if (std::fabs(nccl[i] - reference[i]) >
        1e-6f * std::max(1.0f, std::fabs(reference[i])))
      fail(rank, std::string(what) + ": element " + std::to_string(i) + " is " +
                     std::to_string(nccl[i]) + ", the reference " +
                     std::to_string(reference[i]));
}

} // namespace

int main(int argc, char **argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("flexmoe-nccl-test: no CUDA device\n");
    return 0;
  }
  std::unique_ptr<MpiEnvironment> mpi;
  std::unique_ptr<MpiCommunicator> mpiComm;
  SingleProcessCommunicator single;
  Communicator *host = &single;
  if (MpiEnvironment::launcherInEnvironment()) {
    StatusOr<std::unique_ptr<MpiEnvironment>> env =
        MpiEnvironment::init(&argc, &argv);
    check(0, env.isOk() ? Status::ok() : env.status(), "MPI");
    mpi = std::move(env).value();
    StatusOr<std::unique_ptr<MpiCommunicator>> made = MpiCommunicator::create();
    check(0, made.isOk() ? Status::ok() : made.status(), "MPI");
    mpiComm = std::move(made).value();
    host = mpiComm.get();
  }
  int64_t rank = host->rank(), size = host->worldSize();
  StatusOr<std::unique_ptr<NcclCommunicator>> created =
      NcclCommunicator::create(*host, static_cast<int>(rank % devices));
  check(rank, created.isOk() ? Status::ok() : created.status(), "create");
  NcclCommunicator &nccl = **created;

  // all_gather (host spans on both)
  std::vector<int64_t> local = {rank * 10, rank * 10 + 1, -rank};
  std::vector<int64_t> fromNccl(3 * size), fromHost(3 * size);
  check(rank, nccl.allGather(local, fromNccl), "nccl all_gather");
  check(rank, host->allGather(local, fromHost), "host all_gather");
  if (fromNccl != fromHost)
    fail(rank, "all_gather differs");

  // all_to_all: rank r sends (r + dst) % 3 rows of 5 floats to dst (zero
  // counts included), rows tagged with (src, dst, row).
  constexpr size_t kRow = 5;
  std::vector<int64_t> sendCounts(size), sendOffsets(size), recvCounts(size),
      recvOffsets(size);
  for (int64_t r = 0; r < size; ++r) {
    sendCounts[r] = (rank + r) % 3;
    recvCounts[r] = (r + rank) % 3;
  }
  std::exclusive_scan(sendCounts.begin(), sendCounts.end(), sendOffsets.begin(),
                      int64_t{0});
  std::exclusive_scan(recvCounts.begin(), recvCounts.end(), recvOffsets.begin(),
                      int64_t{0});
  int64_t sendRows = sendOffsets.back() + sendCounts.back();
  int64_t recvRows = recvOffsets.back() + recvCounts.back();
  std::vector<float> rows(sendRows * kRow);
  for (int64_t r = 0; r < size; ++r)
    for (int64_t i = 0; i < sendCounts[r]; ++i)
      for (size_t c = 0; c < kRow; ++c)
        rows[(sendOffsets[r] + i) * kRow + c] =
            static_cast<float>(rank * 1000 + r * 100 + i * 10 + c);
  DeviceVector<float> sendDev(rows),
      recvDev(std::vector<float>(recvRows * kRow));
  std::vector<float> recvHost(recvRows * kRow);
  check(rank,
        nccl.allToAllV(reinterpret_cast<std::byte *>(sendDev.data), sendCounts,
                       sendOffsets, reinterpret_cast<std::byte *>(recvDev.data),
                       recvCounts, recvOffsets, kRow * sizeof(float)),
        "nccl all_to_all");
  check(rank,
        host->allToAllV(reinterpret_cast<const std::byte *>(rows.data()),
                        sendCounts, sendOffsets,
                        reinterpret_cast<std::byte *>(recvHost.data()),
                        recvCounts, recvOffsets, kRow * sizeof(float)),
        "host all_to_all");
  expectClose(rank, recvDev.toHost(), recvHost, "all_to_all");

  // all_reduce, sum and mean; all_reduce_host
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    std::vector<float> values(1000);
    for (size_t i = 0; i < values.size(); ++i)
      values[i] = static_cast<float>(rank + 1) * 0.25f + static_cast<float>(i);
    DeviceVector<float> dev(values);
    check(rank, nccl.allReduce(dev.data, 1000, op), "nccl all_reduce");
    check(rank, host->allReduce(values.data(), 1000, op), "host all_reduce");
    expectClose(rank, dev.toHost(), values, "all_reduce");
  }
  std::vector<double> scalars = {1.5 * rank, -2.0}, hostScalars = scalars;
  check(rank, nccl.allReduceHost(scalars, ReduceOp::Sum), "nccl scalars");
  check(rank, host->allReduceHost(hostScalars, ReduceOp::Sum), "host scalars");
  if (scalars != hostScalars)
    fail(rank, "all_reduce_host differs");

  // A replica group of the even ranks.
  std::vector<int32_t> even;
  for (int32_t r = 0; r < size; r += 2)
    even.push_back(r);
  if (rank % 2 == 0) {
    std::vector<float> grads(64, static_cast<float>(rank + 1));
    DeviceVector<float> dev(grads);
    check(rank, nccl.groupSum(dev.data, 64, even), "nccl group_sum");
    check(rank, host->groupSum(grads.data(), 64, even), "host group_sum");
    expectClose(rank, dev.toHost(), grads, "group_sum");
  }

  // broadcast from the last rank, a ring of send/recv, a barrier
  std::vector<float> payload(33, static_cast<float>(rank));
  DeviceVector<float> dev(payload);
  check(rank,
        nccl.broadcast(reinterpret_cast<std::byte *>(dev.data),
                       payload.size() * sizeof(float), size - 1),
        "nccl broadcast");
  expectClose(rank, dev.toHost(),
              std::vector<float>(33, static_cast<float>(size - 1)),
              "broadcast");
  if (size > 1) {
    std::vector<float> token(16, static_cast<float>(rank));
    DeviceVector<float> out(token), in(std::vector<float>(16));
    int64_t next = (rank + 1) % size, prev = (rank + size - 1) % size;
    // Even ranks send first, odd ranks receive first: no cycle of waits.
    auto sendNext = [&] {
      check(rank,
            nccl.send(reinterpret_cast<std::byte *>(out.data), 64, next, 1),
            "nccl send");
    };
    auto recvPrev = [&] {
      check(rank,
            nccl.recv(reinterpret_cast<std::byte *>(in.data), 64, prev, 1),
            "nccl recv");
    };
    if (rank % 2 == 0) {
      sendNext();
      recvPrev();
    } else {
      recvPrev();
      sendNext();
    }
    expectClose(rank, in.toHost(),
                std::vector<float>(16, static_cast<float>(prev)), "ring");
  }
  check(rank, nccl.barrier(), "barrier");
  std::printf("rank %lld: NCCL matches %s\n", static_cast<long long>(rank),
              mpiComm ? "MPI" : "the single-process communicator");
  return 0;
}
