//===- MpiCommunicator.cpp - the Communicator over MPI --------------------===//

#include "runtime/device/MpiCommunicator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

using namespace flexmoe;
using namespace flexmoe::device;

namespace {

using Clock = std::chrono::steady_clock;

/// The largest element count one MPI call takes in a chunk: well inside int.
constexpr int64_t kMaxChunk = int64_t(1) << 30;
/// Tags on the control communicator and of MPI_Comm_create_group.
constexpr int kHandshakeTag = 1;
constexpr int kGroupTag = 2;
/// How a timeout's message ends.
constexpr const char *kMayHaveFailed = " s (another rank may have failed)";

/// Set once any communicator of this process fails: MPI_Finalize is no
/// longer safe (it waits for ranks that may be gone).
std::atomic<bool> anyFailure{false};

std::string mpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error code " + std::to_string(code);
  return std::string(text, length);
}

bool mpiUsable() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

/// Polls `requests` until all complete, one fails, or `deadline` passes.
/// Returns MPI_SUCCESS, the failing code, or -1 on timeout. Short yields
/// first (collectives between live ranks finish fast), then sleeps that
/// double up to 100 µs so waiting ranks leave the cores to working ones
/// without adding more than that to a collective's completion.
int pollUntil(std::span<MPI_Request> requests, Clock::time_point deadline,
              MPI_Status *statuses) {
  int polls = 0;
  std::chrono::microseconds nap(10);
  while (true) {
    bool allDone = true;
    for (size_t i = 0; i < requests.size(); ++i) {
      if (requests[i] == MPI_REQUEST_NULL)
        continue;
      int done = 0;
      MPI_Status status;
      int code = MPI_Test(&requests[i], &done, &status);
      if (code != MPI_SUCCESS)
        return code;
      if (!done) {
        allDone = false;
        continue;
      }
      if (statuses)
        statuses[i] = status;
    }
    if (allDone)
      return MPI_SUCCESS;
    if (Clock::now() >= deadline)
      return -1;
    if (++polls < 100) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(100));
    }
  }
}

Clock::time_point deadlineAfter(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

std::string formatSeconds(double seconds) {
  std::ostringstream os;
  os << seconds;
  return os.str();
}

std::string formatRanks(std::span<const int32_t> ranks) {
  std::ostringstream os;
  os << "{";
  for (size_t i = 0; i < ranks.size(); ++i)
    os << (i ? "," : "") << ranks[i];
  os << "}";
  return os.str();
}

} // namespace

//===----------------------------------------------------------------------===//
// MpiEnvironment
//===----------------------------------------------------------------------===//

StatusOr<std::unique_ptr<MpiEnvironment>> MpiEnvironment::init(int *argc,
                                                               char ***argv) {
  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  if (finalized)
    return errorf("MPI was already finalised in this process; it cannot be "
                  "initialised again");
  MPI_Initialized(&initialized);
  bool launched = launcherInEnvironment();
  int provided = 0;
  if (initialized) {
    // Someone else owns MPI: use it, leave finalising to them.
    MPI_Query_thread(&provided);
  } else {
    int code = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (code != MPI_SUCCESS)
      return errorf("MPI_Init_thread failed: ", mpiErrorString(code));
  }
  if (provided < MPI_THREAD_FUNNELED) {
    if (!initialized)
      MPI_Finalize();
    return errorf("MPI provides thread level ", provided,
                  " but the runtime needs MPI_THREAD_FUNNELED");
  }
  return std::unique_ptr<MpiEnvironment>(
      new MpiEnvironment(!initialized, provided, launched));
}

MpiEnvironment::~MpiEnvironment() {
  if (!owned_ || !mpiUsable())
    return;
  if (anyFailure)
    abort(1);
  MPI_Finalize();
}

void MpiEnvironment::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpiUsable())
    MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

bool MpiEnvironment::launcherInEnvironment() {
  // Open MPI's mpirun, PMIx (Open MPI 5, srun --mpi=pmix), PMI-1/2 (MPICH
  // hydra, srun --mpi=pmi2) and Slurm's srun each set one of these.
  for (const char *name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK",
                           "PMI_SIZE", "MPI_LOCALNRANKS", "SLURM_PROCID"})
    if (std::getenv(name))
      return true;
  return false;
}

//===----------------------------------------------------------------------===//
// MpiCommunicator
//===----------------------------------------------------------------------===//

