//===- mpi_alltoall.cpp - all-to-all bandwidth under mpirun ---------------===//
//
// Times MpiCommunicator::allToAllV (the MoE dispatch/combine collective)
// against a plain blocking MPI_Alltoallv with the same buffers, counts and row
// datatype, in the same run: the difference is the communicator's own cost
// (the non-blocking start plus the polling wait with its deadline).
//
//   mpirun -np 4 build-runtime/bin/mpi_alltoall \
//       [--row-bytes 256,4096] [--bytes 65536,...,16777216] \
//       [--warmup 3] [--iters 20] [--csv]
//
// Every rank sends the same number of rows to every rank (itself included).
// "bytes per rank" is what one rank sends in one all-to-all, rounded down to
// whole rows per destination. Each iteration runs both variants, alternating
// which goes first, each behind a barrier; an iteration's time is the slowest
// rank's (MPI_MAX), and the table gives the median over iterations:
//   algorithmic bandwidth = bytes per rank / time
//   bus bandwidth         = algorithmic * (P - 1) / P   (nccl-tests'
//   convention:
//                           the share that actually crosses between ranks)
// The received rows are checked against the senders' pattern on every rank
// before timing, so a broken exchange fails instead of being timed.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/MpiCommunicator.h"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace flexmoe;

namespace {

struct Options {
  std::vector<int64_t> rowBytes = {256, 4096};
  std::vector<int64_t> bytesPerRank = {65536, 262144, 1048576, 4194304,
                                       16777216};
  int64_t warmup = 3;
  int64_t iters = 20;
  bool csv = false;
};

/// A comma-separated list of positive integers, or an error naming the flag.
StatusOr<std::vector<int64_t>> parseList(const std::string &flag,
                                         const char *text) {
  std::vector<int64_t> values;
  std::string s = text;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string item = s.substr(
        start, comma == std::string::npos ? std::string::npos : comma - start);
    char *end = nullptr;
    errno = 0;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v <= 0)
      return errorf(flag, ": '", item, "' is not a positive integer");
    values.push_back(v);
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return values;
}

StatusOr<Options> parseOptions(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char * {
      return i + 1 < argc ? argv[++i] : nullptr;
    };
    if (arg == "--csv") {
      o.csv = true;
      continue;
    }
    if (arg != "--row-bytes" && arg != "--bytes" && arg != "--warmup" &&
        arg != "--iters")
      return errorf("unknown argument '", arg,
                    "' (flags: --row-bytes L, --bytes L, --warmup N, "
                    "--iters N, --csv)");
    const char *text = value();
    if (!text)
      return errorf(arg, " needs a value");
    StatusOr<std::vector<int64_t>> list = parseList(arg, text);
    if (!list)
      return list.status();
    if (arg == "--row-bytes") {
      o.rowBytes = *list;
    } else if (arg == "--bytes") {
      o.bytesPerRank = *list;
    } else {
      if (list->size() != 1)
        return errorf(arg, " takes one number, got '", text, "'");
      (arg == "--warmup" ? o.warmup : o.iters) = list->front();
    }
  }
  return o;
}

/// The byte a sender `src` puts at `index` of its block for `dst`.
std::byte pattern(int src, int dst, int64_t index) {
  return static_cast<std::byte>((src * 131 + dst * 29 + index * 7) & 0xff);
}

struct Case {
  int64_t rowBytes, rowsPerDest, bytesPerRank;
};

