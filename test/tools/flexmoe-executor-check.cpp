//===- flexmoe-executor-check.cpp - properties of the executor's step -----===//
//
// A test driver: runs a compiled program on the CPU device and checks what
// the executor promises beyond the program's arithmetic, printing one line per
// property and failing on the first that does not hold:
//
//   eval       evaluate() is repeatable, changes no parameter, and equals the
//              cross-entropy part of a training step's loss;
//   lossscale  a power-of-two loss scale gives bit-identical parameters (the
//              backward pass is linear in its seed), and an overflowing one
//              skips the update and leaves every parameter as it was;
//   clip       the reported gradient norm is the norm of the observed
//              gradients, and clipping scales them: AdamW's first moment after
//              step 1 is (1-beta1)·g·min(1, max/norm);
//   lr         a step's lr replaces the compiled one (the first AdamW update
//              is proportional to it);
//   stats      every routed token copy is either computed or counted as
//              dropped, and the balance ratio is at least 1.
//
//   accumulate two micro-batches of a batch-B/2 program update as one batch
//              of the batch-B program (--accumulate).
//
//   flexmoe-executor-check <program.fmoe> [--expect-drops]
//   flexmoe-executor-check --accumulate <half.fmoe> <full.fmoe>
//
//===----------------------------------------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"
#include "runtime/executor/Executor.h"
#include "runtime/train/Dataset.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <span>
#include <string>

using namespace flexmoe;
using executor::Executor;
using executor::StepOptions;

namespace {

[[noreturn]] void fail(const std::string &message) {
  std::fprintf(stderr, "flexmoe-executor-check: FAIL: %s\n", message.c_str());
  std::exit(1);
}

template <typename T> T check(StatusOr<T> value, const char *what) {
  if (!value)
    fail(std::string(what) + ": " + value.status().message());
  return std::move(value).value();
}

void check(Status status, const char *what) {
  if (!status.isOk())
    fail(std::string(what) + ": " + status.message());
}

struct Run {
  cpu::CpuDevice device;
  device::SingleProcessCommunicator comm;
  std::unique_ptr<Executor> executor;

  Run(const program::LoadedProgram &program, const std::vector<int32_t> &tokens,
      const std::vector<int32_t> &labels) {
    executor = check(Executor::create(program, device, comm), "create");
    check(executor->setInputs(tokens, labels), "setInputs");
  }

  /// The bytes of every buffer of `kind`, concatenated in id order.
  std::vector<std::byte> bytesOf(fb::BufferKind kind) const {
    std::vector<std::byte> out;
    const auto *buffers = executor->program().program().buffers();
    for (uint32_t id = 0; id < buffers->size(); ++id) {
      if (buffers->Get(id)->kind() != kind || buffers->Get(id)->alias_of() >= 0)
        continue;
      const device::Operand &operand = executor->buffer(id);
      out.insert(out.end(), operand.data, operand.data + operand.numBytes());
    }
    return out;
  }
};

/// The first parameter updated by an AdamW, and its m buffer.
struct FirstUpdate {
  uint32_t param = 0, grad = 0, m = 0;
  float lr = 0, beta1 = 0;
};

FirstUpdate firstUpdate(const fb::Program &program) {
  for (const fb::Instruction *inst : *program.instructions())
    if (inst->opcode() == fb::OpCode::AdamW) {
      const fb::AdamWAttrs *attrs = inst->attrs_as_AdamWAttrs();
      return {inst->inputs()->Get(0), inst->inputs()->Get(1),
              inst->inputs()->Get(2), attrs->lr(), attrs->beta1()};
    }
  fail("the program has no AdamW");
}

double relDiff(double a, double b) {
  return std::fabs(a - b) / std::max({std::fabs(a), std::fabs(b), 1e-30});
}

} // namespace

