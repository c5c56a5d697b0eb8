//===- CudaDevice.h - the CUDA backend of the device interface --*- C++ -*-===//
//
// One GPU: the arena is one cudaMalloc, each stream is a non-blocking CUDA
// stream with its own LaunchContext (cuBLASLt handle, workspace, stream-ordered
// scratch), events are CUDA events. Compute instructions go to the dense or
// moe launcher (CudaContext.h); collectives are the executor's business.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDADEVICE_H
#define FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDADEVICE_H

#include "runtime/device/Device.h"

#include <memory>

namespace flexmoe::cuda {

struct CudaDeviceOptions {
  int index = 0;
  /// No float atomics whose order changes results.
  bool deterministic = false;
  /// BF16: GEMM-like kernels round their operands to bfloat16 and use
  /// tensor cores with fp32 accumulation; buffers stay fp32.
  device::MathPrecision precision = device::MathPrecision::F32;
};

class CudaDevice final : public device::Device {
public:
  /// The device `options.index`, or an error naming why it cannot be used
  /// (no CUDA device, index out of range, driver error).
  static StatusOr<std::unique_ptr<CudaDevice>>
  create(CudaDeviceOptions options);
  static StatusOr<std::unique_ptr<CudaDevice>>
  create(int index = 0, bool deterministic = false) {
    return create(CudaDeviceOptions{index, deterministic});
  }

  int index() const { return options_.index; }
  bool deterministic() const { return options_.deterministic; }

  std::string name() const override;
  bool hostAccessible() const override { return false; }
  device::MathPrecision precision() const override {
    return options_.precision;
  }
  StatusOr<std::unique_ptr<device::Arena>> allocateArena(size_t bytes) override;
  StatusOr<std::unique_ptr<device::Stream>> createStream() override;
  StatusOr<std::unique_ptr<device::Event>> createEvent() override;
  StatusOr<std::unique_ptr<device::Event>> createTimingEvent() override;
  StatusOr<double> elapsedSeconds(device::Event &start,
                                  device::Event &end) override;
  Status copyToDevice(std::byte *dst, const void *src, size_t bytes) override;
  Status copyToHost(void *dst, const std::byte *src, size_t bytes) override;
  Status synchronize() override;

private:
  explicit CudaDevice(CudaDeviceOptions options) : options_(options) {}
  /// Makes this device current on the calling thread.
  Status activate() const;

  CudaDeviceOptions options_;
};

/// The number of CUDA devices, or an error when the driver cannot say
/// (no driver, no device).
StatusOr<int> cudaDeviceCount();

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDADEVICE_H
