//===- CpuDevice.cpp - the CPU backend ------------------------------------===//

#include "runtime/backends/cpu/CpuDevice.h"

#include "runtime/backends/cpu/kernels/Blas.h"
#include "runtime/backends/cpu/kernels/DenseKernels.h"
#include "runtime/backends/cpu/kernels/MoeKernels.h"
#include "runtime/program/OpInfo.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

using namespace flexmoe;
using namespace flexmoe::cpu;
using device::KernelCall;
using device::Operand;

namespace {

class CpuArena final : public device::Arena {
public:
  CpuArena(std::byte *base, size_t size) : base_(base), size_(size) {}
  ~CpuArena() override { std::free(base_); }
  std::byte *base() override { return base_; }
  size_t size() const override { return size_; }

private:
  std::byte *base_;
  size_t size_;
};

/// Launches run to completion: the time of recording is the stream's.
class CpuEvent final : public device::Event {
public:
  std::chrono::steady_clock::time_point recorded;
};

/// Kernels run synchronously, so events are complete when recorded.
class CpuStream final : public device::Stream {
public:
  Status launch(const KernelCall &call) override { return runCpuKernel(call); }
  Status record(device::Event &event) override {
    static_cast<CpuEvent &>(event).recorded = std::chrono::steady_clock::now();
    return Status::ok();
  }
  Status wait(device::Event &) override { return Status::ok(); }
  Status synchronize() override { return Status::ok(); }