/// Gradient accumulation: two micro-batches of `half` (compiled for batch
/// B/2) give the update one batch of `full` (batch B) gives.
int checkAccumulation(const char *halfPath, const char *fullPath) {
  program::LoadedProgram half = check(program::loadProgram(halfPath), "load");
  program::LoadedProgram full = check(program::loadProgram(fullPath), "load");
  auto inputSize = [](const fb::Program &prog) {
    train::ProgramInputShape shape =
        check(train::programInputShape(prog), "input shape");
    return shape.localBatch * shape.seqLen;
  };
  int64_t n = inputSize(full.program());
  if (n != 2 * inputSize(half.program()))
    fail("--accumulate needs programs of batch B/2 and B");
  std::mt19937_64 rng(5);
  std::vector<int32_t> tokens(n), labels(n);
  for (int64_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % 256);
    labels[i] = static_cast<int32_t>(rng() % 256);
  }
  Run one(full, tokens, labels);
  std::vector<int32_t> firstHalf(tokens.begin(), tokens.begin() + n / 2);
  std::vector<int32_t> firstLabels(labels.begin(), labels.begin() + n / 2);
  Run two(half, firstHalf, firstLabels);
  StepOptions accumulate;
  accumulate.microBatches = 2;
  accumulate.loadMicroBatch = [&](int64_t micro) {
    std::span<const int32_t> t(tokens), l(labels);
    return two.executor->setInputs(t.subspan(micro * n / 2, n / 2),
                                   l.subspan(micro * n / 2, n / 2));
  };
  executor::StepResult a = check(one.executor->step(StepOptions{}), "step");
  executor::StepResult b = check(two.executor->step(accumulate), "step");
  if (relDiff(a.loss, b.loss) > 1e-5 || relDiff(a.gradNorm, b.gradNorm) > 1e-4)
    fail("accumulated loss " + std::to_string(b.loss) + " / norm " +
         std::to_string(b.gradNorm) + " differ from the full batch's " +
         std::to_string(a.loss) + " / " + std::to_string(a.gradNorm));
  std::vector<std::byte> ma = one.bytesOf(fb::BufferKind::AdamM);
  std::vector<std::byte> mb = two.bytesOf(fb::BufferKind::AdamM);
  if (ma.size() != mb.size())
    fail("the two programs hold different optimizer state");
  const float *x = reinterpret_cast<const float *>(ma.data());
  const float *y = reinterpret_cast<const float *>(mb.data());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ma.size() / 4; ++i) {
    diff += (x[i] - y[i]) * double(x[i] - y[i]);
    norm += x[i] * double(x[i]);
  }
  // Not bit-exact: besides summation order, the auxiliary loss is a product
  // of two batch means, so its gradient over two halves differs slightly from
  // that over the whole batch (as in every framework's accumulation).
  if (std::sqrt(diff / norm) > 1e-3)
    fail("accumulated gradients differ from the full batch's by " +
         std::to_string(std::sqrt(diff / norm)));
  std::printf("accumulate: 2 micro-batches = 1 batch (loss %.6f vs %.6f, "
              "first moments within %.1e)\n",
              b.loss, a.loss, std::sqrt(diff / norm));
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && std::string(argv[1]) == "--accumulate")
    return checkAccumulation(argv[2], argv[3]);
  if (argc < 2)
    fail("usage: flexmoe-executor-check <program.fmoe> [--expect-drops]");
  bool expectDrops = argc > 2 && std::string(argv[2]) == "--expect-drops";
  program::LoadedProgram program = check(program::loadProgram(argv[1]), "load");
  const fb::Program &prog = program.program();

  train::ProgramInputShape shape =
      check(train::programInputShape(prog), "input shape");
  int64_t numTokens = shape.localBatch * shape.seqLen, vocab = shape.vocabSize;
  std::mt19937_64 rng(3);
  std::vector<int32_t> tokens(numTokens), labels(numTokens);
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<int32_t>(rng() % vocab);
    labels[i] = static_cast<int32_t>(rng() % vocab);
  }

  // eval
  {
    Run run(program, tokens, labels);
    std::vector<std::byte> before = run.bytesOf(fb::BufferKind::Parameter);
    float first = check(run.executor->evaluate(), "evaluate");
    float second = check(run.executor->evaluate(), "evaluate");
    if (first != second)
      fail("evaluate() is not repeatable: " + std::to_string(first) + " vs " +
           std::to_string(second));
    if (run.bytesOf(fb::BufferKind::Parameter) != before)
      fail("evaluate() changed a parameter");
    float trainLoss = check(run.executor->step(), "step");
    // The training loss adds the auxiliary losses (coef·E·Σ f·P ≈ coef).
    if (!(trainLoss >= first) || trainLoss - first > 0.1f)
      fail("the evaluation loss " + std::to_string(first) +
           " is not the cross-entropy of the training loss " +
           std::to_string(trainLoss));
    std::printf("eval: loss %.6f (train loss %.6f), repeatable, no update\n",
                first, trainLoss);
  }

  // lossscale
  {
    Run plain(program, tokens, labels), scaled(program, tokens, labels);
    StepOptions scale;
    scale.lossScale = 1024;
    for (int s = 0; s < 3; ++s) {
      StepOptions none;
      executor::StepResult a = check(plain.executor->step(none), "step");
      executor::StepResult b = check(scaled.executor->step(scale), "step");
      if (a.loss != b.loss || relDiff(a.gradNorm, b.gradNorm) > 1e-6)
        fail("loss scale 1024 changed the loss or gradient norm at step " +
             std::to_string(s + 1));
    }
    if (plain.bytesOf(fb::BufferKind::Parameter) !=
        scaled.bytesOf(fb::BufferKind::Parameter))
      fail("loss scale 1024 did not give bit-identical parameters");
    // An overflow shows as a non-finite gradient norm; poisoning a
    // layer-norm gain with NaN makes every gradient NaN the same way.
    uint32_t gain = 0;
    for (const fb::Buffer *buffer : *prog.buffers())
      if (buffer->kind() == fb::BufferKind::Parameter &&
          buffer->init() == fb::InitKind::Ones) {
        gain = buffer->id();
        break;
      }
    scaled.executor->buffer(gain).as<float>()[0] = std::nanf("");
    std::vector<std::byte> before = scaled.bytesOf(fb::BufferKind::Parameter);
    std::vector<std::byte> state = scaled.bytesOf(fb::BufferKind::AdamM);
    executor::StepResult r = check(scaled.executor->step(scale), "step");
    if (!r.skipped || std::isfinite(r.gradNorm))
      fail("a non-finite gradient norm did not skip the update");
    if (scaled.bytesOf(fb::BufferKind::Parameter) != before ||
        scaled.bytesOf(fb::BufferKind::AdamM) != state)
      fail("a skipped update changed a parameter or optimizer state");
    std::printf("lossscale: 1024 bit-identical over 3 steps; overflow skipped "
                "(norm %g)\n",
                r.gradNorm);
  }

  // clip
  {
    FirstUpdate first = firstUpdate(prog);
    Run probe(program, tokens, labels);
    double sumSquares = 0;
    std::vector<float> firstGrad;
    probe.executor->setGradientObserver(
        [&](const fb::Buffer &param, const device::Operand &grad) {
          const float *g = grad.as<float>();
          int64_t n = grad.numElements();
          // Expert gradients of a world-size-1 program hold every expert
          // once when each expert has one replica (the default placement).
          for (int64_t i = 0; i < n; ++i)
            sumSquares += static_cast<double>(g[i]) * g[i];
          if (param.id() == first.param)
            firstGrad.assign(g, g + n);
        });
    executor::StepResult probeResult =
        check(probe.executor->step(StepOptions{}), "step");
    if (relDiff(probeResult.gradNorm, std::sqrt(sumSquares)) > 1e-9)
      fail("the reported gradient norm " +
           std::to_string(probeResult.gradNorm) +
           " is not the norm of the gradients, " +
           std::to_string(std::sqrt(sumSquares)));

    Run clipped(program, tokens, labels);
    StepOptions clip;
    clip.maxGradNorm = static_cast<float>(probeResult.gradNorm / 8);
    executor::StepResult r = check(clipped.executor->step(clip), "step");
    double factor = clip.maxGradNorm / (r.gradNorm + 1e-6);
    const float *m = clipped.executor->buffer(first.m).as<float>();
    double worst = 0;
    for (size_t i = 0; i < firstGrad.size(); ++i) {
      double expected = (1.0 - first.beta1) * firstGrad[i] * factor;
      worst = std::max(worst, std::fabs(m[i] - expected) /
                                  (std::fabs(expected) + 1e-12));
    }
    if (worst > 1e-5)
      fail("clipping: AdamW's first moment is off by " + std::to_string(worst));
    std::printf("clip: norm %.6f matches the gradients; clipped to %.6f, "
                "first moment within %.1e\n",
                r.gradNorm, clip.maxGradNorm, worst);
  }

  // lr
  {
    FirstUpdate first = firstUpdate(prog);
    Run base(program, tokens, labels), halved(program, tokens, labels);
    std::vector<float> initial(
        base.executor->buffer(first.param).as<float>(),
        base.executor->buffer(first.param).as<float>() +
            base.executor->buffer(first.param).numElements());
    StepOptions half;
    half.lr = first.lr / 2;
    check(base.executor->step(StepOptions{}), "step");
    check(halved.executor->step(half), "step");
    const float *a = base.executor->buffer(first.param).as<float>();
    const float *b = halved.executor->buffer(first.param).as<float>();
    double deltaA = 0, deltaB = 0;
    for (size_t i = 0; i < initial.size(); ++i) {
      deltaA += std::fabs(a[i] - initial[i]);
      deltaB += std::fabs(b[i] - initial[i]);
    }
    if (!(deltaA > 0) || relDiff(deltaB / deltaA, 0.5) > 1e-3)
      fail("a step's lr of half the compiled one moved the parameters by " +
           std::to_string(deltaB / deltaA) + " of the compiled step");
    std::printf("lr: half the lr moves the first parameter %.4f as far\n",
                deltaB / deltaA);
  }

  // stats
  {
    Run run(program, tokens, labels);
    check(run.executor->step(), "step");
    for (size_t l = 0; l < run.executor->numMoeLayers(); ++l) {
      const executor::LayerStats &stats = run.executor->layerStats(l);
      const fb::MoeLayer &layer = *prog.moe_layers()->Get(l);
      int64_t routed = 0;
      for (int64_t t : stats.expertTokens)
        routed += t;
      int64_t copies = numTokens * layer.top_k();
      if (routed + stats.droppedTokens != copies)
        fail("layer '" + std::string(stats.name) +
             "': " + std::to_string(routed) + " computed + " +
             std::to_string(stats.droppedTokens) +
             " dropped != " + std::to_string(copies) + " routed copies");
      if (!(stats.balanceRatio >= 1.0))
        fail("a balance ratio below 1");
      if (expectDrops != (stats.droppedTokens > 0))
        fail(std::string("layer '") + std::string(stats.name) +
             "': " + std::to_string(stats.droppedTokens) + " dropped tokens");
      std::printf(
          "stats: layer '%s': %lld computed, %lld dropped, balance "
          "%.3f\n",
          std::string(stats.name).c_str(), static_cast<long long>(routed),
          static_cast<long long>(stats.droppedTokens), stats.balanceRatio);
    }
  }
  std::printf("all executor properties hold\n");
  return 0;
}
