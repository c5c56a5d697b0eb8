//===- CpuDevice.h - the CPU backend of the device interface ----*- C++ -*-===//
//
// Host memory, one in-order stream that runs each kernel to completion
// (kernels parallelise internally with OpenMP and OpenBLAS), events that
// are always complete. Every compute opcode of the program maps onto one
// call of the CPU kernels in runtime/backends/cpu/kernels.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_CPUDEVICE_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_CPUDEVICE_H

#include "runtime/device/Device.h"

namespace flexmoe::cpu {

class CpuDevice final : public device::Device {
public:
  /// Sets the kernels' thread policy (see configureCpuThreads).
  CpuDevice();
  /// The threads the kernels use.
  int numThreads() const { return numThreads_; }

  std::string name() const override { return "cpu"; }
  bool hostAccessible() const override { return true; }
  StatusOr<std::unique_ptr<device::Arena>> allocateArena(size_t bytes) override;
  StatusOr<std::unique_ptr<device::Stream>> createStream() override;
  StatusOr<std::unique_ptr<device::Event>> createEvent() override;
  StatusOr<std::unique_ptr<device::Event>> createTimingEvent() override {
    return createEvent();
  }
  StatusOr<double> elapsedSeconds(device::Event &start,
                                  device::Event &end) override;
  Status copyToDevice(std::byte *dst, const void *src, size_t bytes) override;
  Status copyToHost(void *dst, const std::byte *src, size_t bytes) override;
  Status synchronize() override { return Status::ok(); }

private:
  int numThreads_;
};

/// Runs one compute instruction on host memory; collectives are not kernels
/// (the executor runs them through a Communicator) and are rejected.
Status runCpuKernel(const device::KernelCall &call);

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_CPUDEVICE_H