  Status copySegments(std::span<const device::CopySegment> segments) override {
    for (const device::CopySegment &segment : segments)
      if (segment.bytes > 0)
        std::memmove(segment.dst, segment.src, segment.bytes);
    return Status::ok();
  }
  Status copyFromHost(std::byte *dst, const void *src, size_t bytes) override {
    if (bytes > 0)
      std::memcpy(dst, src, bytes);
    return Status::ok();
  }
  Status zero(std::byte *dst, size_t bytes) override {
    if (bytes > 0)
      std::memset(dst, 0, bytes);
    return Status::ok();
  }
  Status addScaled(float *dst, const float *a, const float *b, int64_t count,
                   float scale) override {
    for (int64_t i = 0; i < count; ++i)
      dst[i] = (a[i] + b[i]) * scale;
    return Status::ok();
  }
  Status sumOfSquares(std::span<const device::FloatRange> ranges,
                      std::span<double> sums) override {
    if (sums.size() != ranges.size())
      return errorf("sumOfSquares: ", sums.size(), " sums for ", ranges.size(),
                    " ranges");
    for (size_t i = 0; i < ranges.size(); ++i) {
      double sum = 0;
      for (int64_t j = 0; j < ranges[i].count; ++j)
        sum += static_cast<double>(ranges[i].data[j]) * ranges[i].data[j];
      sums[i] = sum;
    }
    return Status::ok();
  }
};

int64_t dimFromEnd(const Operand &operand, size_t fromEnd) {
  return operand.shape[operand.shape.size() - fromEnd];
}

template <typename V> std::span<const int64_t> spanOf(const V *vector) {
  if (!vector)
    return {};
  return {vector->data(), vector->size()};
}

/// Element-wise kernels documented as not aliasing: give them a private
/// copy of an input the instruction also writes.
const float *unaliased(const Operand &input, const Operand &output,
                       std::vector<float> &copy) {
  if (input.data != output.data)
    return input.as<float>();
  copy.assign(input.as<float>(), input.as<float>() + input.numElements());
  return copy.data();
}

#define FLEXMOE_ATTRS(TYPE)                                                    \
  const fb::TYPE *attrs = ins->attrs_as_##TYPE();                              \
  if (!attrs)                                                                  \
    return Status::error("missing " #TYPE);

Status run(const KernelCall &call) {
  const fb::Instruction *ins = call.instruction;
  const std::vector<Operand> &in = call.inputs;
  const std::vector<Operand> &out = call.outputs;
  switch (ins->opcode()) {
  case fb::OpCode::Embedding:
    return embedding(in[0].as<int32_t>(), in[0].numElements(),
                     in[1].as<float>(), in[1].shape[0], in[1].shape[1],
                     out[0].as<float>());
  case fb::OpCode::EmbeddingGrad: {
    FLEXMOE_ATTRS(EmbeddingGradAttrs);
    return embeddingGrad(in[0].as<int32_t>(), in[0].numElements(),
                         in[1].as<float>(), attrs->vocab_size(),
                         dimFromEnd(out[0], 1), out[0].as<float>());
  }
  case fb::OpCode::Linear: {
    int64_t k = in[1].shape[0], n = in[1].shape[1];
    linear(in[0].as<float>(), in[1].as<float>(),
           in.size() > 2 ? in[2].as<float>() : nullptr, in[0].numElements() / k,
           k, n, out[0].as<float>());
    return Status::ok();
  }
  case fb::OpCode::LinearGrad: {
    int64_t k = in[1].shape[0], n = in[1].shape[1];
    linearGrad(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
               in[0].numElements() / k, k, n, out[0].as<float>(),
               out[1].as<float>());
    return Status::ok();
  }
  case fb::OpCode::Matmul: {
    FLEXMOE_ATTRS(MatmulAttrs);
    const Operand &lhs = in[0], &rhs = in[1];
    if (lhs.shape.size() < 2 || rhs.shape.size() < 2)
      return Status::error("matmul operands must have rank >= 2");
    int64_t rows = dimFromEnd(lhs, 2), cols = dimFromEnd(lhs, 1);
    int64_t batch = rows * cols == 0 ? 0 : lhs.numElements() / (rows * cols);
    int64_t m = attrs->transpose_lhs() ? cols : rows;
    int64_t k = attrs->transpose_lhs() ? rows : cols;
    int64_t n =
        attrs->transpose_rhs() ? dimFromEnd(rhs, 2) : dimFromEnd(rhs, 1);
    matmul(lhs.as<float>(), rhs.as<float>(), batch, m, k, n,
           attrs->transpose_lhs(), attrs->transpose_rhs(), rhs.shape.size() > 2,
           out[0].as<float>());
    return Status::ok();
  }
  case fb::OpCode::LayerNorm: {
    FLEXMOE_ATTRS(LayerNormAttrs);
    int64_t dim = in[1].shape[0];
    layerNorm(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
              in[0].numElements() / dim, dim, attrs->epsilon(),
              out[0].as<float>());
    return Status::ok();
  }
  case fb::OpCode::LayerNormGrad: {
    FLEXMOE_ATTRS(LayerNormAttrs);
    int64_t dim = in[1].shape[0];
    layerNormGrad(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                  in[0].numElements() / dim, dim, attrs->epsilon(),
                  out[0].as<float>(), out[1].as<float>(), out[2].as<float>());
    return Status::ok();
  }
  case fb::OpCode::Gelu:
  case fb::OpCode::GeluGrad: {
    FLEXMOE_ATTRS(GeluAttrs);
    GeluApproximation approximate =
        attrs->approximate() == fb::GeluApproximation::Tanh
            ? GeluApproximation::Tanh
            : GeluApproximation::None;
    std::vector<float> copy;
    if (ins->opcode() == fb::OpCode::Gelu) {
      gelu(unaliased(in[0], out[0], copy), in[0].numElements(), approximate,
           out[0].as<float>());
    } else {
      std::vector<float> copyDy;
      geluGrad(unaliased(in[0], out[0], copy), unaliased(in[1], out[0], copyDy),
               in[0].numElements(), approximate, out[0].as<float>());
    }
    return Status::ok();
  }
  case fb::OpCode::Softmax:
  case fb::OpCode::SoftmaxGrad: {
    FLEXMOE_ATTRS(SoftmaxAttrs);
    StatusOr<AxisSplit> split = splitAtAxis(in[0].shape, attrs->axis());
    if (!split)
      return split.status();
    if (ins->opcode() == fb::OpCode::Softmax)
      softmax(in[0].as<float>(), *split, out[0].as<float>());
    else
      softmaxGrad(in[0].as<float>(), in[1].as<float>(), *split,
                  out[0].as<float>());
    return Status::ok();
  }
  case fb::OpCode::Attention:
  case fb::OpCode::AttentionGrad: {
    FLEXMOE_ATTRS(AttentionAttrs);
    if (in[0].shape.size() != 3)
      return Status::error("attention operands must be [B, S, D]");
    AttentionConfig config;
    config.batch = in[0].shape[0];
    config.seq = in[0].shape[1];
    config.dim = in[0].shape[2];
    config.numHeads = attrs->num_heads();
    config.causal = attrs->causal();
    config.window = attrs->window();
    if (ins->opcode() == fb::OpCode::Attention)
      return attention(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                       config, out[0].as<float>());
    return attentionGrad(in[0].as<float>(), in[1].as<float>(),
                         in[2].as<float>(), in[3].as<float>(), config,
                         out[0].as<float>(), out[1].as<float>(),
                         out[2].as<float>());
  }
  case fb::OpCode::Add:
  case fb::OpCode::Mul: {
    std::vector<float> lhsCopy, rhsCopy;
    const float *lhs = unaliased(in[0], out[0], lhsCopy);
    const float *rhs = unaliased(in[1], out[0], rhsCopy);
    if (ins->opcode() == fb::OpCode::Add)
      return add(lhs, in[0].shape, rhs, in[1].shape, out[0].as<float>());
    return mul(lhs, in[0].shape, rhs, in[1].shape, out[0].as<float>());
  }
  case fb::OpCode::Scale: {
    FLEXMOE_ATTRS(ScaleAttrs);
    scale(in[0].as<float>(), in[0].numElements(), attrs->factor(),
          out[0].as<float>());
    return Status::ok();
  }
  case fb::OpCode::ReduceSum: {
    FLEXMOE_ATTRS(ReduceSumAttrs);
    return reduceSum(in[0].as<float>(), in[0].shape, spanOf(attrs->dims()),
                     out[0].as<float>());
  }
  case fb::OpCode::Reshape:
  case fb::OpCode::Copy:
    if (in[0].numBytes() != out[0].numBytes())
      return errorf("copies ", in[0].numBytes(), " bytes into ",
                    out[0].numBytes());
    std::memmove(out[0].data, in[0].data, in[0].numBytes());
    return Status::ok();
  case fb::OpCode::Transpose: {
    FLEXMOE_ATTRS(TransposeAttrs);
    if (in[0].elementType == fb::ElementType::I32)
      return transpose(in[0].as<int32_t>(), in[0].shape,
                       spanOf(attrs->permutation()), out[0].as<int32_t>());
    return transpose(in[0].as<float>(), in[0].shape,
                     spanOf(attrs->permutation()), out[0].as<float>());
  }
  case fb::OpCode::Roll: {
    FLEXMOE_ATTRS(RollAttrs);
    if (in[0].elementType == fb::ElementType::I32)
      return roll(in[0].as<int32_t>(), in[0].shape, spanOf(attrs->shifts()),
                  spanOf(attrs->dims()), out[0].as<int32_t>());
    return roll(in[0].as<float>(), in[0].shape, spanOf(attrs->shifts()),
                spanOf(attrs->dims()), out[0].as<float>());
  }
  case fb::OpCode::Dropout: {
    FLEXMOE_ATTRS(DropoutAttrs);
    if (!call.training) {
      if (out[0].data != in[0].data)
        std::memmove(out[0].data, in[0].data, in[0].numBytes());
      return Status::ok();
    }
    // Shard 0 keeps the compiled seed, so one device draws what the
    // single-device program draws.
    uint64_t seed = static_cast<uint64_t>(attrs->seed()) ^
                    (static_cast<uint64_t>(call.shard) * 0x9e3779b97f4a7c15ULL);
    return dropout(in[0].as<float>(), in[0].numElements(), attrs->rate(),
                   static_cast<int64_t>(seed), call.step, out[0].as<float>());
  }
  case fb::OpCode::CrossEntropy: {
    FLEXMOE_ATTRS(CrossEntropyAttrs);
    return crossEntropy(in[0].as<float>(), in[1].as<int32_t>(),
                        in[1].numElements(), dimFromEnd(in[0], 1),
                        attrs->ignore_index(), out[0].as<float>());
  }
  case fb::OpCode::CrossEntropyGrad: {
    FLEXMOE_ATTRS(CrossEntropyAttrs);
    return crossEntropyGrad(in[0].as<float>(), in[1].as<int32_t>(),
                            in[1].numElements(), dimFromEnd(in[0], 1),
                            attrs->ignore_index(), *in[2].as<float>(),
                            out[0].as<float>());
  }
  case fb::OpCode::Fill: {
    FLEXMOE_ATTRS(FillAttrs);
    fill(out[0].as<float>(), out[0].numElements(),
         attrs->value() * call.fillScale);
    return Status::ok();
  }
  case fb::OpCode::AdamW: {
    FLEXMOE_ATTRS(AdamWAttrs);
    AdamWConfig config;
    config.lr = call.lr > 0 ? call.lr : attrs->lr();
    config.gradScale = call.gradScale;
    config.beta1 = attrs->beta1();
    config.beta2 = attrs->beta2();
    config.epsilon = attrs->epsilon();
    config.weightDecay = attrs->weight_decay();
    return adamw(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                 in[3].as<float>(), in[0].numElements(), config, call.step,
                 out[0].as<float>(), out[1].as<float>(), out[2].as<float>());
  }
  case fb::OpCode::Gate: {
    FLEXMOE_ATTRS(GateAttrs);
    return moeGate(in[0].as<float>(), in[1].as<float>(), in[0].shape[0],
                   in[0].shape[1], in[1].shape[1], attrs->top_k(),
                   out[0].as<float>(), out[1].as<int32_t>(), out[2].as<float>(),
                   nullptr, call.logitBias);
  }
  case fb::OpCode::GateGrad: {
    FLEXMOE_ATTRS(GateAttrs);
    return moeGateGrad(in[0].as<float>(), in[1].as<float>(), in[2].as<float>(),
                       in[3].as<int32_t>(), in[4].as<float>(),
                       in[5].as<float>(), in[0].shape[0], in[0].shape[1],
                       in[1].shape[1], attrs->top_k(), out[0].as<float>(),
                       out[1].as<float>());
  }
  case fb::OpCode::AuxLoss: {
    FLEXMOE_ATTRS(AuxLossAttrs);
    return moeAuxLoss(in[0].as<float>(), in[1].as<int32_t>(), in[0].shape[0],
                      in[0].shape[1], in[1].shape[1], attrs->coef(),
                      out[0].as<float>());
  }
  case fb::OpCode::AuxLossGrad: {
    FLEXMOE_ATTRS(AuxLossAttrs);
    return moeAuxLossGrad(in[0].as<float>(), in[1].as<int32_t>(),
                          *in[2].as<float>(), in[0].shape[0], in[0].shape[1],
                          in[1].shape[1], attrs->coef(), out[0].as<float>());
  }
  case fb::OpCode::Dispatch: {
    FLEXMOE_ATTRS(DispatchAttrs);
    return moeDispatch(in[0].as<float>(), in[1].as<int32_t>(), in[0].shape[0],
                       in[0].shape[1], attrs->num_experts(), in[1].shape[1],
                       attrs->capacity(), out[0].as<float>(),
                       out[1].as<int32_t>(), out[2].as<int32_t>(), nullptr);
  }
  case fb::OpCode::DispatchGrad:
    return moeDispatchGrad(in[0].as<float>(), in[1].as<int32_t>(),
                           in[0].shape[0], in[1].shape[0], in[0].shape[1],
                           in[1].shape[1], out[0].as<float>());
  case fb::OpCode::Experts:
  case fb::OpCode::ExpertsGrad: {
    FLEXMOE_ATTRS(ExpertsAttrs);
    MoeActivation activation = attrs->activation() == fb::Activation::Relu
                                   ? MoeActivation::Relu
                                   : MoeActivation::Gelu;
    const Operand &w1 = in[2];
    int64_t rows = in[0].shape[0], dim = in[0].shape[1];
    int64_t hidden = w1.shape[2], groups = w1.shape[0];
    if (ins->opcode() == fb::OpCode::Experts)
      return moeExperts(in[0].as<float>(), in[1].as<int32_t>(), w1.as<float>(),
                        in[3].as<float>(), in[4].as<float>(), in[5].as<float>(),
                        rows, dim, hidden, groups, attrs->capacity(),
                        activation, out[0].as<float>());
    return moeExpertsGrad(
        in[0].as<float>(), in[1].as<int32_t>(), w1.as<float>(),
        in[3].as<float>(), in[4].as<float>(), in[5].as<float>(),
        in[6].as<float>(), rows, dim, hidden, groups, attrs->capacity(),
        activation, out[0].as<float>(), out[1].as<float>(), out[2].as<float>(),
        out[3].as<float>(), out[4].as<float>());
  }
  case fb::OpCode::Combine:
    return moeCombine(in[0].as<float>(), in[1].as<int32_t>(), in[2].as<float>(),
                      in[0].shape[0], in[1].shape[0], in[0].shape[1],
                      in[1].shape[1], out[0].as<float>());
  case fb::OpCode::CombineGrad:
    return moeCombineGrad(in[0].as<float>(), in[1].as<int32_t>(),
                          in[2].as<float>(), in[3].as<float>(), in[0].shape[0],
                          in[1].shape[0], in[0].shape[1], in[1].shape[1],
                          out[0].as<float>(), out[1].as<float>());
  case fb::OpCode::AllToAllDispatch:
  case fb::OpCode::AllToAllCombine:
  case fb::OpCode::ReplicaGradSync:
  case fb::OpCode::AllReduceMean:
  case fb::OpCode::AllReduceSum:
    return Status::error("a collective is not a CPU kernel");
  }
  return Status::error("opcode unknown to the CPU backend");
}

#undef FLEXMOE_ATTRS

/// FLEXMOE_PROFILE=1: wall time per opcode, printed to stderr at exit as a
/// table sorted by total time. Off by default; when off the only cost is one
/// branch per kernel.
class KernelProfile {
public:
  static KernelProfile *get() {
    static KernelProfile *profile = [] {
      const char *env = std::getenv("FLEXMOE_PROFILE");
      return env && *env && std::strcmp(env, "0") != 0 ? new KernelProfile
                                                       : nullptr;
    }();
    return profile;
  }

  void add(fb::OpCode opcode, double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    Entry &entry = entries_[static_cast<size_t>(opcode)];
    entry.seconds += seconds;
    ++entry.calls;
  }

  ~KernelProfile() = default;

private:
  struct Entry {
    double seconds = 0;
    int64_t calls = 0;
  };
  KernelProfile() {
    std::atexit([] { get()->print(); });
  }

  void print() {
    std::vector<size_t> order;
    double total = 0;
    for (size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].calls) {
        order.push_back(i);
        total += entries_[i].seconds;
      }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return entries_[a].seconds > entries_[b].seconds;
    });
    std::fprintf(stderr, "FLEXMOE_PROFILE: CPU kernel time by opcode\n");
    std::fprintf(stderr, "%-22s %8s %12s %10s %6s\n", "opcode", "calls",
                 "total_ms", "per_call", "share");
    for (size_t i : order) {
      const Entry &e = entries_[i];
      std::fprintf(stderr, "%-22s %8lld %12.3f %10.4f %5.1f%%\n",
                   fb::EnumNameOpCode(static_cast<fb::OpCode>(i)),
                   static_cast<long long>(e.calls), e.seconds * 1e3,
                   e.seconds * 1e3 / static_cast<double>(e.calls),
                   total > 0 ? 100.0 * e.seconds / total : 0.0);
    }
    std::fprintf(stderr, "%-22s %8s %12.3f\n", "total", "", total * 1e3);
  }

  std::mutex mutex_;
  std::array<Entry, 256> entries_{};
};

} // namespace

