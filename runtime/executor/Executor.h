//===- Executor.h - runs a program's training step on a device --*- C++ -*-===//
//
// The executor binds every buffer of a verified program to its place in one
// device arena (views share their source's bytes), initialises parameters
// from their init specs with a seeded deterministic RNG, zeroes optimizer
// state, and then runs the instruction stream once per step: compute
// instructions become kernel launches on the device's stream, collectives go
// through the Communicator. Each MoE layer's dispatch plan is computed once
// per step, at the layer's first all-to-all, and reused by the others.
//
// Errors are Status values that name the instruction index and opcode
// ("instruction 17 (moe.combine): ...").
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_EXECUTOR_EXECUTOR_H
#define FLEXMOE_RUNTIME_EXECUTOR_EXECUTOR_H

#include "runtime/device/Communicator.h"
#include "runtime/device/Device.h"
#include "runtime/plan/DispatchPlan.h"
#include "runtime/plan/SlotTable.h"
#include "runtime/program/Program.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace flexmoe::executor {

struct ExecutorOptions {
  /// Seeds parameter initialisation: the same seed gives bit-identical
  /// parameters on every run and every rank.
  uint64_t seed = 0;
  /// Start each dense-gradient all-reduce without waiting and let the rest
  /// of the backward pass run while it is in flight; the executor waits for
  /// it only before the first instruction touching its bytes, before the
  /// updates, and at the end of the run. The results are the blocking
  /// path's. False: every all-reduce blocks where it stands.
  bool overlapCommunication = true;
  /// Collectives on arena data (all-to-all rows, dense all-reduces,
  /// replica-gradient sums) go through this communicator, which takes
  /// device memory (NCCL); host data (counts, losses, norms, migrations)
  /// still goes through the executor's communicator. Null: everything goes
  /// through that one, and on a device the host cannot access the arena
  /// data is staged through host memory (blocking; no overlap).
  device::Communicator *deviceCommunicator = nullptr;
};

/// What one training step does beyond the program's own arithmetic.
struct StepOptions {
  /// This step's learning rate (a schedule's value); <= 0 keeps the lr the
  /// program was compiled with.
  float lr = 0;
  /// Clip the gradients to this global L2 norm (torch's clip_grad_norm_);
  /// 0 = no clipping.
  float maxGradNorm = 0;
  /// Loss scaling: the backward pass is seeded with lossScale instead of 1
  /// and the gradients are divided by it before the update. A non-finite
  /// gradient norm then skips the update (no parameter or optimizer state
  /// changes) and the step reports it; a dynamic scaler lowers the scale.
  float lossScale = 1;
  /// Gradient accumulation: the step runs the forward and backward passes
  /// on `microBatches` micro-batches, calling loadMicroBatch(i) before each
  /// to set its inputs, and updates once with the mean of their gradients
  /// (the gradient of the mean loss over the whole batch). With 1, the
  /// inputs set before the step are used and loadMicroBatch may be empty.
  int64_t microBatches = 1;
  std::function<Status(int64_t micro)> loadMicroBatch;
};

struct StepResult {
  /// The training loss (cross-entropy + auxiliary losses), averaged over
  /// the ranks.
  float loss = 0;
  /// The global L2 norm of the gradients (unscaled, before clipping), every
  /// expert counted once however many replicas it has.
  double gradNorm = 0;
  /// True when the update was skipped because gradNorm was not finite.
  bool skipped = false;
};

/// Routing statistics of one MoE layer in the last step that ran it.
struct LayerStats {
  std::string_view name;
  /// Tokens routed to each expert this step, summed over the ranks.
  std::vector<int64_t> expertTokens;
  /// Rows each device's experts computed (the plan's load).
  std::vector<int64_t> deviceLoad;
  /// max(deviceLoad) / mean(deviceLoad); 1 when perfectly balanced.
  double balanceRatio = 1.0;
  /// max(expertTokens) / mean(expertTokens): the router's own imbalance,
  /// which placement (replicas, slots) turns into balanceRatio.
  double expertBalance = 1.0;
  /// Token copies dropped for exceeding the expert capacity (0 when
  /// dropless), summed over the ranks.
  int64_t droppedTokens = 0;
};

/// What one setPlacement moved, on this rank.
struct MigrationStats {
  /// Expert replicas (parameters and optimizer state) received from and
  /// sent to other ranks, and their bytes.
  int64_t replicasReceived = 0, replicasSent = 0;
  int64_t bytesReceived = 0, bytesSent = 0;
  /// Replicas copied between slots of this rank (the slot rule moved them).
  int64_t localMoves = 0;
  /// Over all ranks: replicas that appeared and disappeared.
  int64_t replicasAdded = 0, replicasRemoved = 0;
  double seconds = 0;
};

