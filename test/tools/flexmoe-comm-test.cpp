//===- flexmoe-comm-test.cpp - the MPI communicator under mpirun (tests) --===//
//
// A test driver run under mpirun (any world size). By default it runs every
// collective of MpiCommunicator with known values, checks the results on
// every rank and prints "rank R: all collectives correct". Modes:
//
//   --die-rank R    rank R exits(3) before a collective; the others must end
//                   with a clear message in bounded time
//   --hang-rank R [--hang-before all_gather|group_sum]
//                   rank R sleeps forever instead of joining the all-gather
//                   (or the replica group sums); the others time out
//                   (FLEXMOE_COMM_TIMEOUT) and abort the job
//   --hang-at-setup R
//                   rank R sleeps forever before creating the communicator;
//                   the others time out in its set-up and abort the job
//   --reinit        initialises MPI, finalises it and initialises it again:
//                   a clear error, exit code 2 (run it without mpirun)
//   --mismatched-recv
//                   rank 1 receives 16 bytes where rank 0 sends 8, then 8
//                   where it sends 16: a short message and an MPI error
//                   (truncation), each a clear Status; the second poisons the
//                   communicator, so a following barrier fails at once
//   --executor W.fmoe --reference W1.fmoe [--steps N] [--tolerance X]
//                   trains the world-size-P program W for N steps, each rank
//                   on its share of one global batch, and checks every loss
//                   against the world-size-1 program W1 on the whole batch
//                   (relative difference at most X, default 1e-5)
//   --overlap W.fmoe [--steps N] [--tolerance X]
//                   trains W twice side by side, with the executor's
//                   communication overlap on and off, and checks that losses,
//                   gradient norms, parameters and optimizer state agree
//                   (relative difference at most X, default 0: bitwise) and
//                   that the overlapped run had all-reduces in flight
//   --guarded W.fmoe [--steps N] [--tolerance X]
//                   the same comparison between the CPU device and the
//                   guarded one of test/unit/executor/GuardedDevice.h (no
//                   host access to the arena: the executor's GPU paths, with
//                   every collective staged through host memory)
//
// --hang-before also takes async_all_reduce: rank R never starts the
// non-blocking all-reduces, and the others time out waiting for them.
//
//===----------------------------------------------------------------------===//

#include "../unit/executor/GuardedDevice.h"
#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/device/MpiCommunicator.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Dataset.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace flexmoe;
using device::MpiCommunicator;
using device::ReduceOp;

