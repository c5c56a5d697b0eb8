//===- flexmoe-placement-test.cpp - placement invariance under mpirun -----===//
//
// A test driver run under mpirun (any world size): changing the expert
// placement at run time must not change the training. It trains a program
// twice in one process, with the same seed, data and routing bias:
//
//   (a) on the compiled placement throughout;
//   (b) with a new pseudo-random placement (replicated hot experts, dropped
//       replicas, experts moved between ranks) every --replan-every steps.
//
// and checks that
//   - every step's loss and gradient norm (clipped at 0.5, so the norm
//     steers the update) of (b) equal (a)'s within --tolerance (relative);
//   - after every step of (b), all replicas of an expert have the same
//     parameter and optimizer-state checksums (gathered from every rank);
//   - every migration keeps every expert's checksums;
//   - (b)'s checkpoint, saved under its last placement, reloads into it
//     unchanged, and loaded into a fresh executor on the compiled placement
//     matches (a)'s final parameters and optimizer state within
//     --param-tolerance (relative, per tensor).
// Each rank prints "rank R: placement invariance holds" when all hold.
//
// --corrupt-after-replan N: self-check; after the N-th re-plan the last rank
// flips a bit of one expert slot, which the migration check must report.
//
// Usage: flexmoe-placement-test PROGRAM.fmoe --out DIR [--steps N]
//          [--replan-every K] [--bias B] [--tolerance X]
//          [--param-tolerance Y] [--skip NAME]... [--corrupt-after-replan N]
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/device/MpiCommunicator.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/Dataset.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace flexmoe;
using device::MpiCommunicator;
using executor::Executor;

