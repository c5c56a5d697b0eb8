//===- Scratch.h - temporaries kept between kernel calls ---------*- C++
//-*-===//
//
// A kernel's large temporaries (the experts' hidden activations: tens of MB on
// the small preset) allocated afresh on every call are new mmaps, so every
// call pays a page fault and the OS's zeroing per 4 KiB page, plus
// std::vector's own zeroing: a quarter of a small-preset step before this.
// A slot keeps its memory for the calling thread's next call instead.
//
//===----------------------------------------------------------------------===//
#ifndef FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_SCRATCH_H
#define FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_SCRATCH_H

#include <array>
#include <cstddef>
#include <memory>

namespace flexmoe::cpu {

/// Kernels that use scratch name their slots here, so that no two
/// temporaries alive at the same time share one.
enum class ScratchSlot { ExpertsHidden, ExpertsPreact, ExpertsGradAct, Count };

/// At least `count` uninitialised elements of T owned by the calling thread,
/// valid until its next call for the same slot; grows, never shrinks.
template <typename T> T *scratch(ScratchSlot slot, size_t count) {
  struct Buffer {
    std::unique_ptr<std::max_align_t[]> data;
    size_t bytes = 0;
  };
  thread_local std::array<Buffer, static_cast<size_t>(ScratchSlot::Count)>
      buffers;
  Buffer &buffer = buffers[static_cast<size_t>(slot)];
  const size_t bytes = count * sizeof(T);
  if (buffer.bytes < bytes) {
    const size_t units =
        (bytes + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t);
    // new[] of a trivial type leaves the memory uninitialised.
    buffer.data.reset(new std::max_align_t[units]);
    buffer.bytes = units * sizeof(std::max_align_t);
  }
  return reinterpret_cast<T *>(buffer.data.get());
}

} // namespace flexmoe::cpu

#endif // FLEXMOE_RUNTIME_BACKENDS_CPU_KERNELS_SCRATCH_H
