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

class CudaDevice final : public device::Device {
public:
  /// The device `index`, or an error naming why it cannot be used (no CUDA
  /// device, index out of range, driver error).
  static StatusOr<std::unique_ptr<CudaDevice>>
  create(int index = 0, bool deterministic = false);

  int index() const { return index_; }
  bool deterministic() const { return deterministic_; }

  std::string name() const override;
  bool hostAccessible() const override { return false; }
  StatusOr<std::unique_ptr<device::Arena>> allocateArena(size_t bytes) override;
  StatusOr<std::unique_ptr<device::Stream>> createStream() override;
  StatusOr<std::unique_ptr<device::Event>> createEvent() override;
  Status copyToDevice(std::byte *dst, const void *src, size_t bytes) override;
  Status copyToHost(void *dst, const std::byte *src, size_t bytes) override;
  Status synchronize() override;

private:
  CudaDevice(int index, bool deterministic)
      : index_(index), deterministic_(deterministic) {}
  /// Makes this device current on the calling thread.
  Status activate() const;

  int index_;
  bool deterministic_;
};

/// The number of CUDA devices, or an error when the driver cannot say
/// (no driver, no device).
StatusOr<int> cudaDeviceCount();

} // namespace flexmoe::cuda

#endif // FLEXMOE_RUNTIME_BACKENDS_CUDA_CUDADEVICE_H
