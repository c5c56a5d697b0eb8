//===- ScratchTest.cpp - per-thread scratch kept between kernel calls -----===//

#include "runtime/backends/cpu/kernels/Scratch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

using namespace flexmoe::cpu;

namespace {

TEST(Scratch, SlotKeepsItsMemoryAndGrowsOnDemand) {
  float *a = scratch<float>(ScratchSlot::ExpertsHidden, 1000);
  a[999] = 3.5f;
  // A smaller or equal request reuses the buffer, contents intact.
  EXPECT_EQ(scratch<float>(ScratchSlot::ExpertsHidden, 10), a);
  EXPECT_EQ(a[999], 3.5f);
  // A larger one gets room for all of it, suitably aligned.
  double *b = scratch<double>(ScratchSlot::ExpertsHidden, 1 << 20);
  b[(1 << 20) - 1] = 1.0;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % alignof(double), 0u);
}

TEST(Scratch, SlotsAndThreadsDoNotShare) {
  float *hidden = scratch<float>(ScratchSlot::ExpertsHidden, 64);
  float *preact = scratch<float>(ScratchSlot::ExpertsPreact, 64);
  EXPECT_NE(hidden, preact);
  float *other = nullptr;
  std::thread([&] {
    other = scratch<float>(ScratchSlot::ExpertsHidden, 64);
  }).join();
  EXPECT_NE(other, hidden);
}

} // namespace