namespace {

/// Collects the mismatches one rank finds.
class Checker {
public:
  explicit Checker(int64_t rank) : rank_(rank) {}
  template <typename... Parts> void fail(const Parts &...parts) {
    std::ostringstream os;
    os << "rank " << rank_ << ": ";
    (os << ... << parts);
    std::fprintf(stderr, "flexmoe-comm-test: %s\n", os.str().c_str());
    ++failures_;
  }
  /// A Status that must be ok; an error here poisons the communicator, so
  /// the run cannot go on.
  void ok(const Status &status, MpiCommunicator &comm) {
    if (status.isOk())
      return;
    std::fprintf(stderr, "flexmoe-comm-test: %s\n", status.message().c_str());
    comm.abort(2);
  }
  int failures() const { return failures_; }

private:
  int64_t rank_;
  int failures_ = 0;
};

void testAllGather(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  std::vector<int64_t> local = {r * 10, r * 10 + 1, r * 10 + 2};
  std::vector<int64_t> all(3 * p, -1);
  check.ok(comm.allGather(local, all), comm);
  for (int64_t q = 0; q < p; ++q)
    for (int64_t i = 0; i < 3; ++i)
      if (all[q * 3 + i] != q * 10 + i)
        check.fail("all_gather: slot ", q * 3 + i, " is ", all[q * 3 + i],
                   ", expected ", q * 10 + i);
  // Nothing from anyone.
  std::vector<int64_t> none;
  check.ok(comm.allGather(none, none), comm);
  // A wrong table size is the caller's error, caught before any MPI call.
  std::vector<int64_t> small(1);
  Status wrong = comm.allGather(local, small);
  if (wrong.isOk() ||
      wrong.message().find("slots for 3 values") == std::string::npos)
    check.fail("all_gather with too few slots did not fail clearly");
}

/// Rows of 5 bytes (an odd size, to exercise the row datatype); rank r sends
/// (r + 2q) % 3 rows to rank q, so some pairs send nothing. Offsets leave a
/// gap row before each block and the receive side stores blocks in reverse
/// rank order, so offsets matter.
void testAllToAllV(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  constexpr size_t rowBytes = 5;
  auto rows = [](int64_t from, int64_t to) { return (from + 2 * to) % 3; };
  auto byteOf = [](int64_t from, int64_t to, int64_t row, size_t b) {
    return static_cast<std::byte>((from * 31 + to * 7 + row * 3 + b) & 0xff);
  };
  std::vector<int64_t> sendCounts(p), sendOffsets(p), recvCounts(p),
      recvOffsets(p);
  int64_t at = 0;
  for (int64_t q = 0; q < p; ++q) {
    sendCounts[q] = rows(r, q);
    sendOffsets[q] = at + 1;
    at += sendCounts[q] + 1;
  }
  std::vector<std::byte> send(at * rowBytes, std::byte{0xee});
  for (int64_t q = 0; q < p; ++q)
    for (int64_t j = 0; j < sendCounts[q]; ++j)
      for (size_t b = 0; b < rowBytes; ++b)
        send[(sendOffsets[q] + j) * rowBytes + b] = byteOf(r, q, j, b);
  int64_t total = 0;
  for (int64_t q = p - 1; q >= 0; --q) {
    recvCounts[q] = rows(q, r);
    recvOffsets[q] = total;
    total += recvCounts[q];
  }
  std::vector<std::byte> recv(total * rowBytes, std::byte{0});
  check.ok(comm.allToAllV(send.data(), sendCounts, sendOffsets, recv.data(),
                          recvCounts, recvOffsets, rowBytes),
           comm);
  for (int64_t q = 0; q < p; ++q)
    for (int64_t j = 0; j < recvCounts[q]; ++j)
      for (size_t b = 0; b < rowBytes; ++b)
        if (recv[(recvOffsets[q] + j) * rowBytes + b] != byteOf(q, r, j, b)) {
          check.fail("all_to_all: row ", j, " from rank ", q, " byte ", b,
                     " is wrong");
          return;
        }

  // Zero rows everywhere, with no buffers at all.
  std::vector<int64_t> zeros(p, 0);
  check.ok(comm.allToAllV(nullptr, zeros, zeros, nullptr, zeros, zeros, 64),
           comm);

  // A wide row (4 KiB, so the blocks go by rendezvous, not eagerly), one
  // row to every rank.
  constexpr size_t wide = 4096;
  std::vector<int64_t> ones(p, 1), iota(p);
  for (int64_t q = 0; q < p; ++q)
    iota[q] = q;
  std::vector<std::byte> wideSend(p * wide), wideRecv(p * wide);
  for (int64_t q = 0; q < p; ++q)
    for (size_t b = 0; b < wide; ++b)
      wideSend[q * wide + b] = byteOf(r, q, 0, b);
  check.ok(comm.allToAllV(wideSend.data(), ones, iota, wideRecv.data(), ones,
                          iota, wide),
           comm);
  for (int64_t q = 0; q < p; ++q)
    for (size_t b = 0; b < wide; ++b)
      if (wideRecv[q * wide + b] != byteOf(q, r, 0, b)) {
        check.fail("all_to_all: the wide row from rank ", q, " byte ", b,
                   " is wrong");
        return;
      }
}

void testAllReduce(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  // Integers and halves: every sum is exact in float.
  constexpr int64_t n = 1000;
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    std::vector<float> data(n);
    for (int64_t i = 0; i < n; ++i)
      data[i] = static_cast<float>(r) + 0.5f * i;
    check.ok(comm.allReduce(data.data(), n, op), comm);
    for (int64_t i = 0; i < n; ++i) {
      double sum = p * (p - 1) / 2.0 + p * 0.5 * i;
      double expected = op == ReduceOp::Sum ? sum : sum / p;
      if (std::abs(data[i] - expected) > 1e-6 * std::max(1.0, expected)) {
        check.fail("all_reduce (", op == ReduceOp::Sum ? "sum" : "mean",
                   "): element ", i, " is ", data[i], ", expected ", expected);
        break;
      }
    }
  }
  check.ok(comm.allReduce(nullptr, 0, ReduceOp::Sum), comm);

  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean}) {
    std::vector<double> host = {static_cast<double>(r),
                                static_cast<double>(r * r)};
    check.ok(comm.allReduceHost(host, op), comm);
    double sum = p * (p - 1) / 2.0, squares = (p - 1) * p * (2 * p - 1) / 6.0;
    if (op == ReduceOp::Mean) {
      sum /= p;
      squares /= p;
    }
    if (std::abs(host[0] - sum) > 1e-12 || std::abs(host[1] - squares) > 1e-12)
      check.fail("all_reduce_host (", op == ReduceOp::Sum ? "sum" : "mean",
                 "): got ", host[0], ", ", host[1], ", expected ", sum, ", ",
                 squares);
  }
}