StatusOr<std::unique_ptr<MpiCommunicator>>
MpiCommunicator::create(MPI_Comm comm, MpiCommunicatorOptions options) {
  if (!mpiUsable())
    return errorf("MpiCommunicator: MPI is not initialised (or already "
                  "finalised); create an MpiEnvironment first");
  StatusOr<double> configured = communicatorTimeout(options.timeoutSeconds);
  if (!configured)
    return configured.status();
  double timeout = *configured;

  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  // Non-blocking duplicates, so even setting up cannot wait forever on a
  // rank that never arrives.
  // On the heap: after a timeout MPI may still write the new handles, so a
  // failed set-up leaks them rather than let MPI write a dead stack frame.
  auto *handles = new MPI_Comm[2]{MPI_COMM_NULL, MPI_COMM_NULL};
  MPI_Request requests[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  int code = MPI_Comm_idup(comm, &handles[0], &requests[0]);
  if (code == MPI_SUCCESS)
    code = MPI_Comm_idup(comm, &handles[1], &requests[1]);
  if (code != MPI_SUCCESS)
    return errorf("rank ", rank,
                  ": communicator set-up: ", mpiErrorString(code));
  code = pollUntil(requests, deadlineAfter(timeout), nullptr);
  if (code != MPI_SUCCESS)
    anyFailure = true;
  if (code == -1)
    return errorf("rank ", rank,
                  ": communicator set-up did not complete "
                  "within ",
                  formatSeconds(timeout), kMayHaveFailed);
  if (code != MPI_SUCCESS)
    return errorf("rank ", rank,
                  ": communicator set-up: ", mpiErrorString(code));
  MPI_Comm dup = handles[0], control = handles[1];
  delete[] handles;
  MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(control, MPI_ERRORS_RETURN);
  return std::unique_ptr<MpiCommunicator>(
      new MpiCommunicator(dup, control, rank, size, timeout));
}

MpiCommunicator::~MpiCommunicator() {
  // A failed communicator may still have an operation in flight that uses
  // these handles: leave them to MPI_Abort or process exit.
  if (failure_ || !mpiUsable())
    return;
  // Requests nobody waited for (a caller's error path): finish them, within
  // the deadline, before their buffers and handles go.
  for (auto &[id, pending] : pending_)
    if (!pending.done &&
        !wait(std::span<MPI_Request>(pending.requests), "all_reduce").isOk())
      return;
  for (auto &[ranks, group] : groups_)
    MPI_Comm_free(&group);
  for (auto &[bytes, type] : rowTypes_)
    MPI_Type_free(&type);
  MPI_Comm_free(&control_);
  MPI_Comm_free(&comm_);
}

void MpiCommunicator::abort(int code) { MpiEnvironment::abort(code); }

Status MpiCommunicator::usable() const {
  if (failure_)
    return errorf("rank ", rank_,
                  ": the communicator failed earlier and cannot be used "
                  "(",
                  failure_->message(), ")");
  return Status::ok();
}

Status MpiCommunicator::check(int code, const char *what) {
  if (code == MPI_SUCCESS)
    return Status::ok();
  Status status =
      errorf("rank ", rank_, ": ", what, ": ", mpiErrorString(code));
  failure_ = status;
  anyFailure = true;
  return status;
}

Status MpiCommunicator::wait(std::span<MPI_Request> requests, const char *what,
                             MPI_Status *statuses) {
  int code = pollUntil(requests, deadlineAfter(timeoutSeconds_), statuses);
  if (code == -1) {
    Status status =
        errorf("rank ", rank_, ": ", what, " did not complete within ",
               formatSeconds(timeoutSeconds_), kMayHaveFailed);
    failure_ = status;
    anyFailure = true;
    return status;
  }
  return check(code, what);
}

StatusOr<MPI_Datatype> MpiCommunicator::rowType(size_t rowBytes) {
  if (auto it = rowTypes_.find(rowBytes); it != rowTypes_.end())
    return it->second;
  MPI_Datatype type;
  FLEXMOE_RETURN_IF_ERROR(
      check(MPI_Type_contiguous(static_cast<int>(rowBytes), MPI_BYTE, &type),
            "all_to_all row type"));
  FLEXMOE_RETURN_IF_ERROR(check(MPI_Type_commit(&type), "all_to_all row type"));
  rowTypes_.emplace(rowBytes, type);
  return type;
}

Status MpiCommunicator::allGather(std::span<const int64_t> local,
                                  std::span<int64_t> all) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (all.size() != local.size() * size_)
    return errorf("rank ", rank_, ": all_gather: ", all.size(), " slots for ",
                  local.size(), " values from each of ", size_, " ranks");
  if (local.size() > INT_MAX)
    return errorf("rank ", rank_, ": all_gather: ", local.size(),
                  " values per rank exceed MPI's int counts");
  MPI_Request request;
  FLEXMOE_RETURN_IF_ERROR(check(
      MPI_Iallgather(local.data(), static_cast<int>(local.size()), MPI_INT64_T,
                     all.data(), static_cast<int>(local.size()), MPI_INT64_T,
                     comm_, &request),
      "all_gather"));
  return wait({&request, 1}, "all_gather");
}

