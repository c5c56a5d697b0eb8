//===- flexmoe-run.cpp - train with a compiled program --------------------===//
//
// Loads a .fmoe program, binds it to the CPU device and trains: stateless
// seeded batches from a corpus (runtime/train/Dataset), a warm-up + decay
// learning-rate schedule, gradient clipping and loss scaling (executor step
// options), periodic evaluation on the held-out split, a log line per step
// and a metrics file, checkpoints (runtime/train/Checkpoint) and an exact
// resume. Ends with a summary that puts the eval loss beside the corpus's
// unigram entropy. --help lists every flag.
//
//===----------------------------------------------------------------------===//

#include "Metrics.h"
#include "Options.h"
#include "PlacementControl.h"

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/device/MpiCommunicator.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Checkpoint.h"
#include "runtime/train/Dataset.h"
#include "runtime/train/LossScaler.h"
#ifdef FLEXMOE_HAVE_CUDA
#include "runtime/backends/cuda/CudaDevice.h"
#include "runtime/device/NcclCommunicator.h"
#endif

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <omp.h>
#include <unistd.h>

using namespace flexmoe;
using namespace flexmoe::run;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

#ifndef FLEXMOE_DEFAULT_CORPUS
#define FLEXMOE_DEFAULT_CORPUS ""
#endif

