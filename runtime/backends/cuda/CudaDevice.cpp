//===- CudaDevice.cpp - the CUDA backend ----------------------------------===//

#include "runtime/backends/cuda/CudaDevice.h"

#include "runtime/backends/cuda/CudaContext.h"
#include "runtime/program/OpInfo.h"

#include <string>

using namespace flexmoe;
using namespace flexmoe::cuda;
using device::KernelCall;

namespace {

/// cuBLASLt's workspace per stream (NVIDIA recommends 32 MiB on Hopper).
constexpr size_t kWorkspaceBytes = 32u << 20;

class CudaArena final : public device::Arena {
public:
  CudaArena(int device, std::byte *base, size_t size)
      : device_(device), base_(base), size_(size) {}
  ~CudaArena() override {
    cudaSetDevice(device_);
    cudaFree(base_);
  }
  std::byte *base() override { return base_; }
  size_t size() const override { return size_; }

private:
  int device_;
  std::byte *base_;
  size_t size_;
};

class CudaEvent final : public device::Event {
public:
  explicit CudaEvent(cudaEvent_t event) : event(event) {}
  ~CudaEvent() override { cudaEventDestroy(event); }
  cudaEvent_t event;
};

const char *opName(const KernelCall &call) {
  const program::OpInfo *info =
      program::lookupOpInfo(call.instruction->opcode());
  return info ? info->irName.data()
              : fb::EnumNameOpCode(call.instruction->opcode());
}

class CudaStream final : public device::Stream {
public:
  CudaStream(int device, bool deterministic, device::MathPrecision precision)
      : device_(device) {
    context_.deterministic = deterministic;
    context_.precision = precision;
  }

  Status init() {
    if (Status s = cudaStatus(
            cudaStreamCreateWithFlags(&context_.stream, cudaStreamNonBlocking),
            "cudaStreamCreateWithFlags");
        !s.isOk())
      return s;
    if (Status s = cublasStatus(cublasLtCreate(&context_.lt), "cublasLtCreate");
        !s.isOk())
      return s;
    if (Status s = cudaStatus(cudaMalloc(&context_.workspace, kWorkspaceBytes),
                              "cudaMalloc (cuBLASLt workspace)");
        !s.isOk())
      return s;
    context_.workspaceBytes = kWorkspaceBytes;
    // Scratch is freed in stream order after the launch that asked for it,
    // so a launch never waits on the host for its temporaries.
    context_.scratch = [this](size_t bytes) -> StatusOr<void *> {
      void *pointer = nullptr;
      if (Status s =
              cudaStatus(cudaMallocAsync(&pointer, bytes, context_.stream),
                         "cudaMallocAsync (scratch)");
          !s.isOk())
        return s;
      pendingScratch_.push_back(pointer);
      return pointer;
    };
    return Status::ok();
  }

  ~CudaStream() override {
    cudaSetDevice(device_);
    if (context_.stream)
      cudaStreamSynchronize(context_.stream);
    if (context_.workspace)
      cudaFree(context_.workspace);
    if (context_.lt)
      cublasLtDestroy(context_.lt);
    if (context_.stream)
      cudaStreamDestroy(context_.stream);
  }

  Status launch(const KernelCall &call) override {
    return withScratch([&] { return dispatch(call); }, opName(call));
  }

  Status record(device::Event &event) override {
    return cudaStatus(
        cudaEventRecord(static_cast<CudaEvent &>(event).event, context_.stream),
        "cudaEventRecord");
  }
  Status wait(device::Event &event) override {
    return cudaStatus(cudaStreamWaitEvent(context_.stream,
                                          static_cast<CudaEvent &>(event).event,
                                          0),
                      "cudaStreamWaitEvent");
  }
  Status synchronize() override {
    return cudaStatus(cudaStreamSynchronize(context_.stream),
                      "cudaStreamSynchronize");
  }