Status MpiCommunicator::allToAllV(const std::byte *send,
                                  std::span<const int64_t> sendCounts,
                                  std::span<const int64_t> sendOffsets,
                                  std::byte *recv,
                                  std::span<const int64_t> recvCounts,
                                  std::span<const int64_t> recvOffsets,
                                  size_t rowBytes) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  size_t n = static_cast<size_t>(size_);
  if (sendCounts.size() != n || sendOffsets.size() != n ||
      recvCounts.size() != n || recvOffsets.size() != n)
    return errorf("rank ", rank_, ": all_to_all: count tables for ",
                  sendCounts.size(), "/", sendOffsets.size(), "/",
                  recvCounts.size(), "/", recvOffsets.size(),
                  " ranks at world size ", size_);
  if (rowBytes == 0 || rowBytes > INT_MAX)
    return errorf("rank ", rank_, ": all_to_all: a row of ", rowBytes,
                  " bytes (must be 1 to ", INT_MAX, ")");
  if (sendCounts[rank_] != recvCounts[rank_])
    return errorf("rank ", rank_, ": all_to_all: sends ", sendCounts[rank_],
                  " rows to itself but expects ", recvCounts[rank_]);
  // MPI counts and displacements are ints; a row datatype keeps them in
  // rows, so only a table entry past 2^31 rows cannot be expressed.
  auto toInt = [&](std::span<const int64_t> table, std::vector<int> &out,
                   const char *name) -> Status {
    out.resize(n);
    for (size_t r = 0; r < n; ++r) {
      if (table[r] < 0 || table[r] > INT_MAX)
        return errorf("rank ", rank_, ": all_to_all: ", name, " for rank ", r,
                      " is ", table[r], " rows, outside MPI's int range [0, ",
                      INT_MAX, "]");
      out[r] = static_cast<int>(table[r]);
    }
    return Status::ok();
  };
  FLEXMOE_RETURN_IF_ERROR(toInt(sendCounts, sendCounts_, "the send count"));
  FLEXMOE_RETURN_IF_ERROR(toInt(sendOffsets, sendDispls_, "the send offset"));
  FLEXMOE_RETURN_IF_ERROR(toInt(recvCounts, recvCounts_, "the receive count"));
  FLEXMOE_RETURN_IF_ERROR(
      toInt(recvOffsets, recvDispls_, "the receive offset"));
  StatusOr<MPI_Datatype> type = rowType(rowBytes);
  if (!type)
    return type.status();
  // Buffers may be null when nothing moves; MPI wants real addresses.
  static std::byte dummy[1];
  MPI_Request request;
  FLEXMOE_RETURN_IF_ERROR(
      check(MPI_Ialltoallv(send ? send : dummy, sendCounts_.data(),
                           sendDispls_.data(), *type, recv ? recv : dummy,
                           recvCounts_.data(), recvDispls_.data(), *type, comm_,
                           &request),
            "all_to_all"));
  return wait({&request, 1}, "all_to_all");
}

namespace {

/// Starts reducing `count` elements in place over `comm` in chunks MPI's int
/// counts can express, all chunks in flight at once.
template <typename Check>
Status startReduceInPlace(void *data, int64_t count, MPI_Datatype type,
                          size_t elementBytes, MPI_Comm comm, const char *what,
                          Check check, std::vector<MPI_Request> &requests) {
  for (int64_t begin = 0; begin < count; begin += kMaxChunk) {
    int chunk = static_cast<int>(std::min(kMaxChunk, count - begin));
    MPI_Request request;
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Iallreduce(MPI_IN_PLACE,
                             static_cast<std::byte *>(data) +
                                 begin * static_cast<int64_t>(elementBytes),
                             chunk, type, MPI_SUM, comm, &request),
              what));
    requests.push_back(request);
  }
  return Status::ok();
}