/// Non-blocking all-reduces: several in flight at once, with progress()
/// calls and a blocking collective among them, waited for in another order
/// than started; each must equal the blocking allReduce bit for bit. Then
/// the caller's errors: a request waited for twice, one never started.
void testAsyncAllReduce(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  // Sizes below and above Open MPI's eager limit, and an empty one.
  const std::vector<int64_t> sizes = {1000, 300000, 0, 4097};
  std::vector<std::vector<float>> async(sizes.size()), blocking(sizes.size());
  for (size_t k = 0; k < sizes.size(); ++k) {
    async[k].resize(sizes[k]);
    for (int64_t i = 0; i < sizes[k]; ++i)
      // Not exactly representable sums: bitwise equality means the same
      // reduction order, not just exact arithmetic.
      async[k][i] = std::sin(0.001f * i + r) * (1.0f + 0.1f * k);
    blocking[k] = async[k];
  }
  auto opOf = [](size_t k) { return k % 2 ? ReduceOp::Sum : ReduceOp::Mean; };
  std::vector<device::Request> requests;
  for (size_t k = 0; k < sizes.size(); ++k) {
    StatusOr<device::Request> started =
        comm.startAllReduce(async[k].data(), sizes[k], opOf(k));
    check.ok(started.status(), comm);
    requests.push_back(*started);
    check.ok(comm.progress(), comm);
  }
  if (comm.pendingRequests() != 4)
    check.fail("async all_reduce: ", comm.pendingRequests(),
               " requests pending after 4 starts, expected 4");
  // Waited for out of order, with a blocking collective while the rest are
  // in flight.
  check.ok(comm.wait(requests[1]), comm);
  std::vector<int64_t> local = {r}, all(p);
  check.ok(comm.allGather(local, all), comm);
  for (size_t k : {3, 0, 2})
    check.ok(comm.wait(requests[k]), comm);
  if (comm.pendingRequests() != 0)
    check.fail("async all_reduce: ", comm.pendingRequests(),
               " requests pending after every wait");
  for (size_t k = 0; k < sizes.size(); ++k) {
    check.ok(comm.allReduce(blocking[k].data(), sizes[k], opOf(k)), comm);
    if (std::memcmp(async[k].data(), blocking[k].data(),
                    sizes[k] * sizeof(float)) != 0)
      check.fail("async all_reduce of ", sizes[k],
                 " elements differs from the blocking one");
  }
  Status twice = comm.wait(requests[0]);
  if (twice.isOk() ||
      twice.message().find("already waited for") == std::string::npos)
    check.fail("a second wait for the same request did not fail clearly");
  if (comm.wait(device::Request{987654}).isOk())
    check.fail("a wait for a request never started did not fail");
  // Those were the caller's errors: the communicator still works.
  check.ok(comm.barrier(), comm);
}

/// Replica groups: subsets of every size, each called by its members alone,
/// in the same order on every rank (as the executor does), the first one
/// twice so the second call takes the cached sub-communicator.
void testGroupSum(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  std::vector<std::vector<int32_t>> groups;
  if (p >= 4)
    groups.push_back({1, 3});
  if (p >= 2)
    groups.push_back({0, 1});
  if (p >= 3)
    groups.push_back({0, 2});
  if (p >= 4)
    groups.push_back({0, 2, 3});
  if (p >= 4)
    groups.push_back({1, 3});
  std::vector<int32_t> everyone;
  for (int32_t q = 0; q < p; ++q)
    everyone.push_back(q);
  groups.push_back(everyone);
  groups.push_back({static_cast<int32_t>(r)});

  constexpr int64_t n = 257;
  for (const std::vector<int32_t> &group : groups) {
    if (!std::binary_search(group.begin(), group.end(), r))
      continue;
    std::vector<float> data(n);
    for (int64_t i = 0; i < n; ++i)
      data[i] = static_cast<float>((r + 1) * (i + 1));
    check.ok(comm.groupSum(data.data(), n, group), comm);
    double members = 0;
    for (int32_t m : group)
      members += m + 1;
    for (int64_t i = 0; i < n; ++i)
      if (data[i] != static_cast<float>(members * (i + 1))) {
        std::string name;
        for (int32_t m : group)
          name += (name.empty() ? "{" : ",") + std::to_string(m);
        check.fail("group_sum over ", name, "}: element ", i, " is ", data[i],
                   ", expected ", members * (i + 1));
        break;
      }
  }
  // A group without this rank is the caller's error.
  std::vector<int32_t> others;
  for (int32_t q = 0; q < p; ++q)
    if (q != r)
      others.push_back(q);
  float x = 0;
  Status wrong = comm.groupSum(&x, 1, others);
  if (wrong.isOk())
    check.fail("group_sum over a group without this rank did not fail");
}