  Status copySegments(std::span<const device::CopySegment> segments) override {
    return withScratch([&] { return launchCopySegments(segments, context_); },
                       "copySegments");
  }
  Status copyFromHost(std::byte *dst, const void *src, size_t bytes) override {
    if (bytes == 0)
      return Status::ok();
    FLEXMOE_RETURN_IF_ERROR(
        cudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    // From pageable memory the driver stages the bytes before returning, so
    // the caller may reuse src at once.
    return cudaStatus(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice,
                                      context_.stream),
                      "cudaMemcpyAsync (host to device)");
  }
  Status zero(std::byte *dst, size_t bytes) override {
    if (bytes == 0)
      return Status::ok();
    FLEXMOE_RETURN_IF_ERROR(
        cudaStatus(cudaSetDevice(device_), "cudaSetDevice"));
    return cudaStatus(cudaMemsetAsync(dst, 0, bytes, context_.stream),
                      "cudaMemsetAsync");
  }
  Status addScaled(float *dst, const float *a, const float *b, int64_t count,
                   float scale) override {
    return withScratch(
        [&] { return launchAddScaled(dst, a, b, count, scale, context_); },
        "addScaled");
  }
  Status sumOfSquares(std::span<const device::FloatRange> ranges,
                      std::span<double> sums) override {
    if (sums.size() != ranges.size())
      return errorf("sumOfSquares: ", sums.size(), " sums for ", ranges.size(),
                    " ranges");
    if (ranges.empty())
      return Status::ok();
    double *deviceSums = nullptr;
    FLEXMOE_RETURN_IF_ERROR(withScratch(
        [&]() -> Status {
          StatusOr<void *> memory = context_.scratch(sums.size_bytes());
          if (!memory)
            return memory.status();
          deviceSums = static_cast<double *>(*memory);
          FLEXMOE_RETURN_IF_ERROR(
              launchSumOfSquares(ranges, deviceSums, context_));
          return cudaStatus(
              cudaMemcpyAsync(sums.data(), deviceSums, sums.size_bytes(),
                              cudaMemcpyDeviceToHost, context_.stream),
              "cudaMemcpyAsync (sums to host)");
        },
        "sumOfSquares"));
    return synchronize();
  }

private:
  /// Runs `enqueue` with this stream's device current, then frees the
  /// scratch it took in stream order; errors name `what`.
  template <typename F> Status withScratch(F &&enqueue, const char *what) {
    if (Status s = cudaStatus(cudaSetDevice(device_), "cudaSetDevice");
        !s.isOk())
      return s;
    Status status = enqueue();
    for (void *pointer : pendingScratch_) {
      Status freed = cudaStatus(cudaFreeAsync(pointer, context_.stream),
                                "cudaFreeAsync (scratch)");
      if (status.isOk() && !freed.isOk())
        status = std::move(freed);
    }
    pendingScratch_.clear();
    if (status.isOk())
      status = cudaStatus(cudaGetLastError(), "kernel launch");
    if (!status.isOk())
      return std::move(status).withContext(what);
    return status;
  }

  Status dispatch(const KernelCall &call) {
    fb::OpCode opcode = call.instruction->opcode();
    const program::OpInfo *info = program::lookupOpInfo(opcode);
    if (!info)
      return Status::error("opcode unknown to the CUDA backend");
    if (static_cast<int>(call.inputs.size()) < info->minInputs ||
        static_cast<int>(call.inputs.size()) > info->maxInputs)
      return errorf(call.inputs.size(), " operands");
    switch (opcode) {
    case fb::OpCode::AllToAllDispatch:
    case fb::OpCode::AllToAllCombine:
    case fb::OpCode::ReplicaGradSync:
    case fb::OpCode::AllReduceMean:
    case fb::OpCode::AllReduceSum:
      return Status::error(
          "a collective is not a CUDA kernel (the executor runs it)");
    default:
      break;
    }
    if (isMoeOpcode(opcode))
      return launchMoe(call, context_);
    return launchDense(call, context_);
  }

  int device_;
  LaunchContext context_;
  std::vector<void *> pendingScratch_;
};

} // namespace

StatusOr<int> flexmoe::cuda::cudaDeviceCount() {
  int count = 0;
  cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError(); // clear the sticky-free error for later calls
    return cudaStatus(error, "no usable CUDA device (cudaGetDeviceCount)");
  }
  return count;
}