/// Measured times of the last step (or evaluate) on this rank, for the
/// policies' cost model and the decision log.
struct StepTimings {
  double stepSeconds = 0;
  /// moe.experts and moe.experts_grad kernels, and the rows they computed
  /// (forward rows; the backward recomputes the same rows).
  double expertSeconds = 0;
  int64_t expertRows = 0;
  /// The all-to-all exchanges (pack, exchange, unpack) and the bytes this
  /// rank sent to other ranks in them.
  double allToAllSeconds = 0;
  int64_t allToAllBytes = 0;
  /// Computing the dispatch plans, from the all-gathered counts (the
  /// all-gather itself waits for the slowest rank and counts as all-to-all).
  double planSeconds = 0;
};

/// A checksum of one local slot's expert state (parameters, and optimizer
/// state separately), to check that replicas stay identical and that
/// migrations lose nothing.
struct SlotChecksum {
  int64_t slot = 0;
  int64_t expert = -1; ///< -1: empty slot
  uint64_t parameters = 0, optimizerState = 0;
};

/// Called with every parameter's final gradient (after communication,
/// before clipping and the update): for gradient dumps and cross-checks.
using GradientObserver = std::function<void(const fb::Buffer &parameter,
                                            const device::Operand &gradient)>;

/// The RNG stream of one parameter (or one expert's slice of it): a pure
/// function of (seed, param_name, expert), so initial values depend neither
/// on the buffer order nor on the placement, and replicas of an expert on
/// different devices start identical. expert = -1 for dense parameters.
void initNormal(uint64_t seed, std::string_view paramName, int64_t expert,
                float std, std::span<float> out);

class Executor {
public:
  /// Binds `program` to a fresh arena of `device`. `program`, `device` and
  /// `comm` must outlive the executor; the communicator's world size must be
  /// the program's.
  static StatusOr<std::unique_ptr<Executor>>
  create(const program::LoadedProgram &program, device::Device &device,
         device::Communicator &comm, ExecutorOptions options = {});

  /// Initialises parameters (init specs), zeroes optimizer state and resets
  /// the step counter. create() calls it once.
  Status initialize();

  /// Copies one step's tokens and labels into the input buffers (their
  /// element counts must match the program's input buffers).
  Status setInputs(std::span<const int32_t> tokens,
                   std::span<const int32_t> labels);

  /// Runs one training step and returns its loss.
  StatusOr<float> step();
  /// Runs one training step with a schedule's lr, clipping or loss scaling.
  StatusOr<StepResult> step(const StepOptions &options);

  /// Runs the forward pass only (no dropout, no gradient, no update) on the
  /// current inputs and returns the mean cross-entropy over the ranks (the
  /// auxiliary losses excluded): the evaluation loss.
  StatusOr<float> evaluate();

  /// ExecutorOptions::deviceCommunicator, set after create() (a NCCL
  /// communicator is made once every rank has its device); between steps.
  void setDeviceCommunicator(device::Communicator *comm) {
    options_.deviceCommunicator = comm;
  }

  /// Steps completed so far.
  int64_t stepsDone() const { return stepsDone_; }
  /// Sets the step counter, for a resume from a checkpoint: AdamW's bias
  /// correction and dropout masks depend on it.
  void setStepsDone(int64_t steps) { stepsDone_ = steps; }

  /// Every parameter's gradient goes to `observer` during step(); empty to
  /// stop.
  void setGradientObserver(GradientObserver observer) {
    gradientObserver_ = std::move(observer);
  }

  /// Routing statistics of MoE layer `layer` in the last step or evaluate().
  const LayerStats &layerStats(size_t layer) const {
    return layerState_[layer].stats;
  }
  size_t numMoeLayers() const { return layerState_.size(); }

  /// The current placement of MoE layer `layer` (the program's until the
  /// first setPlacement).
  const plan::Placement &placement(size_t layer) const {
    return layerState_[layer].placement;
  }

  /// Collective, at a step boundary: every rank calls it with the same
  /// placement for layer `layer` (same world size and slots per device as
  /// the program's; checked with plan::validatePlacement). Each rank's
  /// expert parameters and optimizer state move to the slots the new
  /// placement gives them (docs/IR.md's slot rule): kept replicas are
  /// copied locally, new ones received from a rank holding them, all in one
  /// global order so that blocking point-to-point never deadlocks. Replica
  /// groups and the gradient-norm terms follow. On error the executor is
  /// unusable (ranks may have moved data); callers abort the run.
  Status setPlacement(size_t layer, const plan::Placement &next,
                      MigrationStats *stats = nullptr);

  /// The layer's all-gathered token counts of the last step or evaluate
  /// (counts[src * E + e], what the dispatch plan was made from).
  std::span<const int64_t> routingCounts(size_t layer) const {
    return layerState_[layer].allCounts;
  }