Status flexmoe::cpu::runCpuKernel(const KernelCall &call) {
  const program::OpInfo *info =
      program::lookupOpInfo(call.instruction->opcode());
  if (!info)
    return Status::error("opcode unknown to the CPU backend");
  if (static_cast<int>(call.inputs.size()) < info->minInputs ||
      static_cast<int>(call.inputs.size()) > info->maxInputs)
    return errorf(info->irName, ": ", call.inputs.size(), " operands");
  KernelProfile *profile = KernelProfile::get();
  const auto start = profile ? std::chrono::steady_clock::now()
                             : std::chrono::steady_clock::time_point();
  Status status = run(call);
  if (profile)
    profile->add(
        call.instruction->opcode(),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count());
  if (!status.isOk())
    return std::move(status).withContext(std::string(info->irName));
  return status;
}

CpuDevice::CpuDevice() : numThreads_(configureCpuThreads()) {}

StatusOr<std::unique_ptr<device::Arena>>
CpuDevice::allocateArena(size_t bytes) {
  size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void *base = std::aligned_alloc(64, rounded);
  if (!base)
    return errorf("cannot allocate an arena of ", bytes, " bytes");
  std::memset(base, 0, rounded);
  return std::unique_ptr<device::Arena>(
      new CpuArena(static_cast<std::byte *>(base), bytes));
}

StatusOr<std::unique_ptr<device::Stream>> CpuDevice::createStream() {
  return std::unique_ptr<device::Stream>(new CpuStream());
}

StatusOr<double> CpuDevice::elapsedSeconds(device::Event &start,
                                           device::Event &end) {
  return std::chrono::duration<double>(static_cast<CpuEvent &>(end).recorded -
                                       static_cast<CpuEvent &>(start).recorded)
      .count();
}

StatusOr<std::unique_ptr<device::Event>> CpuDevice::createEvent() {
  return std::unique_ptr<device::Event>(new CpuEvent());
}

Status CpuDevice::copyToDevice(std::byte *dst, const void *src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  return Status::ok();
}

Status CpuDevice::copyToHost(void *dst, const std::byte *src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  return Status::ok();
}