/// startReduceInPlace, then waits for every chunk.
template <typename Wait, typename Check>
Status reduceInPlace(void *data, int64_t count, MPI_Datatype type,
                     size_t elementBytes, MPI_Comm comm, const char *what,
                     Check check, Wait wait) {
  std::vector<MPI_Request> requests;
  FLEXMOE_RETURN_IF_ERROR(startReduceInPlace(data, count, type, elementBytes,
                                             comm, what, check, requests));
  if (requests.empty())
    return Status::ok();
  return wait(std::span<MPI_Request>(requests), what);
}

} // namespace

Status MpiCommunicator::allReduce(float *data, int64_t count, ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (count < 0)
    return errorf("rank ", rank_, ": all_reduce of ", count, " elements");
  // Every rank must take part even with nothing to reduce: count 0 still
  // needs no message, and all ranks agree on the count.
  FLEXMOE_RETURN_IF_ERROR(reduceInPlace(
      data, count, MPI_FLOAT, sizeof(float), comm_, "all_reduce",
      [this](int c, const char *w) { return check(c, w); },
      [this](std::span<MPI_Request> r, const char *w) { return wait(r, w); }));
  if (op == ReduceOp::Mean) {
    float ranks = static_cast<float>(size_);
    for (int64_t i = 0; i < count; ++i)
      data[i] /= ranks;
  }
  return Status::ok();
}

StatusOr<Request> MpiCommunicator::startAllReduce(float *data, int64_t count,
                                                  ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (count < 0)
    return errorf("rank ", rank_, ": all_reduce of ", count, " elements");
  Pending pending;
  pending.data = data;
  pending.count = count;
  pending.op = op;
  Status started = startReduceInPlace(
      data, count, MPI_FLOAT, sizeof(float), comm_, "all_reduce",
      [this](int c, const char *w) { return check(c, w); }, pending.requests);
  if (!started.isOk())
    return started; // check() poisoned the communicator: nothing to track
  uint64_t id = nextRequest_++;
  pending_.emplace(id, std::move(pending));
  return Request{id};
}

void MpiCommunicator::complete(Pending &pending) {
  // As allReduce divides: the same float operations, the same bits.
  if (pending.op == ReduceOp::Mean) {
    float ranks = static_cast<float>(size_);
    for (int64_t i = 0; i < pending.count; ++i)
      pending.data[i] /= ranks;
  }
  pending.done = true;
}

Status MpiCommunicator::wait(Request request) {
  if (request.id == 0)
    return Status::ok();
  auto it = pending_.find(request.id);
  if (it == pending_.end())
    return errorf("rank ", rank_, ": wait for all_reduce request ", request.id,
                  ", which was never started or was already waited for");
  // After a failure MPI may still own the buffer: keep the entry.
  FLEXMOE_RETURN_IF_ERROR(usable());
  Pending &pending = it->second;
  if (!pending.done) {
    FLEXMOE_RETURN_IF_ERROR(
        wait(std::span<MPI_Request>(pending.requests), "all_reduce"));
    complete(pending);
  }
  pending_.erase(it);
  return Status::ok();
}

Status MpiCommunicator::progress() {
  FLEXMOE_RETURN_IF_ERROR(usable());
  // One MPI_Testsome over all chunks of all requests: one trip through
  // MPI's progress engine, however many are in flight.
  std::vector<MPI_Request> flat;
  std::vector<std::pair<Pending *, size_t>> owners;
  for (auto &[id, pending] : pending_) {
    if (pending.done)
      continue;
    for (size_t i = 0; i < pending.requests.size(); ++i)
      if (pending.requests[i] != MPI_REQUEST_NULL) {
        flat.push_back(pending.requests[i]);
        owners.push_back({&pending, i});
      }
  }
  if (flat.empty())
    return Status::ok();
  std::vector<int> indices(flat.size());
  int completed = 0;
  FLEXMOE_RETURN_IF_ERROR(
      check(MPI_Testsome(static_cast<int>(flat.size()), flat.data(), &completed,
                         indices.data(), MPI_STATUSES_IGNORE),
            "all_reduce"));
  if (completed == MPI_UNDEFINED || completed == 0)
    return Status::ok();
  for (int k = 0; k < completed; ++k) {
    auto [pending, chunk] = owners[indices[k]];
    pending->requests[chunk] = MPI_REQUEST_NULL;
  }
  for (auto &[id, pending] : pending_)
    if (!pending.done &&
        std::all_of(
            pending.requests.begin(), pending.requests.end(),
            [](MPI_Request request) { return request == MPI_REQUEST_NULL; }))
      complete(pending);
  return Status::ok();
}