  /// Bytes of one expert's parameters (all of the layer's expert tensors)
  /// and of its parameters plus optimizer state: the cost model's
  /// replica-sync and migration sizes.
  int64_t expertParameterBytes(size_t layer) const;
  int64_t expertStateBytes(size_t layer) const;
  /// Bytes of one row in the layer's all-to-all (d_model x 4).
  int64_t allToAllRowBytes(size_t layer) const;

  /// A test and benchmark load generator: `bias` (one value per expert of
  /// the layer, or empty for none) is added to the gate's logits before the
  /// softmax and top-k in training steps (not in evaluate). A constant of
  /// the step, so the gradients stay exact for the biased model.
  Status setRoutingBias(size_t layer, std::vector<float> bias);

  /// This rank's local slots of layer `layer` and their checksums.
  StatusOr<std::vector<SlotChecksum>> slotChecksums(size_t layer) const;

  /// Timings of the last step or evaluate.
  const StepTimings &timings() const { return timings_; }

  /// Seconds spent inside dense-gradient all-reduce calls since create()
  /// (the blocking call; or starting, progressing and waiting): the
  /// all-reduce time not hidden behind computation.
  double exposedCommSeconds() const { return exposedCommSeconds_; }

  /// The program this executor runs and the device it runs on.
  const program::LoadedProgram &program() const { return program_; }
  device::Device &device() const { return device_; }
  device::Communicator &communicator() const { return comm_; }

  /// A buffer bound to the arena (for tests, checkpoints and dumps).
  const device::Operand &buffer(uint32_t id) const { return operands_[id]; }
  size_t numBuffers() const { return operands_.size(); }
  std::byte *arenaBase() const { return arena_->base(); }
  /// The dispatch plan of MoE layer `layer` in the last step that ran it.
  const plan::DispatchPlan &dispatchPlan(size_t layer) const {
    return layerState_[layer].plan;
  }

private:
  struct LayerState {
    plan::Placement placement;
    plan::DispatchPlan plan;
    /// The run (step or evaluate) whose counts `plan` was computed from.
    int64_t plannedRun = -1;
    std::vector<int64_t> localCounts, allCounts;
    /// localCounts' prefix sums: where each expert's rows start in the
    /// packed expert-grouped order the plan works on.
    std::vector<int64_t> expertStart;
    /// Token copies this rank routes per step (moe.dispatch's ids, T·k).
    int64_t routedCopies = 0;
    LayerStats stats;
    /// Derived from `placement` (setPlacement recomputes them): the replica
    /// groups moe.replica_grad_sync sums over.
    std::vector<plan::ReplicaGroup> replicaGroups;
    /// The layer's persistent expert buffers ([slots, ...], no views):
    /// parameters, then optimizer state; what a migration moves.
    std::vector<uint32_t> expertParameters, expertState;
    /// setRoutingBias's values (empty: none).
    std::vector<float> routingBias;
    /// setPlacement's host staging (old slots, one message), kept so that
    /// later migrations reuse the pages.
    std::vector<std::byte> migrationScratch;
  };

  // Run-time placement (ExecutorPlacement.cpp).
  /// Fills every LayerState's buffers and replica groups from its placement.
  Status prepareLayers();
  /// The gradient-norm terms from the current placements.
  void buildNormTerms();

  /// What to do with the instructions of one run over the stream.
  struct RunMode {
    bool training = true;
    /// Stop after this instruction (evaluate: the last forward one).
    size_t end = 0;
    const StepOptions *options = nullptr;
    /// Set by the first update of the step: the factor every gradient is
    /// multiplied by (clipping and loss scale), and whether to skip.
    double gradScale = 1.0;
    bool skipUpdates = false;
    double gradNorm = 0;
    /// The micro-batch being run (dropout masks differ per micro-batch).
    int64_t micro = 0;
    /// Gradient accumulation: the running sums (accumulation_) hold the
    /// earlier micro-batches' gradients.
    bool accumulated = false;
  };

  Executor(const program::LoadedProgram &program, device::Device &device,
           device::Communicator &comm, ExecutorOptions options)
      : program_(program), device_(device), comm_(comm), options_(options) {}

  Status bind();
  Status analyse();
  Status run(RunMode &mode);
  Status accumulateGradients(RunMode &mode);
  Status runInstruction(const fb::Instruction &instruction, RunMode &mode,
                        int64_t index);
  Status planLayer(int32_t layerIndex, const device::Operand &counts);
  Status prepareUpdates(RunMode &mode);
  Status averageOverRanks(float &value);
  Status runAllToAll(const fb::Instruction &instruction, bool dispatch);
  Status runReplicaGradSync(const fb::Instruction &instruction);
  Status runAllReduce(const fb::Instruction &instruction, bool mean);