/// One uniform all-to-all: buffers, count tables and both ways to run it.
class Exchange {
public:
  Exchange(device::MpiCommunicator &comm, MPI_Comm raw, Case c)
      : comm_(comm), raw_(raw), c_(c) {
    int p = static_cast<int>(comm.worldSize());
    int64_t block = c.rowsPerDest * c.rowBytes;
    send_.resize(block * p);
    recv_.resize(block * p);
    counts_.assign(p, c.rowsPerDest);
    offsets_.resize(p);
    intCounts_.assign(p, static_cast<int>(c.rowsPerDest));
    intOffsets_.resize(p);
    for (int r = 0; r < p; ++r) {
      offsets_[r] = r * c.rowsPerDest;
      intOffsets_[r] = static_cast<int>(offsets_[r]);
    }
    MPI_Type_contiguous(static_cast<int>(c.rowBytes), MPI_BYTE, &rowType_);
    MPI_Type_commit(&rowType_);
  }
  ~Exchange() { MPI_Type_free(&rowType_); }

  Status runComm() {
    return comm_.allToAllV(send_.data(), counts_, offsets_, recv_.data(),
                           counts_, offsets_, static_cast<size_t>(c_.rowBytes));
  }
  Status runRaw() {
    int code = MPI_Alltoallv(
        send_.data(), intCounts_.data(), intOffsets_.data(), rowType_,
        recv_.data(), intCounts_.data(), intOffsets_.data(), rowType_, raw_);
    if (code != MPI_SUCCESS)
      return errorf("rank ", comm_.rank(), ": MPI_Alltoallv failed (code ",
                    code, ")");
    return Status::ok();
  }

  /// Fills the send blocks with the pattern, runs `run`, checks what came.
  template <typename Run> Status check(Run run, const char *name) {
    int p = static_cast<int>(comm_.worldSize());
    int me = static_cast<int>(comm_.rank());
    int64_t block = c_.rowsPerDest * c_.rowBytes;
    for (int d = 0; d < p; ++d)
      for (int64_t i = 0; i < block; ++i)
        send_[d * block + i] = pattern(me, d, i);
    std::fill(recv_.begin(), recv_.end(), std::byte{0});
    FLEXMOE_RETURN_IF_ERROR(run());
    for (int s = 0; s < p; ++s)
      for (int64_t i = 0; i < block; ++i)
        if (recv_[s * block + i] != pattern(s, me, i))
          return errorf("rank ", me, ": ", name, " delivered a wrong byte ", i,
                        " from rank ", s, " (rows of ", c_.rowBytes, " B, ",
                        c_.bytesPerRank, " B per rank)");
    return Status::ok();
  }

private:
  device::MpiCommunicator &comm_;
  MPI_Comm raw_;
  Case c_;
  std::vector<std::byte> send_, recv_;
  std::vector<int64_t> counts_, offsets_;
  std::vector<int> intCounts_, intOffsets_;
  MPI_Datatype rowType_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Seconds of `run` on the slowest rank (barrier first, so all start
/// together).
template <typename Run>
StatusOr<double> timeOnce(Run run, MPI_Comm raw, int64_t rank) {
  MPI_Barrier(raw);
  double start = MPI_Wtime();
  FLEXMOE_RETURN_IF_ERROR(run());
  double local = MPI_Wtime() - start, slowest = 0;
  if (MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, raw) !=
      MPI_SUCCESS)
    return errorf("rank ", rank, ": MPI_Allreduce of the timings failed");
  return slowest;
}

int fail(device::MpiCommunicator &comm, const Status &status) {
  std::fprintf(stderr, "mpi_alltoall: %s\n", status.message().c_str());
  std::fflush(stderr);
  // Other ranks may be inside a collective this rank will never join.
  comm.abort(1);
}

} // namespace

