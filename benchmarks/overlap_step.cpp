//===- overlap_step.cpp - training step time with and without overlap -----===//
//
// Times one program's training step under mpirun with the executor's
// communication overlap on (dense-gradient all-reduces run while the rest
// of the backward pass computes) and off (each all-reduce blocks where it
// stands), in the same run:
//
//   flexmoe-compile --model gpt-moe-small --world-size 2 -o small.w2.fmoe
//   OMP_NUM_THREADS=1 mpirun -np 2 build/bin/overlap_step small.w2.fmoe... \
//       [--warmup 2] [--reps 10] [--csv results.csv]
//
// For each program, two executors (one per mode, same seed, same inputs) step
// in turn; each repetition runs both, alternating which goes first, each behind
// a barrier. A step's time is the slowest rank's; "exposed" is the time the
// executor spent inside all-reduce calls (blocking, or start, progress and
// wait), also the slowest rank's; "other comm" is the time in the other
// collectives (all-to-alls, the host all-reduce of the gradient norm and
// the loss, replica group sums). The table gives medians over the
// repetitions and the ratio of the medians. The two executors' losses must
// agree bit for bit, or the benchmark fails instead of timing.
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/device/MpiCommunicator.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Dataset.h"

#include <mpi.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace flexmoe;

namespace {

struct Options {
  std::vector<std::string> programs;
  int64_t warmup = 2;
  int64_t reps = 10;
  std::string csv;
};

StatusOr<int64_t> parseCount(const std::string &flag, const char *text,
                             int64_t least) {
  char *end = nullptr;
  errno = 0;
  long long value = std::strtoll(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || value < least)
    return errorf(flag, " needs an integer >= ", least, ", got '", text, "'");
  return static_cast<int64_t>(value);
}

StatusOr<Options> parseOptions(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> const char * {
      return i + 1 < argc ? argv[++i] : nullptr;
    };
    if (arg == "--warmup" || arg == "--reps") {
      const char *v = value();
      if (!v)
        return errorf(arg, " needs a value");
      StatusOr<int64_t> n = parseCount(arg, v, arg == "--reps" ? 1 : 0);
      if (!n)
        return n.status();
      (arg == "--reps" ? o.reps : o.warmup) = *n;
    } else if (arg == "--csv") {
      const char *v = value();
      if (!v)
        return errorf("--csv needs a file name");
      o.csv = v;
    } else if (!arg.empty() && arg[0] == '-') {
      return errorf("unknown option '", arg,
                    "' (usage: overlap_step PROGRAM.fmoe... [--warmup N] "
                    "[--reps N] [--csv FILE])");
    } else {
      o.programs.push_back(arg);
    }
  }
  if (o.programs.empty())
    return errorf("usage: overlap_step PROGRAM.fmoe... [--warmup N] "
                  "[--reps N] [--csv FILE]");
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double slowest(double local) {
  double max = local;
  MPI_Allreduce(&local, &max, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return max;
}

[[noreturn]] void fail(device::MpiCommunicator &comm, const Status &status) {
  std::fprintf(stderr, "overlap_step: rank %lld: %s\n",
               static_cast<long long>(comm.rank()), status.message().c_str());
  std::fflush(stderr);
  // Other ranks may be inside a collective this rank will never join.
  comm.abort(1);
}

/// Forwards to an MpiCommunicator and adds up the seconds spent in every
/// other collective (all-to-all, all-gather, host all-reduce, group sums):
/// where the time the all-reduces stop blocking goes, if it only moves.
class TimingCommunicator final : public device::Communicator {
public:
  explicit TimingCommunicator(device::MpiCommunicator &inner) : inner_(inner) {}
  int64_t rank() const override { return inner_.rank(); }
  int64_t worldSize() const override { return inner_.worldSize(); }
  Status allGather(std::span<const int64_t> local,
                   std::span<int64_t> all) override {
    return timed([&] { return inner_.allGather(local, all); });
  }
  Status allToAllV(const std::byte *send, std::span<const int64_t> sendCounts,
                   std::span<const int64_t> sendOffsets, std::byte *recv,
                   std::span<const int64_t> recvCounts,
                   std::span<const int64_t> recvOffsets,
                   size_t rowBytes) override {
    return timed([&] {
      return inner_.allToAllV(send, sendCounts, sendOffsets, recv, recvCounts,
                              recvOffsets, rowBytes);
    });
  }
  // The dense all-reduces: the executor times these itself.
  Status allReduce(float *data, int64_t count, device::ReduceOp op) override {
    return inner_.allReduce(data, count, op);
  }
  StatusOr<device::Request> startAllReduce(float *data, int64_t count,
                                           device::ReduceOp op) override {
    return inner_.startAllReduce(data, count, op);
  }
  Status wait(device::Request request) override { return inner_.wait(request); }
  Status progress() override { return inner_.progress(); }
  Status allReduceHost(std::span<double> data, device::ReduceOp op) override {
    return timed([&] { return inner_.allReduceHost(data, op); });
  }
  Status groupSum(float *data, int64_t count,
                  std::span<const int32_t> ranks) override {
    return timed([&] { return inner_.groupSum(data, count, ranks); });
  }
  Status broadcast(std::byte *data, size_t bytes, int64_t root) override {
    return timed([&] { return inner_.broadcast(data, bytes, root); });
  }
  Status send(const std::byte *data, size_t bytes, int64_t dst,
              int tag) override {
    return timed([&] { return inner_.send(data, bytes, dst, tag); });
  }
  Status recv(std::byte *data, size_t bytes, int64_t src, int tag) override {
    return timed([&] { return inner_.recv(data, bytes, src, tag); });
  }
  Status barrier() override {
    return timed([&] { return inner_.barrier(); });
  }

  double seconds = 0;

private:
  template <typename Call> Status timed(Call call) {
    double start = MPI_Wtime();
    Status status = call();
    seconds += MPI_Wtime() - start;
    return status;
  }
  device::MpiCommunicator &inner_;
};

/// What one program measured: per mode ([0] overlap, [1] blocking), the
/// slowest rank's step and exposed all-reduce seconds of each repetition.
struct Measured {
  std::string program;
  int64_t reduces = 0, reduceBytes = 0;
  std::vector<double> stepTimes[2], exposed[2], otherComm[2];
};

Measured measure(device::MpiCommunicator &comm, const std::string &path,
                 const Options &options) {
  int rank = static_cast<int>(comm.rank());
  Measured result;
  result.program = path.substr(path.find_last_of('/') + 1);
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(path);
  if (!loaded)
    fail(comm, loaded.status());
  const fb::Program &prog = loaded->program();
  StatusOr<train::ProgramInputShape> shape = train::programInputShape(prog);
  if (!shape)
    fail(comm, shape.status());
  // What the dense all-reduces move per step.
  int64_t reduceBytes = 0, reduces = 0;
  for (const fb::Instruction *inst : *prog.instructions())
    if (inst->opcode() == fb::OpCode::AllReduceMean ||
        inst->opcode() == fb::OpCode::AllReduceSum) {
      int64_t elements = 1;
      for (int64_t d : *prog.buffers()->Get(inst->outputs()->Get(0))->shape())
        elements *= d;
      reduceBytes += elements * 4;
      ++reduces;
    }

  int64_t tokens = shape->localBatch * shape->seqLen;
  std::mt19937_64 rng(99 + rank);
  std::uniform_int_distribution<int32_t> id(
      0, static_cast<int32_t>(shape->vocabSize - 1));
  std::vector<int32_t> inputs(tokens), labels(tokens);
  for (int32_t &t : inputs)
    t = id(rng);
  for (int32_t &l : labels)
    l = id(rng);

  // [0]: overlap on, [1]: off.
  cpu::CpuDevice devices[2];
  TimingCommunicator comms[2] = {TimingCommunicator(comm),
                                 TimingCommunicator(comm)};
  std::unique_ptr<executor::Executor> executors[2];
  for (int m = 0; m < 2; ++m) {
    executor::ExecutorOptions eo;
    eo.overlapCommunication = m == 0;
    auto exec = executor::Executor::create(*loaded, devices[m], comms[m], eo);
    if (!exec)
      fail(comm, exec.status());
    executors[m] = std::move(exec).value();
    if (Status s = executors[m]->setInputs(inputs, labels); !s.isOk())
      fail(comm, s);
  }

  for (int64_t rep = 0; rep < options.warmup + options.reps; ++rep) {
    float losses[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      int m = (rep + k) % 2; // alternate which mode goes first
      executor::Executor &exec = *executors[m];
      double exposedBefore = exec.exposedCommSeconds();
      double otherBefore = comms[m].seconds;
      MPI_Barrier(MPI_COMM_WORLD);
      double start = MPI_Wtime();
      StatusOr<float> loss = exec.step();
      double local = MPI_Wtime() - start;
      if (!loss)
        fail(comm, loss.status());
      losses[m] = *loss;
      double step = slowest(local);
      double blocked = slowest(exec.exposedCommSeconds() - exposedBefore);
      double other = slowest(comms[m].seconds - otherBefore);
      if (rep >= options.warmup) {
        result.stepTimes[m].push_back(step);
        result.exposed[m].push_back(blocked);
        result.otherComm[m].push_back(other);
      }
    }
    if (std::memcmp(&losses[0], &losses[1], sizeof(float)) != 0)
      fail(comm,
           errorf("step ", rep + 1, ": loss ", losses[0], " with overlap but ",
                  losses[1], " without: the modes must agree bit for bit"));
  }

  result.reduces = reduces;
  result.reduceBytes = reduceBytes;
  return result;
}

} // namespace

int main(int argc, char **argv) {
  auto env = device::MpiEnvironment::init(&argc, &argv);
  if (!env) {
    std::fprintf(stderr, "overlap_step: %s\n", env.status().message().c_str());
    return 1;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Every rank parses the same arguments, so all of them stop together.
  StatusOr<Options> options = parseOptions(argc, argv);
  if (!options) {
    if (rank == 0)
      std::fprintf(stderr, "overlap_step: %s\n",
                   options.status().message().c_str());
    return 2;
  }
  auto created = device::MpiCommunicator::create();
  if (!created) {
    std::fprintf(stderr, "overlap_step: %s\n",
                 created.status().message().c_str());
    device::MpiEnvironment::abort(1);
  }
  device::MpiCommunicator &comm = **created;

  std::vector<Measured> results;
  for (const std::string &path : options->programs)
    results.push_back(measure(comm, path, *options));
  if (rank != 0)
    return 0;
  const char *names[2] = {"overlap", "blocking"};
  FILE *out = nullptr;
  if (!options->csv.empty()) {
    out = std::fopen(options->csv.c_str(), "w");
    if (!out) {
      std::fprintf(stderr, "overlap_step: cannot write '%s': %s\n",
                   options->csv.c_str(), std::strerror(errno));
      comm.abort(1);
    }
    std::fprintf(out, "program,ranks,allreduces,allreduce_bytes,reps,mode,"
                      "median_step_ms,median_exposed_ms,median_other_comm_ms,"
                      "min_step_ms,max_step_ms\n");
  }
  for (const Measured &r : results) {
    double med[2], exp[2], other[2];
    for (int m = 0; m < 2; ++m) {
      med[m] = median(r.stepTimes[m]);
      exp[m] = median(r.exposed[m]);
      other[m] = median(r.otherComm[m]);
    }
    std::printf("%s: %d ranks, %lld dense all-reduces of %.2f MiB per step, "
                "median of %lld steps (after %lld warm-up)\n",
                r.program.c_str(), size, static_cast<long long>(r.reduces),
                r.reduceBytes / 1048576.0,
                static_cast<long long>(options->reps),
                static_cast<long long>(options->warmup));
    std::printf("%-9s | %12s | %14s | %9s | %16s\n", "mode", "step ms",
                "exposed ms", "exposed %", "other comm ms");
    for (int m = 0; m < 2; ++m)
      std::printf("%-9s | %12.2f | %14.2f | %8.1f%% | %16.2f\n", names[m],
                  med[m] * 1e3, exp[m] * 1e3, 100.0 * exp[m] / med[m],
                  other[m] * 1e3);
    std::printf("step time blocking / overlap: %.3f; exposed all-reduce time "
                "blocking / overlap: %.2f\n\n",
                med[1] / med[0], exp[0] > 0 ? exp[1] / exp[0] : 0.0);
    if (out)
      for (int m = 0; m < 2; ++m)
        std::fprintf(
            out, "%s,%d,%lld,%lld,%lld,%s,%.3f,%.3f,%.3f,%.3f,%.3f\n",
            r.program.c_str(), size, static_cast<long long>(r.reduces),
            static_cast<long long>(r.reduceBytes),
            static_cast<long long>(options->reps), names[m], med[m] * 1e3,
            exp[m] * 1e3, other[m] * 1e3,
            *std::min_element(r.stepTimes[m].begin(), r.stepTimes[m].end()) *
                1e3,
            *std::max_element(r.stepTimes[m].begin(), r.stepTimes[m].end()) *
                1e3);
  }
  if (out)
    std::fclose(out);
  return 0;
}