StatusOr<std::unique_ptr<CudaDevice>>
CudaDevice::create(CudaDeviceOptions options) {
  int index = options.index;
  StatusOr<int> count = cudaDeviceCount();
  if (!count)
    return count.status();
  if (*count == 0)
    return Status::error("no CUDA device found");
  if (index < 0 || index >= *count)
    return errorf("CUDA device ", index, " does not exist (", *count, " device",
                  *count == 1 ? "" : "s", " found)");
  std::unique_ptr<CudaDevice> device(new CudaDevice(options));
  if (Status s = device->activate(); !s.isOk())
    return s;
  return device;
}

Status CudaDevice::activate() const {
  return cudaStatus(cudaSetDevice(options_.index), "cudaSetDevice");
}

std::string CudaDevice::name() const {
  return "cuda:" + std::to_string(options_.index);
}

StatusOr<std::unique_ptr<device::Arena>>
CudaDevice::allocateArena(size_t bytes) {
  if (Status s = activate(); !s.isOk())
    return s;
  // cudaMalloc aligns to at least 256 bytes; round the size up so that the
  // zero fill covers whole vectors.
  size_t rounded = (std::max<size_t>(bytes, 1) + 255) / 256 * 256;
  void *base = nullptr;
  if (cudaError_t error = cudaMalloc(&base, rounded); error != cudaSuccess) {
    cudaGetLastError();
    return errorf("cannot allocate an arena of ", bytes, " bytes on ", name(),
                  ": ", cudaGetErrorString(error));
  }
  if (Status s = cudaStatus(cudaMemset(base, 0, rounded), "cudaMemset (arena)");
      !s.isOk()) {
    cudaFree(base);
    return s;
  }
  return std::unique_ptr<device::Arena>(
      new CudaArena(options_.index, static_cast<std::byte *>(base), bytes));
}

StatusOr<std::unique_ptr<device::Stream>> CudaDevice::createStream() {
  if (Status s = activate(); !s.isOk())
    return s;
  auto stream = std::make_unique<CudaStream>(
      options_.index, options_.deterministic, options_.precision);
  if (Status s = stream->init(); !s.isOk())
    return std::move(s).withContext("creating a CUDA stream");
  return std::unique_ptr<device::Stream>(std::move(stream));
}

StatusOr<std::unique_ptr<device::Event>> CudaDevice::createEvent() {
  if (Status s = activate(); !s.isOk())
    return s;
  cudaEvent_t event = nullptr;
  if (Status s =
          cudaStatus(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                     "cudaEventCreateWithFlags");
      !s.isOk())
    return s;
  return std::unique_ptr<device::Event>(new CudaEvent(event));
}

StatusOr<std::unique_ptr<device::Event>> CudaDevice::createTimingEvent() {
  if (Status s = activate(); !s.isOk())
    return s;
  cudaEvent_t event = nullptr;
  if (Status s = cudaStatus(cudaEventCreateWithFlags(&event, cudaEventDefault),
                            "cudaEventCreateWithFlags (timing)");
      !s.isOk())
    return s;
  return std::unique_ptr<device::Event>(new CudaEvent(event));
}

StatusOr<double> CudaDevice::elapsedSeconds(device::Event &start,
                                            device::Event &end) {
  cudaEvent_t last = static_cast<CudaEvent &>(end).event;
  FLEXMOE_RETURN_IF_ERROR(
      cudaStatus(cudaEventSynchronize(last), "cudaEventSynchronize"));
  float ms = 0;
  FLEXMOE_RETURN_IF_ERROR(cudaStatus(
      cudaEventElapsedTime(&ms, static_cast<CudaEvent &>(start).event, last),
      "cudaEventElapsedTime"));
  return ms * 1e-3;
}

Status CudaDevice::copyToDevice(std::byte *dst, const void *src, size_t bytes) {
  // cudaMemcpy does not order against non-blocking streams: finish their
  // work first so that the copy is synchronous with respect to all of it.
  if (Status s = synchronize(); !s.isOk())
    return s;
  return cudaStatus(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice),
                    "cudaMemcpy (host to device)");
}

Status CudaDevice::copyToHost(void *dst, const std::byte *src, size_t bytes) {
  if (Status s = synchronize(); !s.isOk())
    return s;
  return cudaStatus(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost),
                    "cudaMemcpy (device to host)");
}

Status CudaDevice::synchronize() {
  if (Status s = activate(); !s.isOk())
    return s;
  return cudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}