Status MpiCommunicator::allReduceHost(std::span<double> data, ReduceOp op) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  FLEXMOE_RETURN_IF_ERROR(reduceInPlace(
      data.data(), static_cast<int64_t>(data.size()), MPI_DOUBLE,
      sizeof(double), comm_, "all_reduce_host",
      [this](int c, const char *w) { return check(c, w); },
      [this](std::span<MPI_Request> r, const char *w) { return wait(r, w); }));
  if (op == ReduceOp::Mean)
    for (double &value : data)
      value /= static_cast<double>(size_);
  return Status::ok();
}

StatusOr<MPI_Comm> MpiCommunicator::groupComm(std::span<const int32_t> ranks) {
  std::vector<int32_t> key(ranks.begin(), ranks.end());
  if (auto it = groups_.find(key); it != groups_.end())
    return it->second;
  std::string name = "replica group " + formatRanks(ranks) + " set-up";
  // MPI_Comm_create_group blocks until every member arrives; a handshake
  // with each member first bounds that wait by our deadline.
  std::vector<MPI_Request> requests;
  handshake_.assign(2 * ranks.size(), rank_);
  std::vector<int32_t> peers;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] == rank_)
      continue;
    peers.push_back(ranks[i]);
    MPI_Request request;
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Irecv(&handshake_[2 * i], 1, MPI_INT, ranks[i], kHandshakeTag,
                        control_, &request),
              name.c_str()));
    requests.push_back(request);
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Isend(&handshake_[2 * i + 1], 1, MPI_INT, ranks[i],
                        kHandshakeTag, control_, &request),
              name.c_str()));
    requests.push_back(request);
  }
  if (Status status = wait(requests, name.c_str()); !status.isOk()) {
    // Unlike a collective's, a handshake's timeout knows who is missing:
    // the members whose message never came.
    std::vector<int32_t> silent;
    for (size_t k = 0; k < peers.size(); ++k)
      if (requests[2 * k] != MPI_REQUEST_NULL)
        silent.push_back(peers[k]);
    if (silent.empty() || !status.message().ends_with(kMayHaveFailed))
      return status;
    std::string who = silent.size() == 1 ? "rank " + std::to_string(silent[0])
                                         : "ranks " + formatRanks(silent);
    failure_ = errorf("rank ", rank_, ": ", name, " did not complete within ",
                      formatSeconds(timeoutSeconds_), " s: no word from ", who,
                      " (failed, or waiting for another rank)");
    return *failure_;
  }

  MPI_Group all, members;
  FLEXMOE_RETURN_IF_ERROR(check(MPI_Comm_group(comm_, &all), name.c_str()));
  std::vector<int> memberRanks(ranks.begin(), ranks.end());
  int code = MPI_Group_incl(all, static_cast<int>(memberRanks.size()),
                            memberRanks.data(), &members);
  MPI_Group_free(&all);
  FLEXMOE_RETURN_IF_ERROR(check(code, name.c_str()));
  MPI_Comm group = MPI_COMM_NULL;
  code = MPI_Comm_create_group(comm_, members, kGroupTag, &group);
  MPI_Group_free(&members);
  FLEXMOE_RETURN_IF_ERROR(check(code, name.c_str()));
  MPI_Comm_set_errhandler(group, MPI_ERRORS_RETURN);
  groups_.emplace(std::move(key), group);
  return group;
}

Status MpiCommunicator::groupSum(float *data, int64_t count,
                                 std::span<const int32_t> ranks) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (ranks.empty() || !std::is_sorted(ranks.begin(), ranks.end()) ||
      std::adjacent_find(ranks.begin(), ranks.end()) != ranks.end() ||
      ranks.front() < 0 || ranks.back() >= size_)
    return errorf("rank ", rank_, ": replica group ", formatRanks(ranks),
                  " is not an ascending set of distinct ranks in [0, ", size_,
                  ")");
  if (!std::binary_search(ranks.begin(), ranks.end(), rank_))
    return errorf("rank ", rank_, ": replica group ", formatRanks(ranks),
                  " does not contain this rank");
  if (count < 0)
    return errorf("rank ", rank_, ": group sum of ", count, " elements");
  // A group of one is its own sum.
  if (ranks.size() == 1)
    return Status::ok();
  StatusOr<MPI_Comm> group = groupComm(ranks);
  if (!group)
    return group.status();
  std::string name = "group_sum over " + formatRanks(ranks);
  return reduceInPlace(
      data, count, MPI_FLOAT, sizeof(float), *group, name.c_str(),
      [this](int c, const char *w) { return check(c, w); },
      [this](std::span<MPI_Request> r, const char *w) { return wait(r, w); });
}