  // Data movement on the device (Stream operations) and collectives on arena
  // data, staged through host memory when neither the device nor a device
  // communicator lets the communicator read it.
  /// Device memory of at least `bytes` bytes, kept between calls (its
  /// contents are not).
  StatusOr<std::byte *> workspace(size_t bytes);
  /// True when arena pointers may go to a communicator as they are.
  bool commReadsArena() const {
    return device_.hostAccessible() || options_.deviceCommunicator;
  }
  device::Communicator &dataComm() const {
    return options_.deviceCommunicator ? *options_.deviceCommunicator : comm_;
  }
  /// A device communicator runs on its own stream: the arena data it reads
  /// must be written first.
  Status beforeDeviceCollective();
  Status exchangeRows(const std::byte *send,
                      std::span<const int64_t> sendCounts,
                      std::span<const int64_t> sendOffsets, int64_t sendRows,
                      std::byte *recv, std::span<const int64_t> recvCounts,
                      std::span<const int64_t> recvOffsets, int64_t recvRows,
                      size_t rowBytes);
  Status sumOverGroup(float *data, int64_t count,
                      std::span<const int32_t> ranks);
  Status copyOperand(const device::Operand &in, const device::Operand &out);
  /// Host copies of int32 device data (counts).
  Status readInts(const device::Operand &operand, std::vector<int32_t> &out);

  const program::LoadedProgram &program_;
  device::Device &device_;
  device::Communicator &comm_;
  ExecutorOptions options_;
  std::unique_ptr<device::Arena> arena_;
  std::unique_ptr<device::Stream> stream_;
  std::vector<device::Operand> operands_;
  std::vector<LayerState> layerState_;
  int64_t stepsDone_ = 0;
  /// Runs over the stream (steps and evaluations): keys the per-run plans.
  int64_t runsDone_ = 0;
  GradientObserver gradientObserver_;
  StepTimings timings_;
  /// From analyse(): the first AdamW instruction (every later one is an
  /// AdamW too: spmd-partition puts all updates last), the last instruction
  /// of the forward pass (the last writer of the loss), the cross-entropy
  /// buffer, the instruction seeding the backward pass, and the gradient
  /// buffers whose squares count towards the global norm on this rank.
  size_t firstUpdate_ = 0;
  bool updatesLast_ = true;
  size_t forwardEnd_ = 0;
  int64_t crossEntropyBuffer_ = -1;
  int64_t seedInstruction_ = -1;
  struct NormTerm {
    uint32_t buffer;
    int64_t offset, count; // elements
    bool expert;           // differs per rank: summed over the ranks
  };
  std::vector<NormTerm> normTerms_;
  /// Gradient accumulation: one running sum per update's gradient, at
  /// accumulationOffsets_[u] bytes into accumulation_ (device memory).
  std::unique_ptr<device::Arena> accumulation_;
  std::vector<size_t> accumulationOffsets_;
  /// workspace()'s memory; the segment lists and host staging of the
  /// all-to-alls, kept so that steps reuse their storage.
  std::unique_ptr<device::Arena> workspace_;
  std::vector<device::CopySegment> segments_;
  std::vector<std::byte> hostSend_, hostRecv_;
  std::vector<float> hostFloats_;
  /// Timing events around the expert kernels of a run on an asynchronous
  /// device (StepTimings::expertSeconds), reused from run to run.
  StatusOr<std::pair<device::Event *, device::Event *>> nextExpertEvents();
  std::vector<
      std::pair<std::unique_ptr<device::Event>, std::unique_ptr<device::Event>>>
      expertEvents_;
  size_t expertEventsUsed_ = 0;
  std::vector<int32_t> hostInts_;

  // --- Communication overlap (ExecutorOptions::overlapCommunication) ---
  /// Computes waitsBefore_ once, from the arena layout.
  Status analyseOverlap();
  /// Waits for the in-flight all-reduces instruction `index` needs.
  Status waitBefore(size_t index);
  /// Waits for every in-flight all-reduce.
  Status waitForAllReduces();
  Status waitFor(size_t slot);
  /// Lets the in-flight all-reduces advance (comm.progress()).
  Status progressAllReduces();
  /// After an error: waits for what is still in flight (so no request
  /// outlives the run), keeping the first error.
  void drainAllReduces();
  /// waitsBefore_[i]: the all-reduce instructions whose output bytes
  /// instruction i is the first to read or write after them.
  std::vector<std::vector<uint32_t>> waitsBefore_;
  struct InFlightAllReduce {
    size_t instruction;
    device::Request request;
  };
  std::vector<InFlightAllReduce> inFlight_;
  /// The instruction run() is running (runAllReduce's index).
  size_t runningInstruction_ = 0;
  double exposedCommSeconds_ = 0;
};

} // namespace flexmoe::executor

#endif // FLEXMOE_RUNTIME_EXECUTOR_EXECUTOR_H