namespace {

std::atomic<bool> interrupted{false};

void onInterrupt(int) { interrupted = true; }

/// Ranks on this node per the launcher, or 0 when it does not say.
int localRanks() {
  for (const char *name :
       {"OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const char *value = std::getenv(name))
      if (int n = std::atoi(value); n > 0)
        return n;
  return 0;
}

/// This rank's index among the ranks of its node per the launcher, or 0.
int localRankInEnvironment() {
  for (const char *name : {"OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK",
                           "MPI_LOCALRANKID", "SLURM_LOCALID"})
    if (const char *value = std::getenv(name))
      if (int n = std::atoi(value); n >= 0)
        return n;
  return 0;
}

/// Ranks that share a node share its cores: without OMP_NUM_THREADS or
/// OPENBLAS_NUM_THREADS, each takes cores / local ranks (at least 1) instead
/// of every core, which would oversubscribe the node.
void shareCoresAmongLocalRanks() {
  if (std::getenv("OMP_NUM_THREADS") || std::getenv("OPENBLAS_NUM_THREADS"))
    return;
  if (int ranks = localRanks(); ranks > 1)
    omp_set_num_threads(std::max(1, omp_get_num_procs() / ranks));
}

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

/// The learning rate of step `step` (1-based): linear warm-up to `lr`, then
/// the schedule's decay to `minLr` at `steps`.
double learningRate(const Options &o, int64_t step) {
  if (o.warmup > 0 && step <= o.warmup)
    return o.lr * static_cast<double>(step) / static_cast<double>(o.warmup);
  if (o.schedule == Schedule::Constant || o.steps <= o.warmup)
    return o.lr;
  double progress = static_cast<double>(step - o.warmup) /
                    static_cast<double>(o.steps - o.warmup);
  progress = std::clamp(progress, 0.0, 1.0);
  if (o.schedule == Schedule::Linear)
    return o.lr - (o.lr - o.minLr) * progress;
  return o.minLr +
         (o.lr - o.minLr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

/// The checkpoint a --resume path names: the path itself, or in a directory
/// the step-N checkpoint with the highest N whose sidecar exists.
StatusOr<std::string> resolveResume(const std::string &path) {
  std::error_code error;
  if (!fs::is_directory(path, error)) {
    if (!train::checkpointExists(path))
      return errorf("no checkpoint at '", path, "' (expected ",
                    train::checkpointSidecarPath(path), ")");
    return path;
  }
  std::string best;
  int64_t bestStep = -1;
  for (const fs::directory_entry &entry : fs::directory_iterator(path, error)) {
    std::string name = entry.path().filename().string();
    if (!name.starts_with("step-") || !name.ends_with(".json"))
      continue;
    std::string stem = name.substr(5, name.size() - 10);
    char *end = nullptr;
    long long step = std::strtoll(stem.c_str(), &end, 10);
    std::string prefix = (fs::path(path) / name.substr(0, name.size() - 5));
    if (end == stem.c_str() + stem.size() && step > bestStep &&
        train::checkpointExists(prefix)) {
      bestStep = step;
      best = prefix;
    }
  }
  if (error)
    return errorf("cannot list '", path, "': ", error.message());
  if (best.empty())
    return errorf("no checkpoint in directory '", path,
                  "' (expected step-N.json and step-N.safetensors)");
  return best;
}

std::string checkpointPath(const std::string &dir, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%06lld", static_cast<long long>(step));
  return (fs::path(dir) / name).string();
}

/// What a checkpoint records of the run, so that a resume can continue it.
nlohmann::json trainerState(const Options &o, int64_t tokensSeen,
                            double elapsed, int64_t dataTokens) {
  return {{"data", o.data},
          {"data_format", o.dataFormat},
          {"data_tokens", dataTokens},
          {"eval_fraction", o.evalFraction},
          {"steps", o.steps},
          {"batch", o.batch},
          {"lr", o.lr},
          {"min_lr", o.minLr},
          {"warmup", o.warmup},
          {"schedule", scheduleName(o.schedule)},
          {"clip_grad", o.clipGrad},
          {"loss_scale", o.lossScale},
          {"loss_scale_dynamic", o.dynamicLossScale},
          {"loss_scale_window", o.lossScaleWindow},
          {"device", o.device},
          {"precision", o.precision},
          {"seed", o.seed},
          {"eval_every", o.evalEvery},
          {"eval_batches", o.evalBatches},
          {"placement_policy", o.placementPolicy},
          {"rebalance_threshold", o.rebalanceThreshold},
          {"monitor_window", o.monitorWindow},
          {"max_slots", o.maxSlots},
          {"replan_interval", o.replanInterval},
          {"min_gain", o.minGain},
          {"routing_skew", skewName(o.skew, o.skewStrength)},
          {"skew_period", o.skewPeriod},
          {"tokens_seen", tokensSeen},
          {"elapsed_s", elapsed}};
}

/// On a resume, every flag the user did not give takes the checkpoint's
/// value; a given one that changes the run's arithmetic is reported.
Status mergeSavedOptions(const nlohmann::json &saved, Options &o,
                         MetricsSink &sink) {
  auto take = [&](const char *flag, const char *key, auto &field) -> Status {
    if (!saved.contains(key))
      return Status::ok();
    using T = std::decay_t<decltype(field)>;
    T value{};
    try {
      value = saved.at(key).get<T>();
    } catch (const std::exception &e) {
      return errorf("the checkpoint's trainer state has a bad '", key,
                    "': ", e.what());
    }
    if (!o.given.count(flag))
      field = value;
    else if (field != value && std::string(flag) != "steps")
      sink.print(std::string("warning: --") + flag +
                 " differs from the checkpoint's; the resumed run will not "
                 "match an uninterrupted one");
    return Status::ok();
  };
  std::string schedule = scheduleName(o.schedule);
  std::string skew = skewName(o.skew, o.skewStrength);
  FLEXMOE_RETURN_IF_ERROR(take("data", "data", o.data));
  FLEXMOE_RETURN_IF_ERROR(take("data-format", "data_format", o.dataFormat));
  FLEXMOE_RETURN_IF_ERROR(
      take("eval-fraction", "eval_fraction", o.evalFraction));
  FLEXMOE_RETURN_IF_ERROR(take("steps", "steps", o.steps));
  FLEXMOE_RETURN_IF_ERROR(take("batch", "batch", o.batch));
  FLEXMOE_RETURN_IF_ERROR(take("lr", "lr", o.lr));
  FLEXMOE_RETURN_IF_ERROR(take("min-lr", "min_lr", o.minLr));
  FLEXMOE_RETURN_IF_ERROR(take("warmup", "warmup", o.warmup));
  FLEXMOE_RETURN_IF_ERROR(take("schedule", "schedule", schedule));
  FLEXMOE_RETURN_IF_ERROR(take("clip-grad", "clip_grad", o.clipGrad));
  FLEXMOE_RETURN_IF_ERROR(take("loss-scale", "loss_scale", o.lossScale));
  FLEXMOE_RETURN_IF_ERROR(
      take("loss-scale", "loss_scale_dynamic", o.dynamicLossScale));
  FLEXMOE_RETURN_IF_ERROR(
      take("loss-scale-window", "loss_scale_window", o.lossScaleWindow));
  FLEXMOE_RETURN_IF_ERROR(take("seed", "seed", o.seed));
  FLEXMOE_RETURN_IF_ERROR(take("eval-every", "eval_every", o.evalEvery));
  FLEXMOE_RETURN_IF_ERROR(take("eval-batches", "eval_batches", o.evalBatches));
  FLEXMOE_RETURN_IF_ERROR(
      take("placement-policy", "placement_policy", o.placementPolicy));
  FLEXMOE_RETURN_IF_ERROR(
      take("rebalance-threshold", "rebalance_threshold", o.rebalanceThreshold));
  FLEXMOE_RETURN_IF_ERROR(
      take("monitor-window", "monitor_window", o.monitorWindow));
  FLEXMOE_RETURN_IF_ERROR(take("max-slots", "max_slots", o.maxSlots));
  FLEXMOE_RETURN_IF_ERROR(
      take("replan-interval", "replan_interval", o.replanInterval));
  FLEXMOE_RETURN_IF_ERROR(take("min-gain", "min_gain", o.minGain));
  FLEXMOE_RETURN_IF_ERROR(take("routing-skew", "routing_skew", skew));
  FLEXMOE_RETURN_IF_ERROR(take("skew-period", "skew_period", o.skewPeriod));
  if (!o.given.count("routing-skew")) {
    // The saved skew in the flag's own syntax.
    Options parsed;
    bool help = false;
    std::string flag = "--routing-skew=" + skew;
    char program[] = "flexmoe-run", placeholder[] = "x.fmoe";
    char *argv[] = {program, flag.data(), placeholder};
    if (Status status = parseOptions(3, argv, parsed, help); !status.isOk())
      return errorf("the checkpoint's trainer state has a bad routing skew: ",
                    status.message());
    o.skew = parsed.skew;
    o.skewStrength = parsed.skewStrength;
  }
  if (schedule == "cosine")
    o.schedule = Schedule::Cosine;
  else if (schedule == "linear")
    o.schedule = Schedule::Linear;
  else if (schedule == "constant")
    o.schedule = Schedule::Constant;
  else
    return errorf("the checkpoint's trainer state has an unknown schedule '",
                  schedule, "'");
  return Status::ok();
}

/// The learning rate the program was compiled with (its first AdamW's).
double compiledLearningRate(const fb::Program &program) {
  for (const fb::Instruction *inst : *program.instructions())
    if (inst->opcode() == fb::OpCode::AdamW && inst->attrs_as_AdamWAttrs())
      return inst->attrs_as_AdamWAttrs()->lr();
  return 1e-3;
}

int64_t countParameters(const fb::Program &program) {
  // Expert buffers hold slots; count each expert once via the checkpoint
  // layout's canonical shapes.
  StatusOr<std::vector<train::LayoutEntry>> layout =
      train::checkpointLayout(program, /*optimizerState=*/false);
  int64_t total = 0;
  if (layout)
    for (const train::LayoutEntry &entry : *layout) {
      int64_t n = 1;
      for (int64_t d : entry.shape)
        n *= d;
      total += n;
    }
  return total;
}

class Trainer {
public:
  Trainer(Options options, device::Communicator &comm)
      : o_(std::move(options)), comm_(comm) {}
  /// Returns the process exit code: 0, or 130 after Ctrl-C.
  StatusOr<int> run();
  /// True when the error run() returned is known to every rank (the others
  /// are not waiting in a collective).
  bool failedTogether() const { return failedTogether_; }

private:
  /// Everything before the first step; may fail on some ranks only.
  Status setUp(bool &progress);
  /// `local` on this rank, and an error on every rank if another failed.
  Status agree(Status local, const char *phase);
  Status evaluate(int64_t step);
  Status saveCheckpoint(int64_t step);

  Options o_;
  MetricsSink sink_;
  std::optional<program::LoadedProgram> program_;
  std::optional<train::Dataset> data_;
  train::ProgramInputShape shape_;
  /// Creates device_ (and, for CUDA under a launcher, the NCCL
  /// communicator the executor's data collectives go through).
  Status createDevice();

  std::unique_ptr<device::Device> device_;
  /// The CPU backend's threads; 0 on a GPU.
  int cpuThreads_ = 0;
  device::Communicator &comm_;
  std::unique_ptr<device::Communicator> deviceComm_;
  std::optional<train::LossScaler> scaler_;
  bool failedTogether_ = false;
  std::unique_ptr<executor::Executor> executor_;
  std::unique_ptr<PlacementControl> control_;
  std::string resumePath_;
  nlohmann::json saved_;
  std::vector<std::string> layerNames_;
  Clock::time_point start_;
  double elapsedBefore_ = 0; ///< from the checkpoint resumed
  int64_t tokensSeen_ = 0;
  double lastEvalLoss_ = NAN;
  std::string lastCheckpoint_;
};

Status Trainer::evaluate(int64_t step) {
  if (!data_->numEvalTokens())
    return Status::ok();
  int64_t programBatch = shape_.localBatch * shape_.worldSize;
  int64_t batches = data_->numEvalBatches(programBatch, o_.evalBatches);
  if (batches <= 0) {
    sink_.print("eval: the eval split holds less than one batch; skipped");
    return Status::ok();
  }
  double sum = 0;
  for (int64_t b = 0; b < batches; ++b) {
    StatusOr<train::Batch> batch =
        data_->evalBatch(b, programBatch, comm_.rank(), comm_.worldSize());
    if (!batch)
      return batch.status();
    FLEXMOE_RETURN_IF_ERROR(executor_->setInputs(batch->tokens, batch->labels));
    StatusOr<float> loss = executor_->evaluate();
    if (!loss)
      return loss.status();
    sum += *loss;
  }
  lastEvalLoss_ = sum / static_cast<double>(batches);
  EvalRecord record;
  record.step = step;
  record.loss = lastEvalLoss_;
  record.unigramEntropy = data_->unigramEntropy();
  record.batches = batches;
  record.elapsedSeconds = elapsedBefore_ + seconds(Clock::now() - start_);
  sink_.logEval(record);
  return Status::ok();
}

Status Trainer::saveCheckpoint(int64_t step) {
  std::error_code error;
  fs::create_directories(o_.checkpointDir, error);
  if (error)
    return errorf("cannot create the checkpoint directory '", o_.checkpointDir,
                  "': ", error.message());
  std::string path = checkpointPath(o_.checkpointDir, step);
  double elapsed = elapsedBefore_ + seconds(Clock::now() - start_);
  nlohmann::json state =
      trainerState(o_, tokensSeen_, elapsed, data_->numTokens());
  if (scaler_)
    state["loss_scale_state"] = {{"scale", scaler_->scale()},
                                 {"good_steps", scaler_->goodSteps()}};
  state["placements"] = control_->placementsJson();
  FLEXMOE_RETURN_IF_ERROR(train::saveCheckpoint(*executor_, path, state));
  lastCheckpoint_ = path;
  sink_.print("checkpoint: " + path + " (step " + std::to_string(step) + ")");
  return Status::ok();
}

Status Trainer::agree(Status local, const char *phase) {
  if (comm_.worldSize() == 1)
    return local;
  double failed = local.isOk() ? 0.0 : 1.0;
  FLEXMOE_RETURN_IF_ERROR(
      comm_.allReduceHost({&failed, 1}, device::ReduceOp::Sum));
  failedTogether_ = failed > 0;
  if (!local.isOk())
    return local;
  if (failed > 0)
    return errorf(static_cast<int64_t>(failed), " other rank(s) failed ", phase,
                  " (their messages say why)");
  return Status::ok();
}

Status Trainer::setUp(bool &progress) {
  // The program.
  StatusOr<program::LoadedProgram> loaded = program::loadProgram(o_.program);
  if (!loaded)
    return loaded.status();
  program_.emplace(std::move(loaded).value());
  const fb::Program &prog = program_->program();
  if (prog.world_size() != comm_.worldSize())
    return errorf("'", o_.program, "' is compiled for world size ",
                  prog.world_size(), " but this run has ", comm_.worldSize(),
                  " rank(s): launch it as mpirun -np ", prog.world_size(),
                  " flexmoe-run ... (or recompile with --world-size ",
                  comm_.worldSize(), ")");
  StatusOr<train::ProgramInputShape> shape = train::programInputShape(prog);
  if (!shape)
    return shape.status();
  shape_ = *shape;
  int64_t programBatch = shape_.localBatch * shape_.worldSize;

  progress = comm_.rank() == 0 &&
             (o_.progress == Progress::Always ||
              (o_.progress == Progress::Auto && isatty(STDERR_FILENO)));

  // A resume takes the flags not given from the checkpoint.
  std::string &resumePath = resumePath_;
  nlohmann::json &saved = saved_;
  if (!o_.resume.empty()) {
    StatusOr<std::string> path = resolveResume(o_.resume);
    if (!path)
      return path.status();
    resumePath = *path;
    StatusOr<nlohmann::json> sidecar = train::readCheckpointSidecar(resumePath);
    if (!sidecar)
      return sidecar.status();
    if (sidecar->contains("trainer") && (*sidecar)["trainer"].is_object())
      saved = (*sidecar)["trainer"];
    FLEXMOE_RETURN_IF_ERROR(mergeSavedOptions(saved, o_, sink_));
    // Later checkpoints go beside the one resumed unless told otherwise.
    if (o_.checkpointDir.empty())
      o_.checkpointDir = fs::path(resumePath).parent_path().string();
  }

  // Defaults that depend on the program and the step count.
  if (o_.batch == 0)
    o_.batch = programBatch;
  if (o_.batch % programBatch != 0)
    return errorf("--batch ", o_.batch,
                  " is not a multiple of the program's "
                  "batch of ",
                  programBatch,
                  " sequences (recompile with flexmoe-compile --batch, or "
                  "give a multiple to accumulate gradients)");
  if (o_.lr == 0)
    o_.lr = compiledLearningRate(prog);
  if (o_.minLr < 0)
    o_.minLr = o_.lr / 10;
  if (o_.minLr > o_.lr)
    return errorf("--min-lr ", o_.minLr, " exceeds the peak lr ", o_.lr);
  if (o_.warmup < 0)
    o_.warmup = std::min<int64_t>(100, o_.steps / 10);
  if (o_.evalEvery == 0)
    o_.evalEvery = std::max<int64_t>(1, o_.steps / 5);

  // The data.
  if (o_.data.empty()) {
    o_.data = FLEXMOE_DEFAULT_CORPUS;
    std::error_code error;
    if (o_.data.empty() || !fs::exists(o_.data, error))
      return errorf("no --data given and the built-in corpus '", o_.data,
                    "' is missing: it is built from Debian's bible-kjv "
                    "(scripts/setup.sh installs it; rebuild), or pass "
                    "--data <file>");
  }
  train::DatasetOptions dataOptions;
  StatusOr<train::DataFormat> format = train::parseDataFormat(o_.dataFormat);
  if (!format)
    return format.status();
  dataOptions.format = *format;
  dataOptions.vocabSize = shape_.vocabSize;
  dataOptions.seqLen = shape_.seqLen;
  dataOptions.evalFraction = o_.evalFraction;
  StatusOr<train::Dataset> data = train::Dataset::open(o_.data, dataOptions);
  if (!data)
    return data.status();
  data_.emplace(std::move(data).value());
  if (saved.contains("data_tokens") && saved["data_tokens"].is_number() &&
      saved["data_tokens"].get<int64_t>() != data_->numTokens())
    sink_.print("warning: the corpus now holds " +
                std::to_string(data_->numTokens()) +
                " tokens, the checkpoint's " + saved["data_tokens"].dump() +
                "; the resumed run will not match an uninterrupted one");

  // The device, the executor, and the checkpoint it resumes from.
  FLEXMOE_RETURN_IF_ERROR(createDevice());
  executor::ExecutorOptions executorOptions;
  executorOptions.seed = o_.seed;
  executorOptions.overlapCommunication = o_.overlap;
  StatusOr<std::unique_ptr<executor::Executor>> created =
      executor::Executor::create(*program_, *device_, comm_, executorOptions);
  if (!created)
    return created.status();
  executor_ = std::move(created).value();
  if (!resumePath.empty()) {
    StatusOr<nlohmann::json> state =
        train::loadCheckpoint(*executor_, resumePath);
    if (!state)
      return state.status();
    if (saved.contains("elapsed_s") && saved["elapsed_s"].is_number())
      elapsedBefore_ = saved["elapsed_s"].get<double>();
    if (saved.contains("tokens_seen") && saved["tokens_seen"].is_number())
      tokensSeen_ = saved["tokens_seen"].get<int64_t>();
  }
  if (executor_->stepsDone() >= o_.steps)
    return errorf("the checkpoint '", resumePath, "' is at step ",
                  executor_->stepsDone(), ", not before --steps ", o_.steps,
                  ": give a larger --steps to train further");

  // A checkpoint directory that cannot be made fails now, not after hours.
  if (!o_.checkpointDir.empty()) {
    std::error_code error;
    fs::create_directories(o_.checkpointDir, error);
    if (error || !fs::is_directory(o_.checkpointDir, error))
      return errorf("cannot create the checkpoint directory '",
                    o_.checkpointDir,
                    "': ", error ? error.message() : "not a directory");
  }

  for (size_t l = 0; l < executor_->numMoeLayers(); ++l)
    layerNames_.push_back(prog.moe_layers()->Get(l)->name()->str());
  // Rank 0 speaks for the job: log lines, metrics, progress.
  FLEXMOE_RETURN_IF_ERROR(sink_.open(comm_.rank() == 0 ? o_.metrics : "",
                                     /*append=*/!resumePath.empty(),
                                     layerNames_, progress,
                                     /*enabled=*/comm_.rank() == 0));

  // The placement feedback loop, and the placement a checkpoint left.
  StatusOr<std::unique_ptr<PlacementControl>> control =
      PlacementControl::create(o_, *executor_, sink_,
                               shape_.localBatch * shape_.seqLen);
  if (!control)
    return control.status();
  control_ = std::move(control).value();
  if (saved.contains("placements"))
    FLEXMOE_RETURN_IF_ERROR(control_->restorePlacements(saved["placements"]));
  return Status::ok();
}

Status Trainer::createDevice() {
  if (o_.device == "cpu") {
    auto cpu = std::make_unique<cpu::CpuDevice>();
    cpuThreads_ = cpu->numThreads();
    device_ = std::move(cpu);
    return Status::ok();
  }
#ifdef FLEXMOE_HAVE_CUDA
  StatusOr<int> count = cuda::cudaDeviceCount();
  if (!count)
    return Status(count.status()).withContext("--device cuda");
  if (*count == 0)
    return Status::error("--device cuda: no CUDA device found");
  cuda::CudaDeviceOptions options;
  // Ranks of one node take its GPUs in turn.
  options.index = o_.cudaIndex >= 0
                      ? static_cast<int>(o_.cudaIndex)
                      : static_cast<int>(localRankInEnvironment() % *count);
  options.deterministic = o_.deterministic;
  options.precision = o_.precision == "bf16" ? device::MathPrecision::BF16
                                             : device::MathPrecision::F32;
  StatusOr<std::unique_ptr<cuda::CudaDevice>> created =
      cuda::CudaDevice::create(options);
  if (!created)
    return Status(created.status()).withContext("--device cuda");
  device_ = std::move(created).value();
  return Status::ok();
#else
  return Status::error("--device cuda: this flexmoe-run was built without "
                       "CUDA (configure with the CUDA toolkit and "
                       "-DFLEXMOE_ENABLE_CUDA=ON)");
#endif
}

StatusOr<int> Trainer::run() {
  bool progress = false;
  FLEXMOE_RETURN_IF_ERROR(agree(setUp(progress), "to set up"));
#ifdef FLEXMOE_HAVE_CUDA
  // Every rank has its GPU: NCCL carries the collectives on device data.
  // NCCL refuses two ranks on one GPU; ranks sharing GPUs (a test set-up)
  // stage their collectives through MPI in host memory instead.
  bool gpuPerRank = true;
  if (o_.device == "cuda" && comm_.worldSize() > 1) {
    StatusOr<int> gpus = cuda::cudaDeviceCount();
    double shared = gpus && localRanks() > *gpus ? 1 : 0;
    FLEXMOE_RETURN_IF_ERROR(
        comm_.allReduceHost({&shared, 1}, device::ReduceOp::Sum));
    gpuPerRank = shared == 0;
    if (!gpuPerRank)
      sink_.print("note: ranks share GPUs, and NCCL needs one GPU per rank: "
                  "the collectives go through MPI, staged in host memory");
  }
  if (o_.device == "cuda" && comm_.worldSize() > 1 && gpuPerRank) {
    auto *gpu = static_cast<cuda::CudaDevice *>(device_.get());
    StatusOr<std::unique_ptr<device::NcclCommunicator>> nccl =
        device::NcclCommunicator::create(comm_, gpu->index());
    Status made = nccl ? Status::ok() : Status(nccl.status());
    FLEXMOE_RETURN_IF_ERROR(agree(made, "to create the NCCL communicator"));
    deviceComm_ = std::move(nccl).value();
    executor_->setDeviceCommunicator(deviceComm_.get());
  }
#endif
  if (o_.dynamicLossScale) {
    scaler_.emplace(o_.lossScaleWindow);
    if (saved_.contains("loss_scale_state")) {
      const nlohmann::json &state = saved_["loss_scale_state"];
      if (!state.is_object() || !state.contains("scale") ||
          !state["scale"].is_number() || !state.contains("good_steps") ||
          !state["good_steps"].is_number_integer())
        return Status::error("the checkpoint's trainer state has a bad "
                             "'loss_scale_state'");
      FLEXMOE_RETURN_IF_ERROR(scaler_->restore(
          state["scale"].get<double>(), state["good_steps"].get<int64_t>()));
    }
  }
  const fb::Program &prog = program_->program();
  const std::string &resumePath = resumePath_;
  const std::vector<std::string> &layerNames = layerNames_;
  int64_t programBatch = shape_.localBatch * shape_.worldSize;
  int64_t firstStep = executor_->stepsDone() + 1;

  // What is about to happen.
  int64_t microBatches = o_.batch / programBatch;
  int64_t tokensPerStep = o_.batch * shape_.seqLen;
  char line[512];
  std::string where = o_.device == "cpu"
                          ? std::to_string(cpuThreads_) + " thread(s)"
                          : device_->name() + " (" + o_.precision +
                                (o_.deterministic ? ", deterministic" : "") +
                                ")";
  std::snprintf(line, sizeof line,
                "program %s: %s parameters, %zu MoE layer(s), vocab %lld, "
                "seq %lld, batch %lld x %lld micro-batch(es), %lld rank(s) "
                "x %s",
                o_.program.c_str(),
                humanCount(static_cast<double>(countParameters(prog))).c_str(),
                layerNames.size(), static_cast<long long>(shape_.vocabSize),
                static_cast<long long>(shape_.seqLen),
                static_cast<long long>(programBatch),
                static_cast<long long>(microBatches),
                static_cast<long long>(comm_.worldSize()), where.c_str());
  sink_.print(line);
  std::snprintf(
      line, sizeof line,
      "data %s (%s): %s tokens, %s train / %s eval; unigram "
      "entropy %.4f nats",
      o_.data.c_str(),
      std::string(train::dataFormatName(data_->format())).c_str(),
      humanCount(static_cast<double>(data_->numTokens())).c_str(),
      humanCount(static_cast<double>(data_->numTrainTokens())).c_str(),
      humanCount(static_cast<double>(data_->numEvalTokens())).c_str(),
      data_->unigramEntropy());
  sink_.print(line);
  std::snprintf(line, sizeof line,
                "%s steps %lld..%lld: lr %.2e -> %.2e (%s, warm-up %lld), "
                "clip %.2f, loss scale %g%s, seed %llu",
                resumePath.empty() ? "train" : "resume",
                static_cast<long long>(firstStep),
                static_cast<long long>(o_.steps), o_.lr, o_.minLr,
                scheduleName(o_.schedule), static_cast<long long>(o_.warmup),
                o_.clipGrad, scaler_ ? scaler_->scale() : o_.lossScale,
                scaler_ ? " (dynamic)" : "",
                static_cast<unsigned long long>(o_.seed));
  sink_.print(line);
  if (o_.placementPolicy != "static" || o_.skew != SkewKind::None)
    sink_.print(control_->describe());
  if (!resumePath.empty())
    sink_.print("resumed from " + resumePath);

  std::signal(SIGINT, onInterrupt);
  std::signal(SIGTERM, onInterrupt);
  start_ = Clock::now();
  std::vector<double> recentLosses;
  double stepSeconds = 0;
  int64_t stepsRun = 0;
  int64_t step = firstStep;
  int64_t lastToRun = o_.stopAt > 0 ? std::min(o_.stopAt, o_.steps) : o_.steps;
  for (; step <= lastToRun; ++step) {
    // Every rank stops at the same step, whichever saw the signal.
    double stop = interrupted ? 1.0 : 0.0;
    if (comm_.worldSize() > 1)
      FLEXMOE_RETURN_IF_ERROR(
          comm_.allReduceHost({&stop, 1}, device::ReduceOp::Sum));
    if (stop > 0) {
      interrupted = true;
      break;
    }
    Clock::time_point begin = Clock::now();
    StatusOr<train::Batch> batch = data_->trainBatch(
        o_.seed, step, o_.batch, comm_.rank(), comm_.worldSize());
    if (!batch)
      return batch.status();
    executor::StepOptions options;
    options.lr = static_cast<float>(learningRate(o_, step));
    options.maxGradNorm = static_cast<float>(o_.clipGrad);
    options.lossScale =
        static_cast<float>(scaler_ ? scaler_->scale() : o_.lossScale);
    options.microBatches = microBatches;
    int64_t microTokens = shape_.localBatch * shape_.seqLen;
    options.loadMicroBatch = [&](int64_t micro) {
      std::span<const int32_t> tokens(batch->tokens), labels(batch->labels);
      return executor_->setInputs(
          tokens.subspan(micro * microTokens, microTokens),
          labels.subspan(micro * microTokens, microTokens));
    };
    FLEXMOE_RETURN_IF_ERROR(control_->beforeStep(step));
    StatusOr<executor::StepResult> result = executor_->step(options);
    if (!result)
      return Status(result.status())
          .withContext("step " + std::to_string(step));
    if (!std::isfinite(result->loss) && !result->skipped)
      return errorf("step ", step, ": the loss is ", result->loss,
                    " (diverged; try a lower --lr or --clip-grad)");
    // The placement loop's time (monitor, policy, migration) counts in the
    // step's: it is part of what the run pays.
    FLEXMOE_RETURN_IF_ERROR(
        control_->afterStep(step, seconds(Clock::now() - begin)));
    double elapsed = seconds(Clock::now() - begin);
    stepSeconds += elapsed;
    ++stepsRun;
    tokensSeen_ += tokensPerStep;

    StepRecord record;
    record.step = step;
    record.totalSteps = o_.steps;
    record.loss = result->loss;
    record.lr = options.lr;
    record.gradNorm = result->gradNorm;
    record.skipped = result->skipped;
    if (scaler_ && scaler_->update(result->skipped) && result->skipped)
      sink_.print("step " + std::to_string(step) +
                  ": gradients overflowed; loss scale lowered to " +
                  std::to_string(static_cast<int64_t>(scaler_->scale())));
    record.stepMs = elapsed * 1e3;
    record.tokensPerSecond = tokensPerStep / elapsed;
    record.elapsedSeconds = elapsedBefore_ + seconds(Clock::now() - start_);
    for (size_t l = 0; l < executor_->numMoeLayers(); ++l) {
      const executor::LayerStats &stats = executor_->layerStats(l);
      // Four exchanges a step (dispatch and combine, forward and backward)
      // move the plan's cross-device rows each.
      int64_t a2aBytes = 4 * executor_->dispatchPlan(l).crossDeviceRows *
                         executor_->allToAllRowBytes(l);
      record.layers.push_back({layerNames[l], stats.balanceRatio,
                               stats.expertBalance, stats.droppedTokens,
                               a2aBytes});
    }
    sink_.logStep(record,
                  (step - firstStep) % o_.logEvery == 0 || step == o_.steps);
    control_->flushLog();
    recentLosses.push_back(result->loss);
    if (recentLosses.size() > 20)
      recentLosses.erase(recentLosses.begin());

    if (step % o_.evalEvery == 0 || step == lastToRun)
      FLEXMOE_RETURN_IF_ERROR(evaluate(step));
    if (!o_.checkpointDir.empty() &&
        ((o_.checkpointEvery > 0 && step % o_.checkpointEvery == 0) ||
         step == lastToRun))
      FLEXMOE_RETURN_IF_ERROR(saveCheckpoint(step));
    double perStep = stepSeconds / static_cast<double>(stepsRun);
    sink_.progress(record, perStep * static_cast<double>(o_.steps - step));
  }
  int64_t lastStep = step - 1;
  bool stoppedEarly = interrupted && lastStep < lastToRun;
  if (stoppedEarly && !o_.checkpointDir.empty() && lastStep >= firstStep)
    FLEXMOE_RETURN_IF_ERROR(saveCheckpoint(lastStep));
  if (stoppedEarly && o_.checkpointDir.empty())
    sink_.print("interrupted at step " + std::to_string(lastStep) +
                " without --checkpoint-dir: nothing saved");

  // The summary.
  double wall = seconds(Clock::now() - start_);
  double meanLoss = 0;
  for (double loss : recentLosses)
    meanLoss += loss;
  meanLoss /= std::max<size_t>(1, recentLosses.size());
  sink_.print(std::string("summary") + (stoppedEarly ? " (interrupted)" : "") +
              ":");
  std::snprintf(
      line, sizeof line,
      "  steps %lld..%lld in %s (%.1f ms/step, %s tok/s); %s tokens "
      "seen in all",
      static_cast<long long>(firstStep), static_cast<long long>(lastStep),
      humanDuration(wall).c_str(),
      stepsRun ? 1e3 * stepSeconds / stepsRun : 0.0,
      humanCount(stepsRun ? tokensPerStep * stepsRun / stepSeconds : 0.0)
          .c_str(),
      humanCount(static_cast<double>(tokensSeen_)).c_str());
  sink_.print(line);
  std::snprintf(line, sizeof line,
                "  train loss %.4f (mean of the last %zu steps)", meanLoss,
                recentLosses.size());
  sink_.print(line);
  if (comm_.worldSize() > 1 && stepsRun > 0) {
    std::snprintf(line, sizeof line,
                  "  gradient all-reduces: %.1f ms/step not hidden behind "
                  "computation (overlap %s)",
                  1e3 * executor_->exposedCommSeconds() / stepsRun,
                  o_.overlap ? "on" : "off, --no-overlap");
    sink_.print(line);
  }
  if (std::isfinite(lastEvalLoss_)) {
    double entropy = data_->unigramEntropy();
    std::snprintf(line, sizeof line,
                  "  eval loss %.4f nats (ppl %.2f); unigram entropy of the "
                  "corpus %.4f nats: %s by %.4f",
                  lastEvalLoss_, std::exp(lastEvalLoss_), entropy,
                  lastEvalLoss_ < entropy ? "below it" : "NOT below it",
                  std::fabs(entropy - lastEvalLoss_));
    sink_.print(line);
  }
  if (!lastCheckpoint_.empty())
    sink_.print("  checkpoint " + lastCheckpoint_ + " (resume with --resume " +
                o_.checkpointDir + ")");
  if (!o_.metrics.empty())
    sink_.print("  metrics " + o_.metrics);
  FLEXMOE_RETURN_IF_ERROR(control_->finish());
  FLEXMOE_RETURN_IF_ERROR(sink_.close());
  return stoppedEarly ? 130 : 0;
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  bool wantsHelp = false;
  if (Status status = parseOptions(argc, argv, options, wantsHelp);
      !status.isOk()) {
    std::fprintf(stderr, "flexmoe-run: error: %s\n", status.message().c_str());
    return 2;
  }
  if (wantsHelp) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }

  // Under a launcher (mpirun, srun) every rank runs this and MPI carries the
  // collectives. Alone, MPI is never touched.
  std::unique_ptr<device::MpiEnvironment> mpi;
  std::unique_ptr<device::MpiCommunicator> mpiComm;
  device::SingleProcessCommunicator single;
  device::Communicator *comm = &single;
  if (device::MpiEnvironment::launcherInEnvironment()) {
    StatusOr<std::unique_ptr<device::MpiEnvironment>> env =
        device::MpiEnvironment::init(&argc, &argv);
    if (!env) {
      std::fprintf(stderr, "flexmoe-run: error: %s\n",
                   env.status().message().c_str());
      return 1;
    }
    mpi = std::move(env).value();
    StatusOr<std::unique_ptr<device::MpiCommunicator>> created =
        device::MpiCommunicator::create();
    if (!created) {
      std::fprintf(stderr, "flexmoe-run: error: %s\n",
                   created.status().message().c_str());
      return 1;
    }
    mpiComm = std::move(created).value();
    comm = mpiComm.get();
    shareCoresAmongLocalRanks();
  }

  Trainer trainer(std::move(options), *comm);
  StatusOr<int> code = trainer.run();
  if (code)
    return *code;
  std::fflush(stdout);
  if (isatty(STDERR_FILENO))
    std::fputs("\r\033[K", stderr); // a progress line may be showing
  if (comm->worldSize() > 1)
    std::fprintf(stderr, "flexmoe-run: rank %lld: error: %s\n",
                 static_cast<long long>(comm->rank()),
                 code.status().message().c_str());
  else
    std::fprintf(stderr, "flexmoe-run: error: %s\n",
                 code.status().message().c_str());
  // A rank failing alone must not leave the others waiting in a collective
  // until their timeout: end the whole job.
  if (mpiComm && mpiComm->worldSize() > 1 && !trainer.failedTogether())
    mpiComm->abort(1);
  return 1;
}