void testBroadcast(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  constexpr size_t n = 37;
  for (int64_t root = 0; root < p; ++root) {
    std::vector<std::byte> data(n, std::byte{0});
    if (r == root)
      for (size_t i = 0; i < n; ++i)
        data[i] = static_cast<std::byte>((root * 13 + i) & 0xff);
    check.ok(comm.broadcast(data.data(), n, root), comm);
    for (size_t i = 0; i < n; ++i)
      if (data[i] != static_cast<std::byte>((root * 13 + i) & 0xff)) {
        check.fail("broadcast from rank ", root, ": byte ", i, " is wrong");
        break;
      }
  }
  std::byte b{};
  if (comm.broadcast(&b, 1, p).isOk())
    check.fail("a broadcast from rank ", p, " did not fail");
}

/// A ring: each rank sends 64 KiB (past the eager limit) to the next and
/// receives from the previous; even ranks send first, odd ranks receive
/// first, so a blocking pairing cannot deadlock.
void testRing(MpiCommunicator &comm, Checker &check) {
  int64_t p = comm.worldSize(), r = comm.rank();
  if (p < 2) {
    std::byte b{};
    if (comm.send(&b, 1, 0, 0).isOk())
      check.fail("a send to itself did not fail");
    return;
  }
  constexpr size_t n = 64 * 1024;
  int64_t next = (r + 1) % p, prev = (r + p - 1) % p;
  std::vector<std::byte> out(n), in(n, std::byte{0});
  for (size_t i = 0; i < n; ++i)
    out[i] = static_cast<std::byte>((r * 17 + i) & 0xff);
  constexpr int tag = 7;
  if (r % 2 == 0) {
    check.ok(comm.send(out.data(), n, next, tag), comm);
    check.ok(comm.recv(in.data(), n, prev, tag), comm);
  } else {
    check.ok(comm.recv(in.data(), n, prev, tag), comm);
    check.ok(comm.send(out.data(), n, next, tag), comm);
  }
  for (size_t i = 0; i < n; ++i)
    if (in[i] != static_cast<std::byte>((prev * 17 + i) & 0xff)) {
      check.fail("ring: byte ", i, " from rank ", prev, " is wrong");
      break;
    }
}

