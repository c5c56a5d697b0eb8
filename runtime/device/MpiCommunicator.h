//===- MpiCommunicator.h - the Communicator over MPI ------------*- C++ -*-===//
//
// MpiEnvironment initialises and finalises MPI; MpiCommunicator implements
// every collective of Communicator over an MPI communicator (by default
// MPI_COMM_WORLD).
//
// Bounded waits: every operation is started non-blocking (MPI_Iallgather,
// MPI_Ialltoallv, ...) and then polled against a deadline. A rank that dies
// or hangs makes the others return a Status "rank R: <collective> did not
// complete within T s (another rank may have failed)" instead of waiting
// forever; the caller prints it and calls abort(), which makes the launcher
// tear the job down. After a timeout or an MPI error the communicator is
// unusable (the pending operation cannot be cancelled): every later call
// fails at once with the first error.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_DEVICE_MPICOMMUNICATOR_H
#define FLEXMOE_RUNTIME_DEVICE_MPICOMMUNICATOR_H

#include "runtime/device/Communicator.h"

#include <mpi.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace flexmoe::device {

/// Owns MPI's lifetime in this process: MPI_Init_thread on construction and
/// MPI_Finalize on destruction (only if it initialised MPI itself). Every
/// MpiCommunicator must be destroyed before it.
class MpiEnvironment {
public:
  /// Initialises MPI with at least MPI_THREAD_FUNNELED (only the thread that
  /// initialised MPI calls it; OpenMP workers never do). Fails if MPI was
  /// already finalised or cannot give that thread level.
  static StatusOr<std::unique_ptr<MpiEnvironment>> init(int *argc,
                                                        char ***argv);
  /// MPI_Finalize, unless a communicator failed: finalising waits for
  /// every rank, and a failed one may never come, so then it aborts the job
  /// (exit code 1) instead.
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment &) = delete;
  MpiEnvironment &operator=(const MpiEnvironment &) = delete;

  /// The thread level MPI provides (MPI_THREAD_FUNNELED or better).
  int threadLevel() const { return threadLevel_; }

  /// Ends the whole job (MPI_Abort on MPI_COMM_WORLD): the launcher kills
  /// every rank, including one that hangs. For errors before or without a
  /// communicator; MpiCommunicator::abort is the same.
  [[noreturn]] static void abort(int code);

  /// Whether a launcher (mpirun/mpiexec, srun, hydra) started this process,
  /// as its environment said before MPI_Init (a singleton MPI_Init sets the
  /// same variables): without one MPI runs a world of one rank.
  bool underLauncher() const { return underLauncher_; }

  /// Whether this process's environment says a launcher started it, before
  /// MPI is initialised: a tool decides with it whether to use MPI at all.
  static bool launcherInEnvironment();

private:
  MpiEnvironment(bool owned, int threadLevel, bool underLauncher)
      : owned_(owned), threadLevel_(threadLevel),
        underLauncher_(underLauncher) {}
  bool owned_;
  int threadLevel_;
  bool underLauncher_;
};

struct MpiCommunicatorOptions {
  /// How long one operation may wait for the other ranks. The environment
  /// variable FLEXMOE_COMM_TIMEOUT (seconds) overrides it.
  double timeoutSeconds = 300;
};

class MpiCommunicator final : public Communicator {
public:
  /// Duplicates `comm` (collective over it) so the runtime's traffic never
  /// matches the application's, and makes MPI errors return codes on the
  /// duplicates.
  static StatusOr<std::unique_ptr<MpiCommunicator>>
  create(MPI_Comm comm = MPI_COMM_WORLD, MpiCommunicatorOptions options = {});
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator &) = delete;
  MpiCommunicator &operator=(const MpiCommunicator &) = delete;

  int64_t rank() const override { return rank_; }
  int64_t worldSize() const override { return size_; }
  /// The deadline of one operation, after FLEXMOE_COMM_TIMEOUT.
  double timeoutSeconds() const { return timeoutSeconds_; }

  Status allGather(std::span<const int64_t> local,
                   std::span<int64_t> all) override;
  Status allToAllV(const std::byte *send, std::span<const int64_t> sendCounts,
                   std::span<const int64_t> sendOffsets, std::byte *recv,
                   std::span<const int64_t> recvCounts,
                   std::span<const int64_t> recvOffsets,
                   size_t rowBytes) override;
  Status allReduce(float *data, int64_t count, ReduceOp op) override;
  /// MPI_Iallreduce (in chunks, like allReduce, so the result is the same
  /// bit for bit). The mean's division happens when the request completes.
  StatusOr<Request> startAllReduce(float *data, int64_t count,
                                   ReduceOp op) override;
  /// Polled against the deadline like every other operation; a timeout
  /// poisons the communicator.
  Status wait(Request request) override;
  /// MPI_Testsome over every outstanding request.
  Status progress() override;
  /// Requests started and not yet waited for.
  size_t pendingRequests() const { return pending_.size(); }
  Status allReduceHost(std::span<double> data, ReduceOp op) override;
  /// Only the ranks in `ranks` call it. The first call for a rank set
  /// creates its sub-communicator (MPI_Comm_create_group, collective over
  /// the set alone) and caches it.
  Status groupSum(float *data, int64_t count,
                  std::span<const int32_t> ranks) override;
  Status broadcast(std::byte *data, size_t bytes, int64_t root) override;
  Status send(const std::byte *data, size_t bytes, int64_t dst,
              int tag) override;
  Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override;
  Status barrier() override;

  /// Ends the whole job (MPI_Abort on MPI_COMM_WORLD): the launcher kills
  /// every rank, including one that hangs.
  [[noreturn]] void abort(int code);

private:
  MpiCommunicator(MPI_Comm comm, MPI_Comm control, int rank, int size,
                  double timeoutSeconds)
      : comm_(comm), control_(control), rank_(rank), size_(size),
        timeoutSeconds_(timeoutSeconds) {}

  /// Waits for `requests` until the deadline; a timeout or an MPI error
  /// poisons the communicator.
  Status wait(std::span<MPI_Request> requests, const char *what,
              MPI_Status *statuses = nullptr);
  /// An MPI return code as a Status naming the operation.
  Status check(int code, const char *what);
  Status usable() const;
  StatusOr<MPI_Datatype> rowType(size_t rowBytes);
  StatusOr<MPI_Comm> groupComm(std::span<const int32_t> ranks);

  MPI_Comm comm_;
  /// Our own handshakes, apart from the callers' tags.
  MPI_Comm control_;
  int rank_;
  int size_;
  double timeoutSeconds_;
  std::optional<Status> failure_;
  std::map<size_t, MPI_Datatype> rowTypes_;
  std::map<std::vector<int32_t>, MPI_Comm> groups_;
  // Count tables of the all-to-all: members, so a timed-out operation that
  // MPI still holds never reads freed memory.
  std::vector<int> sendCounts_, sendDispls_, recvCounts_, recvDispls_;
  std::vector<int> handshake_;

  // Non-blocking all-reduces: started, not yet waited for.
  struct Pending {
    /// One per chunk; MPI_REQUEST_NULL once complete.
    std::vector<MPI_Request> requests;
    float *data = nullptr;
    int64_t count = 0;
    ReduceOp op = ReduceOp::Sum;
    /// Every chunk done and the mean applied.
    bool done = false;
  };
  void complete(Pending &pending);
  std::map<uint64_t, Pending> pending_;
  uint64_t nextRequest_ = 1;
};

} // namespace flexmoe::device

#endif // FLEXMOE_RUNTIME_DEVICE_MPICOMMUNICATOR_H