int main(int argc, char **argv) {
  auto env = device::MpiEnvironment::init(&argc, &argv);
  if (!env) {
    std::fprintf(stderr, "mpi_alltoall: %s\n", env.status().message().c_str());
    return 1;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Every rank parses the same arguments, so all of them stop together.
  StatusOr<Options> options = parseOptions(argc, argv);
  if (!options) {
    if (rank == 0)
      std::fprintf(stderr, "mpi_alltoall: %s\n",
                   options.status().message().c_str());
    return 2;
  }
  auto comm = device::MpiCommunicator::create();
  if (!comm) {
    std::fprintf(stderr, "mpi_alltoall: %s\n", comm.status().message().c_str());
    return 1;
  }
  // The raw variant gets its own communicator, like ours does.
  MPI_Comm raw;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);

  if (rank == 0) {
    if (options->csv)
      std::printf("ranks,row_bytes,bytes_per_rank,iters,flexmoe_median_us,"
                  "flexmoe_algbw_GBps,flexmoe_busbw_GBps,mpi_median_us,"
                  "mpi_algbw_GBps,mpi_busbw_GBps,overhead_pct\n");
    else
      std::printf("%5s %7s %12s | %12s %9s %9s | %12s %9s %9s | %8s\n", "ranks",
                  "row B", "B per rank", "flexmoe us", "algbw", "busbw",
                  "MPI us", "algbw", "busbw", "overhead");
  }
  for (int64_t rowBytes : options->rowBytes) {
    for (int64_t total : options->bytesPerRank) {
      int64_t rowsPerDest = total / size / rowBytes;
      if (rowsPerDest < 1) {
        if (rank == 0)
          std::fprintf(stderr,
                       "mpi_alltoall: skipping %lld B per rank: less than one "
                       "%lld-byte row per destination at %d ranks\n",
                       static_cast<long long>(total),
                       static_cast<long long>(rowBytes), size);
        continue;
      }
      Case c{rowBytes, rowsPerDest, rowsPerDest * rowBytes * size};
      Exchange exchange(**comm, raw, c);
      if (Status s =
              exchange.check([&] { return exchange.runComm(); }, "allToAllV");
          !s.isOk())
        return fail(**comm, s);
      if (Status s = exchange.check([&] { return exchange.runRaw(); },
                                    "MPI_Alltoallv");
          !s.isOk())
        return fail(**comm, s);
      std::vector<double> ours, theirs;
      for (int64_t it = 0; it < options->warmup + options->iters; ++it) {
        // Alternate the order so neither variant always runs second.
        for (int k = 0; k < 2; ++k) {
          bool commTurn = (k == 0) == (it % 2 == 0);
          StatusOr<double> t =
              commTurn ? timeOnce([&] { return exchange.runComm(); }, raw, rank)
                       : timeOnce([&] { return exchange.runRaw(); }, raw, rank);
          if (!t)
            return fail(**comm, t.status());
          if (it >= options->warmup)
            (commTurn ? ours : theirs).push_back(*t);
        }
      }
      if (rank != 0)
        continue;
      double a = median(ours), b = median(theirs);
      double bytes = static_cast<double>(c.bytesPerRank);
      double busFactor = static_cast<double>(size - 1) / size;
      double algA = bytes / a / 1e9, algB = bytes / b / 1e9;
      double overhead = 100.0 * (a - b) / b;
      if (options->csv)
        std::printf("%d,%lld,%lld,%lld,%.1f,%.4f,%.4f,%.1f,%.4f,%.4f,%.1f\n",
                    size, static_cast<long long>(rowBytes),
                    static_cast<long long>(c.bytesPerRank),
                    static_cast<long long>(options->iters), a * 1e6, algA,
                    algA * busFactor, b * 1e6, algB, algB * busFactor,
                    overhead);
      else
        std::printf("%5d %7lld %12lld | %12.1f %9.3f %9.3f | %12.1f %9.3f "
                    "%9.3f | %7.1f%%\n",
                    size, static_cast<long long>(rowBytes),
                    static_cast<long long>(c.bytesPerRank), a * 1e6, algA,
                    algA * busFactor, b * 1e6, algB, algB * busFactor,
                    overhead);
      std::fflush(stdout);
    }
  }
  if (rank == 0 && !options->csv)
    std::printf("(GB/s = 1e9 bytes/s; time: median over %lld iterations of "
                "the slowest rank; overhead = flexmoe / MPI - 1)\n",
                static_cast<long long>(options->iters));
  MPI_Comm_free(&raw);
  return 0;
}