/// Trains `path` (world size P) over MPI, each rank on its share of one
/// global batch, against `referencePath` (world size 1) on the whole batch.
/// The per-rank losses are means over equal label counts, so their mean
/// (step()'s loss) is the whole batch's loss.
int runExecutor(MpiCommunicator &comm, const std::string &path,
                const std::string &referencePath, int64_t steps,
                double tolerance) {
  int64_t p = comm.worldSize(), r = comm.rank();
  auto fatal = [&](const std::string &message) {
    std::fprintf(stderr, "flexmoe-comm-test: rank %lld: %s\n",
                 static_cast<long long>(r), message.c_str());
    comm.abort(1);
  };
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  if (!loaded)
    fatal(loaded.status().message());
  StatusOr<program::LoadedProgram> reference =
      program::loadProgram(referencePath);
  if (!reference)
    fatal(reference.status().message());
  const fb::Program &prog = loaded->program();
  const fb::Program &ref = reference->program();
  if (ref.world_size() != 1)
    fatal("the reference '" + referencePath + "' is compiled for world size " +
          std::to_string(ref.world_size()) + "; it must be 1");
  StatusOr<train::ProgramInputShape> shape = train::programInputShape(prog);
  if (!shape)
    fatal(shape.status().message());
  StatusOr<train::ProgramInputShape> refShape = train::programInputShape(ref);
  if (!refShape)
    fatal(refShape.status().message());
  // Labels have the tokens' shape (one next token per position).
  int64_t tokens = shape->localBatch * shape->seqLen, labels = tokens;
  int64_t refTokens = refShape->localBatch * refShape->seqLen;
  int64_t refLabels = refTokens;
  if (refTokens != p * tokens || refLabels != p * labels)
    fatal("the reference takes " + std::to_string(refTokens) + " tokens, not " +
          std::to_string(p) + " x " + std::to_string(tokens) +
          ": compile both with the same --batch");
  int64_t vocab = refShape->vocabSize;

  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> allTokens(refTokens), allLabels(refLabels);
  for (int32_t &t : allTokens)
    t = id(rng);
  for (int32_t &l : allLabels)
    l = id(rng);

  cpu::CpuDevice device, refDevice;
  device::SingleProcessCommunicator single;
  StatusOr<std::unique_ptr<executor::Executor>> created =
      executor::Executor::create(*loaded, device, comm);
  if (!created)
    fatal(created.status().message());
  StatusOr<std::unique_ptr<executor::Executor>> refCreated =
      executor::Executor::create(*reference, refDevice, single);
  if (!refCreated)
    fatal(refCreated.status().message());
  std::span<const int32_t> myTokens(allTokens.data() + r * tokens, tokens);
  std::span<const int32_t> myLabels(allLabels.data() + r * labels, labels);
  if (Status s = (*created)->setInputs(myTokens, myLabels); !s.isOk())
    fatal(s.message());
  if (Status s = (*refCreated)->setInputs(allTokens, allLabels); !s.isOk())
    fatal(s.message());

  int mismatches = 0;
  for (int64_t s = 1; s <= steps; ++s) {
    StatusOr<float> loss = (*created)->step();
    if (!loss)
      fatal("step " + std::to_string(s) + ": " + loss.status().message());
    StatusOr<float> want = (*refCreated)->step();
    if (!want)
      fatal("reference step " + std::to_string(s) + ": " +
            want.status().message());
    double rel = std::abs(double(*loss) - *want) /
                 std::max(1e-30, std::abs(double(*want)));
    if (r == 0)
      std::printf("step %lld loss %.6f reference %.6f\n",
                  static_cast<long long>(s), *loss, *want);
    if (!(rel <= tolerance)) {
      std::fprintf(stderr,
                   "flexmoe-comm-test: rank %lld: step %lld: loss %.8f over "
                   "MPI, %.8f on one process (relative difference %.3g)\n",
                   static_cast<long long>(r), static_cast<long long>(s), *loss,
                   *want, rel);
      ++mismatches;
    }
  }
  if (mismatches)
    return 1;
  std::printf("rank %lld: %lld steps over MPI match the single-process "
              "run\n",
              static_cast<long long>(r), static_cast<long long>(steps));
  return 0;
}

/// Forwards to an MpiCommunicator and counts what the executor asks of it:
/// how many non-blocking all-reduces it keeps in flight at once, and how
/// many blocking ones it runs.
class CountingCommunicator final : public device::Communicator {
public:
  explicit CountingCommunicator(MpiCommunicator &inner) : inner_(inner) {}
  int64_t rank() const override { return inner_.rank(); }
  int64_t worldSize() const override { return inner_.worldSize(); }
  Status allGather(std::span<const int64_t> local,
                   std::span<int64_t> all) override {
    return inner_.allGather(local, all);
  }
  Status allToAllV(const std::byte *send, std::span<const int64_t> sendCounts,
                   std::span<const int64_t> sendOffsets, std::byte *recv,
                   std::span<const int64_t> recvCounts,
                   std::span<const int64_t> recvOffsets,
                   size_t rowBytes) override {
    return inner_.allToAllV(send, sendCounts, sendOffsets, recv, recvCounts,
                            recvOffsets, rowBytes);
  }
  Status allReduce(float *data, int64_t count, ReduceOp op) override {
    ++blocking;
    return inner_.allReduce(data, count, op);
  }
  StatusOr<device::Request> startAllReduce(float *data, int64_t count,
                                           ReduceOp op) override {
    ++started;
    StatusOr<device::Request> request = inner_.startAllReduce(data, count, op);
    maxInFlight = std::max(maxInFlight, inner_.pendingRequests());
    return request;
  }
  Status wait(device::Request request) override { return inner_.wait(request); }
  Status progress() override { return inner_.progress(); }
  Status allReduceHost(std::span<double> data, ReduceOp op) override {
    return inner_.allReduceHost(data, op);
  }
  Status groupSum(float *data, int64_t count,
                  std::span<const int32_t> ranks) override {
    return inner_.groupSum(data, count, ranks);
  }
  Status broadcast(std::byte *data, size_t bytes, int64_t root) override {
    return inner_.broadcast(data, bytes, root);
  }
  Status send(const std::byte *data, size_t bytes, int64_t dst,
              int tag) override {
    return inner_.send(data, bytes, dst, tag);
  }
  Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override {
    return inner_.recv(data, bytes, src, tag);
  }
  Status barrier() override { return inner_.barrier(); }

  int64_t blocking = 0, started = 0;
  size_t maxInFlight = 0;

private:
  MpiCommunicator &inner_;
};