namespace {

struct Options {
  std::string program, out;
  int64_t steps = 50, replanEvery = 5, corruptAfterReplan = -1;
  double bias = 2.0, tolerance = 1e-4, paramTolerance = 1e-3;
  /// Buffers whose name contains one of these are not compared at the end.
  std::vector<std::string> skip;
};

MpiCommunicator *gComm = nullptr;

[[noreturn]] void fatal(const std::string &message) {
  std::fprintf(stderr, "flexmoe-placement-test: rank %lld: %s\n",
               static_cast<long long>(gComm ? gComm->rank() : 0),
               message.c_str());
  std::fflush(stderr);
  if (gComm)
    gComm->abort(1);
  std::exit(1);
}

void check(const Status &status, const std::string &what) {
  if (!status.isOk())
    fatal(what + ": " + status.message());
}

template <typename T> T take(StatusOr<T> value, const std::string &what) {
  if (!value)
    fatal(what + ": " + value.status().message());
  return std::move(value).value();
}

/// Every rank's share of step `step`'s global batch (the same for both
/// runs): random ids, a fixed function of the step.
void setBatch(Executor &ex, const train::ProgramInputShape &shape,
              int64_t step) {
  int64_t tokens = shape.localBatch * shape.seqLen;
  train::SplitMix64 rng(0x5eed0000 + step);
  std::vector<int32_t> all(2 * tokens * shape.worldSize);
  for (int32_t &id : all)
    id = static_cast<int32_t>(rng.below(shape.vocabSize));
  int64_t r = ex.communicator().rank();
  std::span<const int32_t> span(all);
  check(ex.setInputs(span.subspan(2 * r * tokens, tokens),
                     span.subspan((2 * r + 1) * tokens, tokens)),
        "inputs of step " + std::to_string(step));
}

/// The routing bias: expert 0 hottest, falling linearly to 0 for the last.
std::vector<float> skew(int64_t experts, double scale) {
  std::vector<float> bias(experts, 0.0f);
  for (int64_t e = 0; e + 1 < experts; ++e)
    bias[e] = static_cast<float>(scale * (experts - 1 - e) / (experts - 1));
  return bias;
}

/// A pseudo-random valid placement: every expert on one random device with
/// a free slot, then extra replicas (more for the hot, low-id experts) on
/// random devices while slots are free.
plan::Placement randomPlacement(const plan::Placement &shape,
                                train::SplitMix64 &rng) {
  int64_t W = shape.worldSize, S = shape.slotsPerDevice, E = shape.numExperts();
  plan::Placement next;
  next.worldSize = W;
  next.slotsPerDevice = S;
  next.replicas.assign(E, {});
  std::vector<int64_t> free(W, S);
  auto pick = [&](int64_t expert) -> int64_t {
    std::vector<int64_t> candidates;
    for (int64_t d = 0; d < W; ++d)
      if (free[d] > 0 &&
          std::find(next.replicas[expert].begin(), next.replicas[expert].end(),
                    d) == next.replicas[expert].end())
        candidates.push_back(d);
    if (candidates.empty())
      return -1;
    return candidates[rng.below(candidates.size())];
  };
  std::vector<int64_t> order(E);
  for (int64_t e = 0; e < E; ++e)
    order[e] = e;
  for (int64_t i = E - 1; i > 0; --i)
    std::swap(order[i], order[rng.below(i + 1)]);
  for (int64_t e : order) {
    int64_t d = pick(e);
    if (d < 0)
      fatal("no free slot for expert " + std::to_string(e));
    next.replicas[e].push_back(d);
    --free[d];
  }
  for (int64_t e : order) {
    int64_t extra = rng.below(e < E / 2 ? W : 2);
    for (int64_t i = 0; i < extra; ++i) {
      int64_t d = pick(e);
      if (d < 0)
        break;
      next.replicas[e].push_back(d);
      --free[d];
    }
  }
  return next;
}

/// Every expert's (parameters, optimizer state) checksums, gathered from
/// every rank's slots; fails when two replicas of an expert differ.
std::vector<std::pair<uint64_t, uint64_t>>
expertChecksums(Executor &ex, size_t layer, const std::string &when) {
  MpiCommunicator &comm = *gComm;
  std::vector<executor::SlotChecksum> mine =
      take(ex.slotChecksums(layer), "checksums " + when);
  std::vector<int64_t> local;
  for (const executor::SlotChecksum &sum : mine) {
    local.push_back(sum.expert);
    local.push_back(std::bit_cast<int64_t>(sum.parameters));
    local.push_back(std::bit_cast<int64_t>(sum.optimizerState));
  }
  std::vector<int64_t> all(local.size() * comm.worldSize());
  check(comm.allGather(local, all), "gathering checksums " + when);
  const plan::Placement &placement = ex.placement(layer);
  std::vector<std::pair<uint64_t, uint64_t>> sums(placement.numExperts());
  std::vector<int64_t> holder(placement.numExperts(), -1);
  for (int64_t r = 0; r < comm.worldSize(); ++r)
    for (size_t s = 0; s < mine.size(); ++s) {
      const int64_t *entry = &all[(r * mine.size() + s) * 3];
      int64_t e = entry[0];
      if (e < 0)
        continue;
      std::pair<uint64_t, uint64_t> sum{std::bit_cast<uint64_t>(entry[1]),
                                        std::bit_cast<uint64_t>(entry[2])};
      if (holder[e] < 0) {
        holder[e] = r;
        sums[e] = sum;
      } else if (sums[e] != sum) {
        fatal("layer " + std::to_string(layer) + " " + when +
              ": the replicas of expert " + std::to_string(e) + " on ranks " +
              std::to_string(holder[e]) + " and " + std::to_string(r) +
              " differ (" +
              (sums[e].first != sum.first ? "parameters" : "optimizer state") +
              ")");
      }
    }
  for (int64_t e = 0; e < placement.numExperts(); ++e) {
    if (holder[e] < 0)
      fatal("layer " + std::to_string(layer) + " " + when + ": expert " +
            std::to_string(e) + " is in no slot");
    int64_t replicas = 0;
    for (int64_t r = 0; r < comm.worldSize(); ++r)
      for (size_t s = 0; s < mine.size(); ++s)
        replicas += all[(r * mine.size() + s) * 3] == e;
    if (replicas != static_cast<int64_t>(placement.replicas[e].size()))
      fatal("layer " + std::to_string(layer) + " " + when + ": expert " +
            std::to_string(e) + " is in " + std::to_string(replicas) +
            " slots but has " + std::to_string(placement.replicas[e].size()) +
            " replicas");
  }
  return sums;
}

/// Flips one bit of the first slot holding an expert (self-check).
void corruptOneSlot(Executor &ex, size_t layer) {
  const fb::Program &prog = ex.program().program();
  for (uint32_t id = 0; id < ex.numBuffers(); ++id) {
    const fb::Buffer &b = *prog.buffers()->Get(id);
    if (b.moe_layer() != static_cast<int32_t>(layer) ||
        b.kind() != fb::BufferKind::Parameter || b.alias_of() >= 0)
      continue;
    std::vector<executor::SlotChecksum> sums =
        take(ex.slotChecksums(layer), "checksums");
    for (const executor::SlotChecksum &sum : sums)
      if (sum.expert >= 0) {
        const device::Operand &op = ex.buffer(id);
        size_t perSlot = op.numBytes() / sums.size();
        op.data[sum.slot * perSlot] ^= std::byte{1};
        std::printf("rank %lld: corrupted expert %lld in slot %lld of '%s'\n",
                    static_cast<long long>(gComm->rank()),
                    static_cast<long long>(sum.expert),
                    static_cast<long long>(sum.slot), b.name()->c_str());
        std::fflush(stdout);
        return;
      }
  }
}

std::unique_ptr<Executor> makeExecutor(const program::LoadedProgram &program,
                                       cpu::CpuDevice &device, double bias) {
  std::unique_ptr<Executor> ex =
      take(Executor::create(program, device, *gComm), "creating an executor");
  for (size_t l = 0; l < ex->numMoeLayers(); ++l)
    check(ex->setRoutingBias(l, skew(ex->placement(l).numExperts(), bias)),
          "routing bias");
  return ex;
}

/// Worst relative difference, per buffer, of every persistent buffer of
/// `a` and `b` (same program, same placement) on this rank.
double compareState(Executor &a, Executor &b,
                    const std::vector<std::string> &skip,
                    std::string &worstName) {
  const fb::Program &prog = a.program().program();
  double worst = 0;
  for (uint32_t id = 0; id < a.numBuffers(); ++id) {
    const fb::Buffer &buf = *prog.buffers()->Get(id);
    if (buf.alias_of() >= 0 || buf.element_type() != fb::ElementType::F32 ||
        (buf.kind() != fb::BufferKind::Parameter &&
         buf.kind() != fb::BufferKind::AdamM &&
         buf.kind() != fb::BufferKind::AdamV))
      continue;
    if (std::any_of(skip.begin(), skip.end(), [&](const std::string &part) {
          return buf.name()->string_view().find(part) != std::string::npos;
        }))
      continue;
    const float *x = a.buffer(id).as<float>(), *y = b.buffer(id).as<float>();
    double diff = 0, scale = 1e-30;
    for (int64_t i = 0; i < a.buffer(id).numElements(); ++i) {
      diff = std::max(diff, std::abs(double(x[i]) - y[i]));
      scale = std::max(scale, std::abs(double(x[i])));
    }
    if (diff / scale > worst) {
      worst = diff / scale;
      worstName = buf.name()->str();
    }
  }
  return worst;
}

int run(const Options &options) {
  MpiCommunicator &comm = *gComm;
  int64_t rank = comm.rank();
  program::LoadedProgram program =
      take(program::loadProgram(options.program), "loading the program");
  train::ProgramInputShape shape =
      take(train::programInputShape(program.program()), "input shape");
  cpu::CpuDevice deviceA, deviceB, deviceC;

  // (a) the compiled placement throughout.
  std::unique_ptr<Executor> a = makeExecutor(program, deviceA, options.bias);
  // Clipping makes the update depend on the gradient norm, whose expert
  // terms follow the placement.
  executor::StepOptions stepOptions;
  stepOptions.maxGradNorm = 0.5f;
  std::vector<executor::StepResult> resultsA;
  for (int64_t s = 1; s <= options.steps; ++s) {
    setBatch(*a, shape, s);
    resultsA.push_back(
        take(a->step(stepOptions), "(a) step " + std::to_string(s)));
  }

  // (b) a new placement every few steps.
  std::unique_ptr<Executor> b = makeExecutor(program, deviceB, options.bias);
  train::SplitMix64 rng(0x9ace);
  int64_t replans = 0, added = 0, removed = 0, transfers = 0, moves = 0;
  double worstLoss = 0, worstNorm = 0, migrationSeconds = 0;
  int64_t migrationBytes = 0;
  for (int64_t s = 1; s <= options.steps; ++s) {
    if ((s - 1) % options.replanEvery == 0 && s > 1) {
      ++replans;
      for (size_t l = 0; l < b->numMoeLayers(); ++l) {
        std::string when = "before re-plan " + std::to_string(replans);
        auto before = expertChecksums(*b, l, when);
        plan::Placement next = randomPlacement(b->placement(l), rng);
        executor::MigrationStats stats;
        check(b->setPlacement(l, next, &stats),
              "re-plan " + std::to_string(replans));
        if (replans == options.corruptAfterReplan &&
            rank == comm.worldSize() - 1)
          corruptOneSlot(*b, l);
        when = "after re-plan " + std::to_string(replans);
        auto after = expertChecksums(*b, l, when);
        for (size_t e = 0; e < before.size(); ++e)
          if (before[e] != after[e])
            fatal("layer " + std::to_string(l) + ": the checksum of expert " +
                  std::to_string(e) + " changed across re-plan " +
                  std::to_string(replans) + " (" +
                  (before[e].first != after[e].first ? "parameters"
                                                     : "optimizer state") +
                  ")");
        added += stats.replicasAdded;
        removed += stats.replicasRemoved;
        moves += stats.localMoves;
        transfers += stats.replicasReceived;
        migrationSeconds += stats.seconds;
        migrationBytes += stats.bytesSent;
        if (rank == 0)
          std::printf(
              "re-plan %lld layer %zu: +%lld -%lld replicas, rank 0 "
              "sent %lld received %lld (%lld bytes), %lld local "
              "moves, %.3f ms\n",
              static_cast<long long>(replans), l,
              static_cast<long long>(stats.replicasAdded),
              static_cast<long long>(stats.replicasRemoved),
              static_cast<long long>(stats.replicasSent),
              static_cast<long long>(stats.replicasReceived),
              static_cast<long long>(stats.bytesSent + stats.bytesReceived),
              static_cast<long long>(stats.localMoves), stats.seconds * 1e3);
      }
    }
    setBatch(*b, shape, s);
    executor::StepResult result =
        take(b->step(stepOptions), "(b) step " + std::to_string(s));
    for (size_t l = 0; l < b->numMoeLayers(); ++l)
      expertChecksums(*b, l, "after step " + std::to_string(s));
    const executor::StepResult &want = resultsA[s - 1];
    auto relative = [](double x, double y) {
      return std::abs(x - y) / std::max(1e-30, std::abs(y));
    };
    double rel = relative(result.loss, want.loss);
    worstLoss = std::max(worstLoss, rel);
    if (!(rel <= options.tolerance))
      fatal("step " + std::to_string(s) + ": loss " +
            std::to_string(result.loss) + " with re-plans but " +
            std::to_string(want.loss) +
            " on the compiled placement (relative difference " +
            std::to_string(rel) + ")");
    rel = relative(result.gradNorm, want.gradNorm);
    worstNorm = std::max(worstNorm, rel);
    if (!(rel <= options.tolerance))
      fatal("step " + std::to_string(s) + ": gradient norm " +
            std::to_string(result.gradNorm) + " with re-plans but " +
            std::to_string(want.gradNorm) +
            " on the compiled placement (relative difference " +
            std::to_string(rel) + ")");
  }
  if (replans < 1)
    fatal("no re-plan ran: use more --steps than --replan-every");

  // (b)'s checkpoint: saved under its last placement, reloaded into it
  // unchanged, and into a fresh executor on the compiled placement.
  std::string path = options.out + "/b";
  check(train::saveCheckpoint(*b, path, nlohmann::json::object()),
        "saving (b)'s checkpoint");
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> saved;
  for (size_t l = 0; l < b->numMoeLayers(); ++l)
    saved.push_back(expertChecksums(*b, l, "before the reload"));
  take(train::loadCheckpoint(*b, path), "reloading (b)'s checkpoint");
  for (size_t l = 0; l < b->numMoeLayers(); ++l)
    if (expertChecksums(*b, l, "after the reload") != saved[l])
      fatal("layer " + std::to_string(l) +
            ": (b)'s experts changed in a checkpoint round trip");
  std::unique_ptr<Executor> c = makeExecutor(program, deviceC, options.bias);
  take(train::loadCheckpoint(*c, path), "loading (b)'s checkpoint");
  std::string worstName;
  double worstParam = compareState(*a, *c, options.skip, worstName);
  if (!(worstParam <= options.paramTolerance))
    fatal("final state of (a) and (b) differs: '" + worstName +
          "' by a relative " + std::to_string(worstParam));

  if (rank == 0)
    std::printf("%lld steps, %lld re-plans: %lld replicas added, %lld "
                "removed, %lld received by rank 0, %lld local moves on rank "
                "0; rank 0's migrations took %.3f ms for %lld bytes sent; "
                "worst relative difference of the losses %.3g, of the gradient "
                "norms %.3g\n",
                static_cast<long long>(options.steps),
                static_cast<long long>(replans), static_cast<long long>(added),
                static_cast<long long>(removed),
                static_cast<long long>(transfers),
                static_cast<long long>(moves), migrationSeconds * 1e3,
                static_cast<long long>(migrationBytes), worstLoss, worstNorm);
  std::printf("rank %lld: placement invariance holds (worst state difference "
              "%.3g in '%s')\n",
              static_cast<long long>(rank), worstParam, worstName.c_str());
  std::fflush(stdout);
  return 0;
}

int usage(const std::string &problem) {
  std::fprintf(stderr,
               "flexmoe-placement-test: %s\nusage: flexmoe-placement-test "
               "PROGRAM.fmoe --out DIR [--steps N] [--replan-every K] "
               "[--bias B] [--tolerance X] [--param-tolerance Y] "
               "[--skip NAME]... [--corrupt-after-replan N]\n",
               problem.c_str());
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  StatusOr<std::unique_ptr<device::MpiEnvironment>> env =
      device::MpiEnvironment::init(&argc, &argv);
  if (!env) {
    std::fprintf(stderr, "flexmoe-placement-test: %s\n",
                 env.status().message().c_str());
    return 1;
  }
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with("--")) {
      if (i + 1 >= argc)
        return usage(arg + " needs a value");
      const char *v = argv[++i];
      if (arg == "--out")
        options.out = v;
      else if (arg == "--steps")
        options.steps = std::atoll(v);
      else if (arg == "--replan-every")
        options.replanEvery = std::atoll(v);
      else if (arg == "--bias")
        options.bias = std::atof(v);
      else if (arg == "--tolerance")
        options.tolerance = std::atof(v);
      else if (arg == "--param-tolerance")
        options.paramTolerance = std::atof(v);
      else if (arg == "--skip")
        options.skip.push_back(v);
      else if (arg == "--corrupt-after-replan")
        options.corruptAfterReplan = std::atoll(v);
      else
        return usage("unknown option '" + arg + "'");
    } else if (options.program.empty()) {
      options.program = arg;
    } else {
      return usage("more than one program given");
    }
  }
  if (options.program.empty() || options.out.empty())
    return usage("a program and --out are required");
  if (options.steps < 1 || options.replanEvery < 1)
    return usage("--steps and --replan-every must be at least 1");

  StatusOr<std::unique_ptr<MpiCommunicator>> created =
      MpiCommunicator::create();
  if (!created) {
    std::fprintf(stderr, "flexmoe-placement-test: %s\n",
                 created.status().message().c_str());
    device::MpiEnvironment::abort(1);
  }
  gComm = created->get();
  return run(options);
}
