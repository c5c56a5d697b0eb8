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
  CudaStream(int device, bool deterministic) : device_(device) {
    context_.deterministic = deterministic;
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
    if (Status s = cudaStatus(cudaSetDevice(device_), "cudaSetDevice");
        !s.isOk())
      return s;
    Status status = dispatch(call);
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
      return std::move(status).withContext(opName(call));
    return status;
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

private:
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

StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::create(int index,
                                                         bool deterministic) {
  StatusOr<int> count = cudaDeviceCount();
  if (!count)
    return count.status();
  if (*count == 0)
    return Status::error("no CUDA device found");
  if (index < 0 || index >= *count)
    return errorf("CUDA device ", index, " does not exist (", *count, " device",
                  *count == 1 ? "" : "s", " found)");
  std::unique_ptr<CudaDevice> device(new CudaDevice(index, deterministic));
  if (Status s = device->activate(); !s.isOk())
    return s;
  return device;
}

Status CudaDevice::activate() const {
  return cudaStatus(cudaSetDevice(index_), "cudaSetDevice");
}

std::string CudaDevice::name() const {
  return "cuda:" + std::to_string(index_);
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
      new CudaArena(index_, static_cast<std::byte *>(base), bytes));
}

StatusOr<std::unique_ptr<device::Stream>> CudaDevice::createStream() {
  if (Status s = activate(); !s.isOk())
    return s;
  auto stream = std::make_unique<CudaStream>(index_, deterministic_);
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