/// Trains `path` twice side by side on this rank's data, with the
/// executor's communication overlap on and off (one step of each in turn,
/// so their collectives never interleave), and compares everything the
/// steps produce. Steps alternate gradient clipping (the updates then need
/// every all-reduce done first) and use two micro-batches once. `guarded`:
/// the second executor runs on a GuardedDevice instead, overlap on in both
/// (the guarded one stages its collectives, so it blocks).
int runOverlap(MpiCommunicator &comm, const std::string &path, int64_t steps,
               double tolerance, bool guarded) {
  int64_t r = comm.rank();
  auto fatal = [&](const std::string &message) {
    std::fprintf(stderr, "flexmoe-comm-test: rank %lld: %s\n",
                 static_cast<long long>(r), message.c_str());
    comm.abort(1);
  };
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  if (!loaded)
    fatal(loaded.status().message());
  const fb::Program &prog = loaded->program();
  StatusOr<train::ProgramInputShape> shape = train::programInputShape(prog);
  if (!shape)
    fatal(shape.status().message());
  int64_t tokens = shape->localBatch * shape->seqLen;
  std::mt19937_64 rng(777 + r);
  std::uniform_int_distribution<int32_t> id(
      0, static_cast<int32_t>(shape->vocabSize - 1));
  // Two micro-batches' worth of tokens and labels.
  std::vector<std::vector<int32_t>> data(4, std::vector<int32_t>(tokens));
  for (auto &values : data)
    for (int32_t &v : values)
      v = id(rng);

  cpu::CpuDevice overlapDevice, blockingDevice;
  testing::GuardedDevice guardedDevice;
  CountingCommunicator overlapComm(comm), blockingComm(comm);
  executor::ExecutorOptions on, off;
  on.overlapCommunication = true;
  off.overlapCommunication = guarded;
  StatusOr<std::unique_ptr<executor::Executor>> overlapped =
      executor::Executor::create(*loaded, overlapDevice, overlapComm, on);
  if (!overlapped)
    fatal(overlapped.status().message());
  device::Device &second =
      guarded ? static_cast<device::Device &>(guardedDevice) : blockingDevice;
  StatusOr<std::unique_ptr<executor::Executor>> blocking =
      executor::Executor::create(*loaded, second, blockingComm, off);
  if (!blocking)
    fatal(blocking.status().message());

  double worst = 0;
  auto compare = [&](double a, double b) {
    double rel = a == b ? 0 : std::abs(a - b) / std::max(1e-30, std::abs(b));
    worst = std::max(worst, rel);
  };
  for (int64_t s = 1; s <= steps; ++s) {
    executor::StepResult results[2];
    executor::Executor *executors[2] = {overlapped->get(), blocking->get()};
    for (int which = 0; which < 2; ++which) {
      executor::Executor &exec = *executors[which];
      executor::StepOptions options;
      options.maxGradNorm = s % 2 ? 0.5f : 0.0f;
      if (s == 2) {
        options.microBatches = 2;
        options.loadMicroBatch = [&](int64_t micro) {
          return exec.setInputs(data[2 * micro], data[2 * micro + 1]);
        };
      } else if (Status set = exec.setInputs(data[0], data[1]); !set.isOk()) {
        fatal(set.message());
      }
      StatusOr<executor::StepResult> result = exec.step(options);
      if (!result)
        fatal("step " + std::to_string(s) + " with overlap " +
              (which == 0 ? "on" : "off") + ": " + result.status().message());
      results[which] = *result;
    }
    if (r == 0)
      std::printf("step %lld loss %.6f (%s) %.6f (%s)\n",
                  static_cast<long long>(s), results[0].loss,
                  guarded ? "cpu" : "overlap", results[1].loss,
                  guarded ? "guarded" : "blocking");
    compare(results[0].loss, results[1].loss);
    compare(results[0].gradNorm, results[1].gradNorm);
  }
  const auto *buffers = prog.buffers();
  for (size_t b = 0; b < (*overlapped)->numBuffers(); ++b) {
    const fb::Buffer &buffer = *buffers->Get(b);
    if (buffer.alias_of() >= 0 || !program::isPersistent(buffer.kind()))
      continue;
    const device::Operand &x = (*overlapped)->buffer(b);
    std::vector<float> y(x.numElements());
    if (Status read = second.copyToHost(y.data(), (*blocking)->buffer(b).data,
                                        x.numBytes());
        !read.isOk())
      fatal(read.message());
    for (int64_t i = 0; i < x.numElements(); ++i)
      compare(x.as<float>()[i], y[i]);
  }
  int failures = 0;
  if (!(worst <= tolerance)) {
    std::fprintf(stderr,
                 "flexmoe-comm-test: rank %lld: %s differ: "
                 "worst relative difference %.3g (tolerance %.3g)\n",
                 static_cast<long long>(r),
                 guarded ? "the CPU and the guarded device"
                         : "overlap on and off",
                 worst, tolerance);
    ++failures;
  }
  if (guarded) {
    if (failures)
      return 1;
    std::printf("rank %lld: the guarded device matches the CPU over %lld "
                "steps (worst relative difference %.3g)\n",
                static_cast<long long>(r), static_cast<long long>(steps),
                worst);
    return 0;
  }
  // The overlapped executor must really overlap, the other really block.
  if (overlapComm.blocking != 0 || overlapComm.maxInFlight < 2) {
    std::fprintf(stderr,
                 "flexmoe-comm-test: rank %lld: with overlap on, %lld "
                 "blocking all-reduces and at most %zu in flight\n",
                 static_cast<long long>(r),
                 static_cast<long long>(overlapComm.blocking),
                 overlapComm.maxInFlight);
    ++failures;
  }
  if (blockingComm.started != 0 || blockingComm.blocking == 0) {
    std::fprintf(stderr,
                 "flexmoe-comm-test: rank %lld: with overlap off, %lld "
                 "non-blocking all-reduces\n",
                 static_cast<long long>(r),
                 static_cast<long long>(blockingComm.started));
    ++failures;
  }
  if (failures)
    return 1;
  std::printf("rank %lld: overlap on and off agree over %lld steps (worst "
              "relative difference %.3g; %lld all-reduces, up to %zu in "
              "flight)\n",
              static_cast<long long>(r), static_cast<long long>(steps), worst,
              static_cast<long long>(overlapComm.started),
              overlapComm.maxInFlight);
  return 0;
}

