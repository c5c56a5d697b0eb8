//===- GuardedDevice.h - a CPU device the host may not touch ----*- C++ -*-===//
//
// The CPU backend behind a wall: hostAccessible() is false and every arena
// is mprotect'ed PROT_NONE except inside the device's own operations
// (launches, stream operations, copies). An executor that reads or writes
// device memory directly, as it must not on a GPU, dies with SIGSEGV; one
// that goes through the Device and Stream interfaces gets the CPU's exact
// results. This is how the executor's GPU paths are tested without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_TEST_UNIT_EXECUTOR_GUARDEDDEVICE_H
#define FLEXMOE_TEST_UNIT_EXECUTOR_GUARDEDDEVICE_H

#include "runtime/backends/cpu/CpuDevice.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

namespace flexmoe::testing {

class GuardedDevice final : public device::Device {
public:
  std::string name() const override { return "guarded-cpu"; }
  bool hostAccessible() const override { return false; }

  StatusOr<std::unique_ptr<device::Arena>>
  allocateArena(size_t bytes) override {
    size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    size_t size = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
    void *base = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                      0); // zero-filled, like every arena
    if (base == MAP_FAILED)
      return errorf("cannot map an arena of ", bytes, " bytes");
    auto arena = std::make_unique<GuardedArena>(
        *this, static_cast<std::byte *>(base), bytes, size);
    arenas_.insert({arena->base(), size});
    return std::unique_ptr<device::Arena>(std::move(arena));
  }
  StatusOr<std::unique_ptr<device::Stream>> createStream() override {
    StatusOr<std::unique_ptr<device::Stream>> inner = cpu_.createStream();
    if (!inner)
      return inner.status();
    return std::unique_ptr<device::Stream>(
        new GuardedStream(*this, std::move(*inner)));
  }
  StatusOr<std::unique_ptr<device::Event>> createEvent() override {
    return cpu_.createEvent();
  }
  StatusOr<std::unique_ptr<device::Event>> createTimingEvent() override {
    return cpu_.createTimingEvent();
  }
  StatusOr<double> elapsedSeconds(device::Event &start,
                                  device::Event &end) override {
    return cpu_.elapsedSeconds(start, end);
  }
  Status copyToDevice(std::byte *dst, const void *src, size_t bytes) override {
    return inside([&] { return cpu_.copyToDevice(dst, src, bytes); });
  }
  Status copyToHost(void *dst, const std::byte *src, size_t bytes) override {
    return inside([&] { return cpu_.copyToHost(dst, src, bytes); });
  }
  Status synchronize() override { return Status::ok(); }

  /// Runs `f` with every arena readable and writable.
  template <typename F> Status inside(F &&f) {
    protect(PROT_READ | PROT_WRITE);
    Status status = f();
    protect(PROT_NONE);
    return status;
  }

private:
  class GuardedArena final : public device::Arena {
  public:
    GuardedArena(GuardedDevice &device, std::byte *base, size_t bytes,
                 size_t mapped)
        : device_(device), base_(base), bytes_(bytes), mapped_(mapped) {}
    ~GuardedArena() override {
      device_.arenas_.erase({base_, mapped_});
      munmap(base_, mapped_);
    }
    std::byte *base() override { return base_; }
    size_t size() const override { return bytes_; }

  private:
    GuardedDevice &device_;
    std::byte *base_;
    size_t bytes_, mapped_;
  };

  class GuardedStream final : public device::Stream {
  public:
    GuardedStream(GuardedDevice &device, std::unique_ptr<device::Stream> inner)
        : device_(device), inner_(std::move(inner)) {}
    Status launch(const device::KernelCall &call) override {
      return device_.inside([&] { return inner_->launch(call); });
    }
    Status record(device::Event &event) override {
      return inner_->record(event);
    }
    Status wait(device::Event &event) override { return inner_->wait(event); }
    Status synchronize() override { return inner_->synchronize(); }
    Status
    copySegments(std::span<const device::CopySegment> segments) override {
      return device_.inside([&] { return inner_->copySegments(segments); });
    }
    Status copyFromHost(std::byte *dst, const void *src,
                        size_t bytes) override {
      return device_.inside(
          [&] { return inner_->copyFromHost(dst, src, bytes); });
    }
    Status zero(std::byte *dst, size_t bytes) override {
      return device_.inside([&] { return inner_->zero(dst, bytes); });
    }
    Status addScaled(float *dst, const float *a, const float *b, int64_t count,
                     float scale) override {
      return device_.inside(
          [&] { return inner_->addScaled(dst, a, b, count, scale); });
    }
    Status sumOfSquares(std::span<const device::FloatRange> ranges,
                        std::span<double> sums) override {
      return device_.inside([&] { return inner_->sumOfSquares(ranges, sums); });
    }

  private:
    GuardedDevice &device_;
    std::unique_ptr<device::Stream> inner_;
  };

  void protect(int protection) {
    for (const auto &[base, size] : arenas_)
      mprotect(base, size, protection);
  }

  cpu::CpuDevice cpu_;
  std::set<std::pair<std::byte *, size_t>> arenas_;
};

} // namespace flexmoe::testing

#endif // FLEXMOE_TEST_UNIT_EXECUTOR_GUARDEDDEVICE_H
