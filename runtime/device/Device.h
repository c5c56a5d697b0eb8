//===- Device.h - the device interface the executor runs on -----*- C++ -*-===//
//
// What the executor needs from a device, and nothing more: one arena of
// device memory (the compiler's buffer plan lays every buffer out inside it),
// streams that run kernels in order, events to order streams against each
// other, and host <-> device copies. A backend (CPU now, CUDA later) plugs in
// by implementing Device and Stream; the executor never touches a pointer
// except through them: row reorders, gradient sums and norms are stream
// operations too, so the executor runs unchanged on memory the host cannot
// read (a GPU).
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_DEVICE_DEVICE_H
#define FLEXMOE_RUNTIME_DEVICE_DEVICE_H

#include "runtime/schema/program_generated.h"
#include "runtime/support/Status.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace flexmoe::device {

/// The arithmetic of GEMM-like kernels (linear, matmul, the experts, the
/// gate's logits). Every buffer stays fp32 (parameters are the fp32 master
/// weights, AdamW updates them in fp32); BF16 rounds the operands of those
/// products to bfloat16 and accumulates in fp32 (tensor cores on a GPU).
enum class MathPrecision { F32, BF16 };

/// "fp32" / "bf16".
const char *precisionName(MathPrecision precision);

/// One byte range copy of Stream::copySegments (device memory).
struct CopySegment {
  const std::byte *src = nullptr;
  std::byte *dst = nullptr;
  size_t bytes = 0;
};

/// `count` floats of device memory (Stream::sumOfSquares).
struct FloatRange {
  const float *data = nullptr;
  int64_t count = 0;
};

/// One buffer operand of a kernel: device memory, its static shape and
/// element type (from the program's buffer table).
struct Operand {
  std::byte *data = nullptr;
  std::span<const int64_t> shape;
  fb::ElementType elementType = fb::ElementType::F32;
  /// The buffer's id and name, for messages.
  uint32_t id = 0;
  std::string_view name;

  int64_t numElements() const;
  size_t numBytes() const { return static_cast<size_t>(numElements()) * 4; }
  template <typename T> T *as() const { return reinterpret_cast<T *>(data); }
};

/// One kernel launch: a compute instruction of the program with its
/// operands bound to device memory.
struct KernelCall {
  const fb::Instruction *instruction = nullptr;
  std::vector<Operand> inputs;
  std::vector<Operand> outputs;
  /// 1-based number of the training step this launch belongs to (dropout
  /// masks and AdamW bias correction depend on it).
  int64_t step = 1;
  /// Which shard of the step's global batch this launch works on (rank +
  /// micro-batch · world size): mixed into dropout masks, so that no two
  /// shards draw the same masks.
  int64_t shard = 0;
  /// False in evaluation: nn.dropout passes its input through.
  bool training = true;
  /// nn.adamw: the gradient is multiplied by gradScale before use (gradient
  /// clipping and loss-scale removal), and lr > 0 replaces the compiled
  /// learning rate (a schedule's value for this step).
  float gradScale = 1.0f;
  float lr = 0.0f;
  /// nn.fill: its value is multiplied by fillScale (the backward pass's
  /// seed carries the loss scale).
  float fillScale = 1.0f;
  /// moe.gate: added to the logits before the softmax and top-k, one value
  /// per expert (Executor::setRoutingBias, training runs only); empty for
  /// none.
  std::span<const float> logitBias;
};

/// The arena: one allocation holding every buffer of the program.
class Arena {
public:
  virtual ~Arena() = default;
  virtual std::byte *base() = 0;
  virtual size_t size() const = 0;
};

/// A point in a stream's work that other streams (or the host) can wait on.
class Event {
public:
  virtual ~Event() = default;
};

/// An in-order queue of kernels. Errors of asynchronous work surface at the
/// latest at synchronize(); the CPU stream runs each launch to completion.
class Stream {
public:
  virtual ~Stream() = default;
  /// Runs `call` after everything enqueued before it.
  virtual Status launch(const KernelCall &call) = 0;
  /// Records `event` after the work enqueued so far.
  virtual Status record(Event &event) = 0;
  /// Work enqueued after this call starts after `event` completed.
  virtual Status wait(Event &event) = 0;
  /// Blocks the host until everything enqueued has run.
  virtual Status synchronize() = 0;

  // Data movement and reductions the executor needs between kernels (the
  // dispatch reorder, gradient accumulation, the global gradient norm), in
  // stream order like launches.

  /// Copies every segment, in order; no segment's destination may overlap
  /// another segment's source or destination.
  virtual Status copySegments(std::span<const CopySegment> segments) = 0;
  /// Copies host memory to device memory in stream order; `src` may be
  /// reused as soon as the call returns (the bytes are taken or staged: on
  /// CUDA, src must be pageable memory, as a std::vector's is).
  virtual Status copyFromHost(std::byte *dst, const void *src,
                              size_t bytes) = 0;
  /// Sets `bytes` bytes at `dst` to zero.
  virtual Status zero(std::byte *dst, size_t bytes) = 0;
  /// dst[i] = (a[i] + b[i]) * scale in float, for i < count; dst may be a
  /// or b.
  virtual Status addScaled(float *dst, const float *a, const float *b,
                           int64_t count, float scale) = 0;
  /// sums[i] = the sum of the squares of ranges[i], in double, into host
  /// memory: waits for the work enqueued before it. Not finite when a
  /// value is not.
  virtual Status sumOfSquares(std::span<const FloatRange> ranges,
                              std::span<double> sums) = 0;
};

class Device {
public:
  virtual ~Device() = default;
  /// "cpu", "cuda:0", ...
  virtual std::string name() const = 0;
  /// True when the host can read and write device memory directly (the
  /// executor's checks and observers may then read it in place).
  virtual bool hostAccessible() const = 0;
  /// The arithmetic of its GEMM-like kernels.
  virtual MathPrecision precision() const { return MathPrecision::F32; }
  /// One zero-filled arena of `bytes` bytes, 64-byte aligned.
  virtual StatusOr<std::unique_ptr<Arena>> allocateArena(size_t bytes) = 0;
  virtual StatusOr<std::unique_ptr<Stream>> createStream() = 0;
  virtual StatusOr<std::unique_ptr<Event>> createEvent() = 0;
  /// An event that also notes when the stream reached it (elapsedSeconds).
  virtual StatusOr<std::unique_ptr<Event>> createTimingEvent() = 0;
  /// Seconds between two recorded timing events of one stream; waits for
  /// `end` to complete.
  virtual StatusOr<double> elapsedSeconds(Event &start, Event &end) = 0;
  /// Synchronous copies between host memory and device memory.
  virtual Status copyToDevice(std::byte *dst, const void *src,
                              size_t bytes) = 0;
  virtual Status copyToHost(void *dst, const std::byte *src, size_t bytes) = 0;
  /// Blocks until every stream of the device is idle.
  virtual Status synchronize() = 0;
};

} // namespace flexmoe::device

#endif // FLEXMOE_RUNTIME_DEVICE_DEVICE_H