int runMismatchedRecv(MpiCommunicator &comm) {
  if (comm.worldSize() < 2) {
    std::fprintf(stderr, "flexmoe-comm-test: --mismatched-recv needs two "
                         "ranks\n");
    return 1;
  }
  std::vector<std::byte> buffer(16, std::byte{1});
  auto report = [&](const Status &status) {
    if (status.isOk())
      std::printf("rank %lld: ok\n", static_cast<long long>(comm.rank()));
    else
      std::printf("%s\n", status.message().c_str());
  };
  if (comm.rank() == 0) {
    report(comm.send(buffer.data(), 8, 1, 5));
    report(comm.send(buffer.data(), 16, 1, 5));
    // Rank 1 ends the job from here.
    report(comm.barrier());
  } else if (comm.rank() == 1) {
    report(comm.recv(buffer.data(), 16, 0, 5));
    report(comm.recv(buffer.data(), 8, 0, 5));
    report(comm.barrier());
    std::fflush(stdout);
    comm.abort(4);
  } else {
    report(comm.barrier());
  }
  return 1;
}

int usage(const std::string &problem) {
  std::fprintf(stderr,
               "flexmoe-comm-test: %s\nusage: flexmoe-comm-test [--die-rank "
               "R | --hang-rank R [--hang-before C] | --hang-at-setup R | "
               "--mismatched-recv | "
               "--executor W.fmoe "
               "--reference W1.fmoe "
               "[--steps N] [--tolerance X] | --overlap W.fmoe [--steps N] "
               "[--tolerance X] | --guarded W.fmoe [--steps N] "
               "[--tolerance X]]\n",
               problem.c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  // --reinit: MPI cannot be initialised again once finalised; the second
  // MpiEnvironment must say so instead of crashing.
  if (argc == 2 && std::string(argv[1]) == "--reinit") {
    {
      auto first = device::MpiEnvironment::init(&argc, &argv);
      if (!first) {
        std::fprintf(stderr, "flexmoe-comm-test: %s\n",
                     first.status().message().c_str());
        return 1;
      }
    }
    auto second = device::MpiEnvironment::init(&argc, &argv);
    if (second) {
      std::fprintf(stderr, "flexmoe-comm-test: MPI initialised twice\n");
      return 1;
    }
    std::fprintf(stderr, "flexmoe-comm-test: %s\n",
                 second.status().message().c_str());
    return 2;
  }
  StatusOr<std::unique_ptr<device::MpiEnvironment>> env =
      device::MpiEnvironment::init(&argc, &argv);
  if (!env) {
    std::fprintf(stderr, "flexmoe-comm-test: %s\n",
                 env.status().message().c_str());
    return 1;
  }
  int64_t dieRank = -1, hangRank = -1, hangAtSetup = -1, steps = 3;
  double tolerance = 1e-5;
  bool toleranceGiven = false;
  bool mismatchedRecv = false;
  std::string hangAt = "all_gather";
  std::string program, reference, overlapProgram;
  bool guardedRun = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char * {
      return i + 1 < argc ? argv[++i] : nullptr;
    };
    const char *v = nullptr;
    if ((arg == "--die-rank" || arg == "--hang-rank" ||
         arg == "--hang-at-setup" || arg == "--hang-before" ||
         arg == "--steps" || arg == "--executor" || arg == "--reference" ||
         arg == "--tolerance" || arg == "--overlap" || arg == "--guarded") &&
        !(v = value()))
      return usage(arg + " needs a value");
    if (arg == "--die-rank")
      dieRank = std::atoll(v);
    else if (arg == "--hang-before")
      hangAt = v;
    else if (arg == "--hang-at-setup")
      hangAtSetup = std::atoll(v);
    else if (arg == "--hang-rank")
      hangRank = std::atoll(v);
    else if (arg == "--steps")
      steps = std::atoll(v);
    else if (arg == "--mismatched-recv")
      mismatchedRecv = true;
    else if (arg == "--tolerance") {
      tolerance = std::atof(v);
      toleranceGiven = true;
    } else if (arg == "--overlap")
      overlapProgram = v;
    else if (arg == "--guarded") {
      overlapProgram = v;
      guardedRun = true;
    } else if (arg == "--executor")
      program = v;
    else if (arg == "--reference")
      reference = v;
    else
      return usage("unknown option '" + arg + "'");
  }
  if (program.empty() != reference.empty())
    return usage("--executor and --reference go together");
  if (steps < 1)
    return usage("--steps must be at least 1");
  if (hangAt != "all_gather" && hangAt != "group_sum" &&
      hangAt != "async_all_reduce")
    return usage("--hang-before must be all_gather, group_sum or "
                 "async_all_reduce, got '" +
                 hangAt + "'");
  if (!overlapProgram.empty() && !program.empty())
    return usage("--overlap and --executor are separate modes");

  if (hangAtSetup >= 0) {
    int worldRank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &worldRank);
    if (worldRank == hangAtSetup) {
      std::fprintf(stderr,
                   "flexmoe-comm-test: rank %d hangs before the communicator "
                   "set-up (--hang-at-setup)\n",
                   worldRank);
      while (true)
        std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
  StatusOr<std::unique_ptr<MpiCommunicator>> created =
      MpiCommunicator::create();
  if (!created) {
    std::fprintf(stderr, "flexmoe-comm-test: %s\n",
                 created.status().message().c_str());
    // A set-up that timed out leaves MPI_Finalize unsafe: end the job.
    device::MpiEnvironment::abort(1);
  }
  MpiCommunicator &comm = **created;
  int64_t r = comm.rank();
  if (r == 0)
    std::printf("world size %lld, launcher %s, timeout %g s\n",
                static_cast<long long>(comm.worldSize()),
                (*env)->underLauncher() ? "yes" : "no", comm.timeoutSeconds());
  std::fflush(stdout);

  if (!program.empty())
    return runExecutor(comm, program, reference, steps, tolerance);
  if (!overlapProgram.empty())
    return runOverlap(comm, overlapProgram, steps,
                      toleranceGiven ? tolerance : 0.0, guardedRun);

  if (r == dieRank) {
    std::fprintf(stderr,
                 "flexmoe-comm-test: rank %lld exits with status 3 before the "
                 "all_gather (--die-rank)\n",
                 static_cast<long long>(r));
    std::exit(3);
  }
  auto hangBefore = [&](const std::string &collective) {
    if (r != hangRank || collective != hangAt)
      return;
    std::fprintf(stderr,
                 "flexmoe-comm-test: rank %lld hangs instead of joining the "
                 "%s (--hang-rank)\n",
                 static_cast<long long>(r), collective.c_str());
    while (true)
      std::this_thread::sleep_for(std::chrono::seconds(1));
  };

  if (mismatchedRecv)
    return runMismatchedRecv(comm);

  Checker check(r);
  hangBefore("all_gather");
  testAllGather(comm, check);
  testAllToAllV(comm, check);
  testAllReduce(comm, check);
  hangBefore("async_all_reduce");
  testAsyncAllReduce(comm, check);
  hangBefore("group_sum");
  testGroupSum(comm, check);
  testBroadcast(comm, check);
  testRing(comm, check);
  check.ok(comm.barrier(), comm);
  if (check.failures())
    return 1;
  std::printf("rank %lld: all collectives correct\n",
              static_cast<long long>(r));
  return 0;
}