Status MpiCommunicator::broadcast(std::byte *data, size_t bytes, int64_t root) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (root < 0 || root >= size_)
    return errorf("rank ", rank_, ": broadcast from rank ", root,
                  " at world size ", size_);
  std::vector<MPI_Request> requests;
  for (size_t begin = 0; begin < bytes; begin += kMaxChunk) {
    int chunk = static_cast<int>(
        std::min<size_t>(static_cast<size_t>(kMaxChunk), bytes - begin));
    MPI_Request request;
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Ibcast(data + begin, chunk, MPI_BYTE, static_cast<int>(root),
                         comm_, &request),
              "broadcast"));
    requests.push_back(request);
  }
  return wait(requests, "broadcast");
}

Status MpiCommunicator::send(const std::byte *data, size_t bytes, int64_t dst,
                             int tag) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (dst < 0 || dst >= size_ || dst == rank_)
    return errorf("rank ", rank_, ": send to rank ", dst, " at world size ",
                  size_, dst == rank_ ? " (itself)" : "");
  // 32767 is the least tag bound MPI guarantees.
  if (tag < 0 || tag > 32767)
    return errorf("rank ", rank_, ": send tag ", tag, " outside [0, 32767]");
  std::string name = "send to rank " + std::to_string(dst);
  std::vector<MPI_Request> requests;
  for (size_t begin = 0; begin < bytes || begin == 0; begin += kMaxChunk) {
    int chunk = static_cast<int>(
        std::min<size_t>(static_cast<size_t>(kMaxChunk), bytes - begin));
    MPI_Request request;
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Isend(data + begin, chunk, MPI_BYTE, static_cast<int>(dst),
                        tag, comm_, &request),
              name.c_str()));
    requests.push_back(request);
    if (bytes == 0)
      break;
  }
  return wait(requests, name.c_str());
}

Status MpiCommunicator::recv(std::byte *data, size_t bytes, int64_t src,
                             int tag) {
  FLEXMOE_RETURN_IF_ERROR(usable());
  if (src < 0 || src >= size_ || src == rank_)
    return errorf("rank ", rank_, ": recv from rank ", src, " at world size ",
                  size_, src == rank_ ? " (itself)" : "");
  if (tag < 0 || tag > 32767)
    return errorf("rank ", rank_, ": recv tag ", tag, " outside [0, 32767]");
  std::string name = "recv from rank " + std::to_string(src);
  std::vector<MPI_Request> requests;
  std::vector<int> expected;
  for (size_t begin = 0; begin < bytes || begin == 0; begin += kMaxChunk) {
    int chunk = static_cast<int>(
        std::min<size_t>(static_cast<size_t>(kMaxChunk), bytes - begin));
    MPI_Request request;
    FLEXMOE_RETURN_IF_ERROR(
        check(MPI_Irecv(data + begin, chunk, MPI_BYTE, static_cast<int>(src),
                        tag, comm_, &request),
              name.c_str()));
    requests.push_back(request);
    expected.push_back(chunk);
    if (bytes == 0)
      break;
  }
  std::vector<MPI_Status> statuses(requests.size());
  FLEXMOE_RETURN_IF_ERROR(wait(requests, name.c_str(), statuses.data()));
  // A longer message is MPI_ERR_TRUNCATE above; a shorter one is caught
  // here, since the sender and receiver disagree on the size.
  int64_t received = 0, wanted = 0;
  for (size_t i = 0; i < statuses.size(); ++i) {
    int got = 0;
    MPI_Get_count(&statuses[i], MPI_BYTE, &got);
    received += got;
    wanted += expected[i];
  }
  if (received != wanted)
    return errorf("rank ", rank_, ": ", name, ": received ", received,
                  " bytes, expected ", wanted);
  return Status::ok();
}

Status MpiCommunicator::barrier() {
  FLEXMOE_RETURN_IF_ERROR(usable());
  MPI_Request request;
  FLEXMOE_RETURN_IF_ERROR(check(MPI_Ibarrier(comm_, &request), "barrier"));
  return wait({&request, 1}, "barrier");
}
